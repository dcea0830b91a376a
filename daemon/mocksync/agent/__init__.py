"""mocksync.agent"""
