"""Test set-up: the test instrument universe, the real market data in ../shared, temp resources."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
PROJECT_DIR = TESTS_DIR.parent
SHARED_DATA = PROJECT_DIR.parent / "shared" / "data"

# Partitions are fixed when the code location loads, so the test universe is chosen before any
# crypto_platform module is imported (the same mechanism a user has: CRYPTO_INSTRUMENTS).
os.environ["CRYPTO_INSTRUMENTS"] = str(TESTS_DIR / "instruments_test.yaml")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

if not SHARED_DATA.is_dir():  # the recorded data is part of the test contract: fail, never skip
    raise RuntimeError(f"recorded market data not found at {SHARED_DATA} (../shared/data)")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Folder of the real recorded market data (../shared/data)."""
    return SHARED_DATA
