"""mocksync.model"""
