"""raw -> bronze -> silver through Dagster itself, on real recorded trades replayed from ../shared.

The date-range backfill runs what `dagster asset materialize --partition-range` runs, in this process
(`fixtures.materialize_as_cli`: the CLI's own steps, the code location's definitions and resources
built from the settings read from the environment, one single run over the range): the code
location's executor runs a CLI run in the CLI's process anyway, so only the process start-up (~8 CPU s
of imports and code-location load) is left out; the CLI command itself is exercised by test_offline
(the demo's ranges) and test_checks_cli.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest

from crypto_platform import tables
from crypto_platform.assets import ingest, silver
from crypto_platform.partitions import parse_key
from crypto_platform.resources.lake import LakeResource
from crypto_platform.resources.sources import TradeSourcesResource
from crypto_platform.resources.warehouse import WarehouseResource
from crypto_platform_tests.fixtures import materialize_as_cli, platform_process
from crypto_platform_tests.paths import SHARED_DATA

pytestmark = pytest.mark.slow  # materializes over real trades

ASSETS = [*dg.load_assets_from_modules([ingest, silver])]
REPLAY_FILE = SHARED_DATA / "trades" / "binance_spot_btcusdt_2024-01-01_1200-1230.parquet"
USDM_FILE = SHARED_DATA / "trades" / "binance_ws" / "derived" / "usdm_btcusdt_trades.csv"


def _resources(tmp: Path) -> dict:
    return {
        "lake": LakeResource(root=str(tmp / "lake")),
        "warehouse": WarehouseResource(path=str(tmp / "warehouse.duckdb")),
        "trade_sources": TradeSourcesResource(),
    }


def _metadata(result: dg.ExecuteInJobResult) -> dict[str, dict]:
    """Materialization metadata of a run, by asset key ('silver/candles_1m' -> {name: value})."""
    out = {}
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        out[mat.asset_key.to_user_string()] = {k: v.value for k, v in mat.metadata.items()}
    return out


def _run(tmp: Path, key: str, instance: dg.DagsterInstance) -> dg.ExecuteInJobResult:
    result = dg.materialize(ASSETS, partition_key=key, resources=_resources(tmp), instance=instance)
    assert result.success
    return result


def _lake_files(tmp: Path) -> dict[str, bytes]:
    return {str(p.relative_to(tmp)): p.read_bytes() for p in sorted((tmp / "lake").rglob("*")) if p.is_file()}


def test_replayed_binance_trades_give_31_candles_equal_to_duckdb(tmp_path: Path) -> None:
    key = "2024-01-01|binance.BTC-USDT"
    with dg.DagsterInstance.ephemeral() as instance:
        meta = _metadata(_run(tmp_path, key, instance))
        lake = LakeResource(root=str(tmp_path / "lake"))
        part = parse_key(key)
        candles = lake.read_partition(tables.CANDLES_1M, part)
        bronze = lake.read_partition(tables.BRONZE_TRADES, part)

        expected = duckdb.sql(
            f"""
            select date_trunc('minute', datetime) as ts,
                   arg_min(price, (datetime, trade_id)) as open, max(price) as high, min(price) as low,
                   arg_max(price, (datetime, trade_id)) as close, sum(quantity) as volume,
                   sum(price * quantity) as quote_volume, count(*) as trade_count,
                   coalesce(sum(quantity) filter (where not is_buyer_maker), 0) as buy_volume,
                   coalesce(sum(quantity) filter (where is_buyer_maker), 0) as sell_volume,
                   sum(price * quantity) / sum(quantity) as vwap
            from '{REPLAY_FILE}' group by 1 order by 1
            """
        ).pl()
        assert candles.height == 31 == expected.height
        assert not candles["is_empty"].any()
        got = candles.select(expected.columns).with_columns(pl.col("ts").dt.replace_time_zone(None))
        exp = expected.with_columns(
            pl.col("ts").cast(pl.Datetime("us")), pl.col("trade_count").cast(pl.Int64)
        )
        for col in ["open", "high", "low", "close", "trade_count"]:
            assert got[col].to_list() == exp[col].to_list(), col
        for col in ["volume", "quote_volume", "buy_volume", "sell_volume", "vwap"]:
            assert got[col].to_numpy() == pytest.approx(exp[col].to_numpy(), rel=1e-12), col
        assert got["ts"].to_list() == exp["ts"].to_list()
        assert bronze.height == 16_702

        # What the UI shows for the run: rows, rejects, bytes written and the time range covered.
        first, last = exp["ts"].min(), exp["ts"].max()
        assert meta["bronze/trades"]["rows"] == 16_702 and meta["bronze/trades"]["rejects"] == 0
        assert meta["bronze/trade_rejects"]["rows"] == 0
        assert meta["silver/candles_1m"]["rows"] == 31 and meta["silver/candles_1m"]["trades"] == 16_702
        assert meta["silver/candles_5m"]["rows"] == 7 and meta["silver/candles_1h"]["rows"] == 1
        for asset in ["raw/trades", "bronze/trades", "silver/candles_1m"]:
            files = lake.partition_path(tables.by_key(dg.AssetKey(asset.split("/"))), part).glob("*.parquet")
            assert meta[asset]["bytes"] == sum(f.stat().st_size for f in files), asset
        assert str(meta["silver/candles_1m"]["time_from"]).startswith(str(first))
        assert str(meta["silver/candles_1m"]["time_to"]).startswith(str(last))

        # The warehouse view answers the same question in SQL.
        wh = duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True)
        n = wh.execute(
            "select count(*) from silver.candles_1m where instrument = 'binance.BTC-USDT'"
        ).fetchone()
        assert n == (31,)
        wh.close()

        # Re-running the partition changes nothing: same files, same bytes, no new raw batch.
        before = _lake_files(tmp_path)
        _run(tmp_path, key, instance)
        assert _lake_files(tmp_path) == before


def test_midnight_sessions_split_exactly_across_days_by_one_range_run(tmp_path: Path) -> None:
    """A date-range backfill as the dagster CLI runs it, one single run, over a midnight-crossing session."""
    env = {
        "CRYPTO_LAKE_ROOT": str(tmp_path / "lake"),
        "CRYPTO_WAREHOUSE_PATH": str(tmp_path / "warehouse.duckdb"),
    }
    rng = "2023-04-04|binanceusdm.BTC-USDT-USDT...2023-04-05|binanceusdm.BTC-USDT-USDT"
    with dg.DagsterInstance.ephemeral() as instance:
        with platform_process(env):
            result = materialize_as_cli("group:raw or group:bronze or group:silver", rng, None, instance)
        assert result.success
        # The single run covered both partitions and recorded both as materialized.
        mats = instance.get_materialized_partitions(dg.AssetKey(["silver", "candles_1m"]))

    lake = LakeResource(root=str(tmp_path / "lake"))
    expected = dict(
        duckdb.sql(
            f"select cast(to_timestamp(ts_ms / 1000) at time zone 'UTC' as date)::varchar, count(*) "
            f"from '{USDM_FILE}' group by 1"
        ).fetchall()
    )
    for day in ["2023-04-04", "2023-04-05"]:
        part = parse_key(f"{day}|binanceusdm.BTC-USDT-USDT")
        bronze = lake.read_partition(tables.BRONZE_TRADES, part)
        assert bronze is not None and bronze.height == expected[day] > 0
        assert bronze["ts"].dt.date().unique().to_list() == [part.day]
        candles = lake.read_partition(tables.CANDLES_1M, part)
        assert int(candles["trade_count"].sum()) == expected[day]
    # ... and nothing else: one instrument is backfilled alone.
    assert set(mats) == {"2023-04-04|binanceusdm.BTC-USDT-USDT", "2023-04-05|binanceusdm.BTC-USDT-USDT"}
