"""mocksync benchmarks (`make bench`). Every number is measured in the run that prints it."""
