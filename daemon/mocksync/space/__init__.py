"""mocksync.space"""
