"""mocksync.store"""
