"""Where the tests find the project and the real recorded market data (no crypto_platform import here:
conftest reads these before it chooses the test universe)."""

from __future__ import annotations

from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent
PROJECT_DIR = TESTS_DIR.parent
SHARED_DATA = PROJECT_DIR.parent / "shared" / "data"
TEST_INSTRUMENTS = TESTS_DIR / "instruments_test.yaml"
FTX_FILE = SHARED_DATA / "candles" / "ftx_btcperp_1m_2022-01.csv"
