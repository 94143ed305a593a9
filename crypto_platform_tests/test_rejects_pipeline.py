"""Invalid trades through the platform itself: a replayed ccxt trade file with bad rows, materialized
raw -> bronze -> silver as `dagster asset materialize` does, lands every bad row in
bronze/trade_rejects (lake and warehouse view) with its reason, and the valid rows in bronze. A
re-run changes nothing.

The instrument is a temp instruments file read through CRYPTO_INSTRUMENTS, as a user's process reads
it (a kraken pair the test universe lists too, so its partition key exists). The runs are in this
process (`fixtures.materialize_as_cli`: the CLI's own steps, the definitions built from the settings
read from that environment, the same selection and partition range, the quality checks included)
rather than a `dagster` CLI process each: the code location's executor runs a CLI run in the CLI's
process anyway, so only the process start-up (~8 CPU s of imports and code-location load) is left
out; the CLI command itself is exercised by test_offline (the demo) and test_checks_cli.

(Rows whose timestamp is not a time or lies outside the partition grid: test_faults_replay.py and the
end-to-end case in test_faults_files.py; the window rule itself: test_transforms_trades.py.)
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest

from crypto_platform.settings import INSTRUMENTS_ENV, parse_universe
from crypto_platform.transforms import trades as T
from crypto_platform_tests.fixtures import materialize_as_cli, platform_process

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

KEY = "2024-01-01|kraken.BTC-USDC"
T0 = datetime(2024, 1, 1, 9, tzinfo=UTC)


def _trade(i: int, price: float | None, amount: float, side: str | None) -> dict:
    ts = T0 + timedelta(seconds=7 * i)
    return {
        "id": str(1000 + i),
        "timestamp": int(ts.timestamp() * 1000),
        "datetime": ts.isoformat().replace("+00:00", "Z"),
        "symbol": "BTC/USDC",
        "side": side,
        "price": price,
        "amount": amount,
        "cost": None,
        "info": {"i": i},
    }


BAD = {  # row number -> (price, amount, side, reason)
    3: (-5.0, 0.1, "buy", T.PRICE_NOT_POSITIVE),
    4: (float("nan"), 0.1, "sell", T.PRICE_NAN),
    7: (42_000.0, 0.0, "buy", T.AMOUNT_NOT_POSITIVE),
    9: (42_000.0, 0.2, "bid", T.UNKNOWN_SIDE_PREFIX + "'bid'"),
}


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.DagsterInstance.ephemeral() as inst:
        yield inst


def test_invalid_replayed_trades_land_in_rejects_with_reasons(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    rows = []
    for i in range(20):
        price, amount, side, _ = BAD.get(i, (42_000.0 + i, 0.01 * (i + 1), "buy" if i % 2 else "sell", ""))
        rows.append(_trade(i, price, amount, side))
    trades_file = tmp_path / "trades.json"
    trades_file.write_text(json.dumps(rows))  # NaN is written as JSON's NaN literal, as Python reads it back

    doc = {
        "start_date": "2024-01-01",
        "instruments": [
            {
                "exchange": "kraken",
                "symbol": "BTC/USDC",
                "source": "replay",
                "path": str(trades_file),
                "min_non_empty_share": None,
            }
        ],
    }
    instruments = tmp_path / "instruments.yaml"
    instruments.write_text(json.dumps(doc))
    parse_universe(doc, instruments)
    env = {
        INSTRUMENTS_ENV: str(instruments),
        "CRYPTO_LAKE_ROOT": str(tmp_path / "lake"),
        "CRYPTO_WAREHOUSE_PATH": str(tmp_path / "warehouse.duckdb"),
    }

    def run() -> None:
        with platform_process(env):
            result = materialize_as_cli(
                "group:raw or group:bronze or group:silver", f"{KEY}...{KEY}", None, instance
            )
        assert result.success

    run()
    part = tmp_path / "lake" / "{layer}" / "{table}" / "instrument=kraken.BTC-USDC" / "date=2024-01-01"
    bronze = pl.read_parquet(Path(str(part).format(layer="bronze", table="trades")) / "part.parquet")
    rejects = pl.read_parquet(Path(str(part).format(layer="bronze", table="trade_rejects")) / "part.parquet")

    assert sorted(bronze["trade_id"].to_list()) == sorted(str(1000 + i) for i in range(20) if i not in BAD)
    got = dict(zip(rejects["trade_id"].to_list(), rejects["reason"].to_list(), strict=True))
    assert got == {str(1000 + i): reason for i, (*_, reason) in BAD.items()}
    # the rejected rows are kept as received, the exchange's own record included
    assert sorted(json.loads(p)["i"] for p in rejects["payload"].to_list()) == sorted(BAD)
    candles = pl.read_parquet(Path(str(part).format(layer="silver", table="candles_1m")) / "part.parquet")
    assert int(candles["trade_count"].sum()) == 20 - len(BAD)

    wh = duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True)
    by_reason = dict(wh.execute("select reason, count(*) from bronze.trade_rejects group by 1").fetchall())
    wh.close()
    assert by_reason == {reason: 1 for *_, reason in BAD.values()}

    # re-running the partition changes nothing
    before = {p: p.read_bytes() for p in (tmp_path / "lake").rglob("*.parquet")}
    run()
    assert {p: p.read_bytes() for p in (tmp_path / "lake").rglob("*.parquet")} == before
