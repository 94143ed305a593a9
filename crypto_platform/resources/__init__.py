"""Dagster resources: the Parquet lake, the DuckDB warehouse views, trade sources, MLflow."""
