"""Drift, prediction-skill and alerting code used by the monitoring checks and sensors (no Dagster)."""
