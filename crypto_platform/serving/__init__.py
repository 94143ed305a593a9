"""Prediction serving: a read-only HTTP API over the gold tables (`./run serve`).

`settings` (what the service reads and its limits), `queries` (pure DuckDB reads of the lake's Parquet
files), `cache` (in-process answers invalidated by the files they were read from), `store` (queries
through the cache), `app` (the FastAPI application factory) and `__main__` (the uvicorn entry point).
"""
