"""mocksync.changes"""
