"""Dagster assets: thin wiring of the lake layers over the pure transforms."""
