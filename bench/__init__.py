"""Engine benchmarks: they print numbers and assert nothing about time (see bench/README.md)."""
