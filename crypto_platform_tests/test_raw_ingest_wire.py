"""raw/trades through Dagster's own harness (`materialize`, in process) with a ccxt Binance instrument
against the local fake Binance (exchange_server.py) serving the real recording: coverage is recorded
only as far as the pager proved it, the wire figures land in the materialization metadata and the
warnings in the run's event log, and a complete partition is never asked for again.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from crypto_platform import tables
from crypto_platform.assets.ingest import bronze_trades, raw_trades
from crypto_platform.resources.lake import LakeResource
from crypto_platform.resources.sources import TradeSourcesResource
from crypto_platform.resources.warehouse import WarehouseResource
from crypto_platform_tests.ccxt_recording import (
    CCXT_KEY as KEY,
)
from crypto_platform_tests.ccxt_recording import (
    DAY_END,
    NOW,
    bronze_figures,
    part,
    recorded_trades,
    recording_figures,
)
from crypto_platform_tests.exchange_server import FakeBinanceServer, ServerState

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

AGG = "/api/v3/aggTrades"


def run(tmp: Path, url: str, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    """One in-process run of raw -> bronze for KEY with the fake exchange as Binance."""
    resources = {
        "lake": LakeResource(root=str(tmp / "lake")),
        "warehouse": WarehouseResource(path=str(tmp / "warehouse.duckdb")),
        "trade_sources": TradeSourcesResource(api_urls={"binance": url}, now=NOW.isoformat()),
    }
    return dg.materialize(
        [raw_trades, bronze_trades], partition_key=KEY, instance=instance, resources=resources
    )


def raw_meta(result: dg.ExecuteInProcessResult) -> dict:
    """The raw/trades materialization metadata of a run, as plain values."""
    [mat] = [m for m in result.asset_materializations_for_node(raw_trades.node_def.name)]
    return {k: v.value for k, v in mat.metadata.items()}


def warnings(instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult) -> list[str]:
    """The run's WARNING messages in the Dagster event log."""
    return [e.user_message for e in instance.all_logs(result.run_id) if e.level == logging.WARNING]


def test_wire_figures_in_metadata_and_log_and_no_request_for_a_complete_partition(
    tmp_path: Path, ccxt_universe: None
) -> None:
    faults = {2: "429", 3: "ratelimit", 4: "500", 7: "duplicate"}
    state = ServerState(recorded_trades(next_day=True), "BTC", "USDT", faults=faults, fault_on="data")
    with FakeBinanceServer(state) as srv, dg.DagsterInstance.ephemeral() as instance:
        first = run(tmp_path, srv.url, instance)
        assert first.success
        meta = raw_meta(first)
        assert dict(state.faults_hit) == {"429": 1, "ratelimit": 1, "500": 1, "duplicate": 1}
        assert meta["requests"] == state.requests[AGG]  # every trades request is accounted for
        assert (meta["retries"], meta["rate_limit_waits"], meta["duplicate_pages"]) == (3, 2, 1)
        assert meta["retries_by_error"] == {"DDoSProtection": 2, "ExchangeNotAvailable": 1}
        assert meta["incomplete_partitions"] == 0 and meta["why_incomplete"] == "none"
        wire_warnings = [w for w in warnings(instance, first) if "wire:" in w]
        assert (
            len(wire_warnings) == 1
            and "3 retries (DDoSProtection 2, ExchangeNotAvailable 1)" in wire_warnings[0]
        )
        assert "1 duplicate pages dropped" in wire_warnings[0]
        manifest = LakeResource(root=str(tmp_path / "lake")).read_manifest(tables.RAW_TRADES, part())
        assert manifest.watermark == DAY_END
        assert bronze_figures(tmp_path) == recording_figures()  # bronze equals the served tape

        asked = state.requests[AGG]
        second = run(tmp_path, srv.url, instance)
        assert second.success and state.requests[AGG] == asked  # the complete partition: no request
        assert raw_meta(second)["requests"] == 0
        assert bronze_figures(tmp_path) == recording_figures()


def test_truncated_history_stays_incomplete_visibly_then_completes(
    tmp_path: Path, ccxt_universe: None
) -> None:
    cut = datetime(2024, 1, 1, 12, 15, tzinfo=UTC)
    state = ServerState(
        recorded_trades(next_day=True), "BTC", "USDT", visible_until_ms=int(cut.timestamp() * 1000)
    )
    last_ms = int(state.trades.times[state.trades.times <= int(cut.timestamp() * 1000)].max())
    with FakeBinanceServer(state) as srv, dg.DagsterInstance.ephemeral() as instance:
        first = run(tmp_path, srv.url, instance)
        assert first.success
        meta = raw_meta(first)
        assert meta["incomplete_partitions"] == 1
        assert (
            "binance BTC/USDT" in meta["why_incomplete"]
            and "nothing after aggregate id" in meta["why_incomplete"]
        )
        lake = LakeResource(root=str(tmp_path / "lake"))
        covered = lake.read_manifest(tables.RAW_TRADES, part()).watermark
        assert covered == datetime.fromtimestamp(last_ms / 1000, UTC)
        [warning] = [w for w in warnings(instance, first) if "coverage proven only up to" in w]
        assert covered.isoformat() in warning and "the next run resumes from it" in warning

        state.visible_until_ms = None  # the exchange answers for the rest of the day now
        second = run(tmp_path, srv.url, instance)
        assert second.success and raw_meta(second)["incomplete_partitions"] == 0
        assert lake.read_manifest(tables.RAW_TRADES, part()).watermark == DAY_END
    raw = lake.scan_batches(tables.RAW_TRADES, part(), lake.read_manifest(tables.RAW_TRADES, part()).names)
    assert raw is not None
    raw_ids = raw.select("trade_id").collect()["trade_id"]
    assert raw_ids.n_unique() == recording_figures()[0] < raw_ids.len()  # the resumed run re-read a little
    assert bronze_figures(tmp_path) == recording_figures()  # complete, nothing duplicated
    assert pl.Series(raw_ids).n_unique() == recording_figures()[0]
