"""Data-quality suites (Great Expectations, run in-process) for the lake tables."""
