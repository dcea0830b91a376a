"""mocksync.sync"""
