"""mocksync.relay"""
