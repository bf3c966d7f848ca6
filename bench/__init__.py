"""Benchmarks that run against the real local stack of the tests (see tests/stack)."""
