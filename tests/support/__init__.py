"""Rigs shared by tests and the benchmarks that drive the real process."""
