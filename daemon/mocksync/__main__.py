"""`python -m mocksync ...`: the same command as the `mocksync` console script, for when only
an interpreter is at hand (a virtualenv not on PATH, tests that start the daemon)."""

from .cli import main

if __name__ == "__main__":
    main(prog_name="mocksync")
