"""Helpers for tests, benchmarks and the demo: tiny datasets in official layouts."""
