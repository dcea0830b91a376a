"""Tools for building test and benchmark inputs, not used by the daemon at run time.

They live in the package (not under tests/) because tests, benchmarks and the example
scripts all need the same realistic environments and the same format checks, and a single
importable copy keeps them from drifting apart.
"""
