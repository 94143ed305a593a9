"""trades_reconciliation: bronze against the exchange's own 1-minute candles (real ccxt.binance
`fetch_ohlcv` against the fake Binance, whose klines DuckDB builds from the recording, as Binance builds
them from all its trades). A partition that lost one minute of trades fails naming the minute; the
documented re-fetch (`raw/trades` config `refetch: true`) repairs it and the check passes again.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import polars as pl
import pytest

from crypto_platform import tables
from crypto_platform.assets.ingest import bronze_trades, raw_trades
from crypto_platform.checks.reconciliation import RECONCILIATION_CHECK, trades_reconciliation
from crypto_platform.quality.reconciliation import reconcile_minutes
from crypto_platform.raw_manifest import RawBatch
from crypto_platform.resources.lake import LakeResource
from crypto_platform.resources.sources import TradeSourcesResource
from crypto_platform.resources.warehouse import WarehouseResource
from crypto_platform_tests.ccxt_recording import (
    CCXT_KEY as KEY,
)
from crypto_platform_tests.ccxt_recording import (
    NOW,
    RECORDED,
    bronze_figures,
    part,
    recorded_trades,
    recording_figures,
)
from crypto_platform_tests.exchange_server import FakeBinanceServer, ServerState

LOST = datetime(2024, 1, 1, 12, 7, tzinfo=UTC)  # the minute a broken ingest lost


def klines_of_recording() -> list[list[Any]]:
    """Binance 1m klines of the recorded trades (open time, o, h, l, c, base volume, ...), by DuckDB."""
    rows = duckdb.sql(
        f"select epoch_ms(time_bucket(interval 1 minute, datetime)) as t, arg_min(price, trade_id), "
        f"max(price), min(price), arg_max(price, trade_id), sum(quantity::decimal(18, 8))::varchar, "
        f"count(*) from read_parquet('{RECORDED}') group by 1 order by 1"
    ).fetchall()
    return [[t, f"{o:.8f}", f"{h:.8f}", f"{lo:.8f}", f"{c:.8f}", v, t + 59_999, "0", n, "0", "0", "0"]
            for t, o, h, lo, c, v, n in rows]  # fmt: skip


def run(tmp: Path, url: str, instance: dg.DagsterInstance, assets: list, refetch: bool = False) -> Any:
    """One in-process run of `assets` (+ the reconciliation check) for KEY on the fake Binance."""
    resources = {
        "lake": LakeResource(root=str(tmp / "lake")),
        "warehouse": WarehouseResource(path=str(tmp / "warehouse.duckdb")),
        "trade_sources": TradeSourcesResource(api_urls={"binance": url}, now=NOW.isoformat()),
    }
    config = {"ops": {raw_trades.node_def.name: {"config": {"refetch": True}}}} if refetch else None
    return dg.materialize([*assets, trades_reconciliation], partition_key=KEY, instance=instance,
                          resources=resources, run_config=config)  # fmt: skip


def evaluation(result: Any) -> dg.AssetCheckEvaluation:
    [ev] = [e for e in result.get_asset_check_evaluations() if e.check_name == RECONCILIATION_CHECK]
    return ev


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.usefixtures("ccxt_universe")
def test_lost_minute_fails_reconciliation_naming_it_and_refetch_repairs_it(tmp_path: Path) -> None:
    state = ServerState(recorded_trades(next_day=True), "BTC", "USDT", klines=klines_of_recording())
    lake = LakeResource(root=str(tmp_path / "lake"))
    with FakeBinanceServer(state) as srv, dg.DagsterInstance.ephemeral() as instance:
        first = run(tmp_path, srv.url, instance, [raw_trades, bronze_trades])
        ev = evaluation(first)
        assert first.success and ev.passed, ev.description
        assert ev.metadata["minutes_compared"].value == 1440 and ev.metadata["mismatched_minutes"].value == 0
        assert state.requests["/api/v3/klines"] >= 1

        # a broken ingest (the pager) lost the minute 12:07 from raw; bronze is rebuilt from it
        manifest = lake.read_manifest(tables.RAW_TRADES, part())
        [name] = manifest.names
        raw = lake.scan_batches(tables.RAW_TRADES, part(), [name]).collect()
        in_lost = (pl.col("timestamp_ms") >= int(LOST.timestamp() * 1000)) & (
            pl.col("timestamp_ms") < int((LOST + timedelta(minutes=1)).timestamp() * 1000)
        )
        lost = raw.filter(in_lost).height
        [batch] = manifest.batches
        kept = lake.write_batch(raw.filter(~in_lost), tables.RAW_TRADES, part(), f"{name}-lossy")
        lossy = RawBatch(f"{name}-lossy", batch.covered_from, batch.covered_to, kept.rows, batch.written_at)
        lake.write_manifest(manifest.restarted_with(lossy), tables.RAW_TRADES, part())
        broken = run(tmp_path, srv.url, instance, [bronze_trades])
        ev = evaluation(broken)
        assert broken.success and not ev.passed  # a non-blocking check: the run succeeds, the check fails
        assert ev.metadata["mismatched_minutes"].value == 1
        assert f"{KEY} 12:07: bronze 0 trades, volume 0 vs the exchange's candle" in ev.description
        assert "refetch: true" in ev.description
        assert bronze_figures(tmp_path)[0] == recording_figures()[0] - lost > 0

        # the documented repair: re-fetch the partition, rebuild bronze; reconciliation passes again
        repaired = run(tmp_path, srv.url, instance, [raw_trades, bronze_trades], refetch=True)
        assert repaired.success and evaluation(repaired).passed
        assert lake.read_manifest(tables.RAW_TRADES, part()).batches[-1].rows == raw.height  # re-read whole
    assert bronze_figures(tmp_path) == recording_figures()


def test_reconcile_minutes_tolerance_and_missing_minutes() -> None:
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    ts = [t0 + timedelta(seconds=s) for s in (1, 2, 61, 185)]
    bronze = pl.DataFrame({"ts": ts, "amount": [0.1, 0.2, 0.5, 1.0]})
    candles = pl.DataFrame({"ts": [t0, t0 + timedelta(minutes=1), t0 + timedelta(minutes=2)],
                            "volume": [0.30000000000000004, 0.5, 0.25]})  # fmt: skip
    result = reconcile_minutes(bronze, candles, t0, t0 + timedelta(minutes=4))
    assert result.minutes == 4 and not result.passed
    assert result.mismatches.select("minute", "bronze_volume", "exchange_volume").rows() == [
        (t0 + timedelta(minutes=2), 0.0, 0.25),  # trades missing in bronze
        (t0 + timedelta(minutes=3), 1.0, 0.0),  # a minute the exchange has no candle for
    ]
    assert reconcile_minutes(bronze, candles, t0, t0 + timedelta(minutes=2)).passed


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_replayed_day_reconciles_with_its_recorded_klines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replay instrument with `klines` (the exchange's 1-minute candles recorded with its trades) is
    reconciled like a live one: the complete recording passes; a recording that lost a minute of trades
    fails naming that minute (the klines still hold it)."""
    from crypto_platform.platform_settings import load_settings
    from crypto_platform.settings import INSTRUMENTS_ENV, load_universe

    klines = tmp_path / "klines.csv"
    duckdb.sql(
        f"copy (select time_bucket(interval 1 minute, datetime) as ts, arg_min(price, trade_id) as open, "
        f"max(price) as high, min(price) as low, arg_max(price, trade_id) as close, sum(quantity) as volume "
        f"from read_parquet('{RECORDED}') group by 1 order by 1) to '{klines}' (header, delimiter ',')"
    )
    lossy = tmp_path / "lossy.parquet"
    lost_ms = int(LOST.timestamp() * 1000), int((LOST + timedelta(minutes=1)).timestamp() * 1000)
    duckdb.sql(
        f"copy (select * from read_parquet('{RECORDED}') where not (epoch_ms(datetime) >= {lost_ms[0]} "
        f"and epoch_ms(datetime) < {lost_ms[1]})) to '{lossy}' (format parquet)"
    )

    def replay(path: Path, lake: str) -> dg.AssetCheckEvaluation:
        entry = {"exchange": "binance", "symbol": "BTC/USDT", "source": "replay", "path": str(path),
                 "klines": str(klines)}  # fmt: skip
        universe = tmp_path / f"{path.stem}.yaml"
        universe.write_text(json.dumps({"start_date": "2019-10-01", "instruments": [entry]}))
        monkeypatch.setenv(INSTRUMENTS_ENV, str(universe))
        load_settings.cache_clear()
        load_universe.cache_clear()
        resources = {
            "lake": LakeResource(root=str(tmp_path / lake)),
            "warehouse": WarehouseResource(path=str(tmp_path / f"{lake}.duckdb")),
            "trade_sources": TradeSourcesResource(now=NOW.isoformat()),
        }
        result = dg.materialize([raw_trades, bronze_trades, trades_reconciliation], partition_key=KEY,
                                resources=resources)  # fmt: skip
        assert result.success
        return evaluation(result)

    try:
        complete = replay(RECORDED, "complete")
        assert complete.passed, complete.description
        assert (
            complete.metadata["partitions"].value == 1 and complete.metadata["mismatched_minutes"].value == 0
        )
        assert complete.metadata["minutes_compared"].value > 0
        broken = replay(lossy, "lossy")
        assert not broken.passed and broken.metadata["mismatched_minutes"].value == 1
        assert f"{KEY} 12:07: bronze 0 trades, volume 0 vs the exchange's candle" in broken.description
    finally:
        monkeypatch.undo()
        load_settings.cache_clear()
        load_universe.cache_clear()
