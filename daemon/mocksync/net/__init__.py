"""mocksync.net"""
