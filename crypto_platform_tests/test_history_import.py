"""import_candles_job: 1-minute OHLCV history (real files in ../shared, real ccxt against a local fake
Binance) into silver/candles_1m through Dagster, with each day reported as a materialized partition."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest

from crypto_platform import tables
from crypto_platform.assets import history, ingest
from crypto_platform.partitions import DayPartition, multi_key
from crypto_platform.resources.lake import LakeResource
from crypto_platform.resources.sources import TradeSourcesResource
from crypto_platform.resources.warehouse import WarehouseResource
from crypto_platform.schemas import CANDLES
from crypto_platform.settings import SettingsError, load_universe, parse_universe
from crypto_platform_tests.conftest import SHARED_DATA
from crypto_platform_tests.kline_server import FakeKlineServer, KlineState, RecordedKlines

pytestmark = pytest.mark.timeout(120)

FTX_FILE = SHARED_DATA / "candles" / "ftx_btcperp_1m_2022-01.csv"
KRAKEN_1M = SHARED_DATA / "candles" / "kraken_2023q1" / "XBTUSDC_1.csv"
KRAKEN_5M = SHARED_DATA / "candles" / "kraken_2023q1" / "XBTUSD_5.csv"
FTX = "ftx.BTC-USD-USD"
KRAKEN = "kraken.BTC-USDC"
BINANCE = "binance.BTC-USDT"


def _resources(tmp: Path) -> dict:
    return {
        "lake": LakeResource(root=str(tmp / "lake")),
        "warehouse": WarehouseResource(path=str(tmp / "warehouse.duckdb")),
    }


def _import(tmp: Path, instance: dg.DagsterInstance, instrument: str, **config) -> dg.ExecuteInProcessResult:
    return history.import_candles_job.execute_in_process(
        run_config=history.run_config(instrument, **config),
        resources=_resources(tmp),
        instance=instance,
        raise_on_error=False,
    )


def _failure(result: dg.ExecuteInProcessResult) -> str:
    assert not result.success
    events = [e for e in result.all_events if e.is_step_failure]
    error, messages = events[0].step_failure_data.error, []
    while error is not None:  # the Failure's text, or the user error under Dagster's wrapper
        messages.append(error.message)
        error = error.cause
    return "\n".join(messages)


def _logs(instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult, text: str) -> list[str]:
    """The run's log messages containing `text`."""
    return [e.user_message for e in instance.all_logs(result.run_id) if text in (e.user_message or "")]


def _part(instrument: str, day: str) -> DayPartition:
    return DayPartition(load_universe().instrument(instrument), date.fromisoformat(day))


def _ftx_expected(first: str, last: str) -> pl.DataFrame:
    """The FTX file's bars in [first, last), read by DuckDB (volume is quote volume there)."""
    return duckdb.sql(
        f"select timestamp::timestamp as ts, open, high, low, close, volume as quote_volume "
        f"from read_csv('{FTX_FILE}') where timestamp >= '{first}' and timestamp < '{last}' order by 1"
    ).pl()


def _lake_files(tmp: Path) -> dict[str, bytes]:
    root = tmp / "lake"
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.parquet"))}


def test_ftx_file_import_writes_each_day_and_reports_it_as_materialized(tmp_path: Path) -> None:
    with dg.DagsterInstance.ephemeral() as instance:
        result = _import(tmp_path, instance, FTX, since="2022-01-05", until="2022-01-07")
        assert result.success
        lake = LakeResource(root=str(tmp_path / "lake"))
        expected = _ftx_expected("2022-01-05", "2022-01-07")
        got = pl.concat(
            [lake.read_partition(tables.CANDLES_1M, _part(FTX, d)) for d in ("2022-01-05", "2022-01-06")]
        )
        assert got.height == expected.height == 2 * 1440
        assert got["origin"].unique().to_list() == ["import:ftx_btcperp_1m_2022-01.csv"]
        assert got["ts"].dt.replace_time_zone(None).to_list() == expected["ts"].to_list()
        for col in ["open", "high", "low", "close", "quote_volume"]:
            assert got[col].to_list() == expected[col].to_list(), col
        # FTX's volume is quote volume: base volume is derived through the close (documented approximation)
        assert got["volume"].to_numpy() == pytest.approx(
            (expected["quote_volume"] / expected["close"]).to_numpy()
        )
        assert got["buy_volume"].null_count() == got.height  # the taker split is unknown, not zero

        # Each day is a materialization of silver/candles_1m for its (day x instrument) partition ...
        keys = {multi_key(date(2022, 1, d), FTX) for d in (5, 6)}
        assert keys <= set(instance.get_materialized_partitions(tables.CANDLES_1M.key))
        mats = [e.materialization for e in result.get_asset_materialization_events()]
        assert {str(m.partition) for m in mats} == keys
        assert all(m.asset_key == tables.CANDLES_1M.key for m in mats)
        assert {m.tags["dagster/partition/instrument"] for m in mats} == {FTX}
        assert {m.metadata["rows"].value for m in mats} == {1440}
        # ... and the warehouse view sees them.
        wh = duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True)
        assert wh.execute(
            f"select count(*) from silver.candles_1m where instrument = '{FTX}'"
        ).fetchone() == (2880,)
        wh.close()

        # Re-importing is idempotent: same files, same bytes.
        before = _lake_files(tmp_path)
        assert _import(tmp_path, instance, FTX, since="2022-01-05", until="2022-01-07").success
        assert _lake_files(tmp_path) == before

        # Importing part of a day again replaces only that span (e.g. an incremental ccxt top-up).
        part = _part(FTX, "2022-01-06")
        result = _import(tmp_path, instance, FTX, since="2022-01-06T12:00:00", until="2022-01-06T13:00:00")
        assert result.success
        again = lake.read_partition(tables.CANDLES_1M, part)
        assert again.equals(got.filter(pl.col("ts").dt.date() == date(2022, 1, 6)))
        [mat] = [e.materialization for e in result.get_asset_materialization_events()]
        assert mat.metadata["status"].value == "merged" and mat.metadata["imported_bars"].value == 60


def test_sparse_kraken_minutes_become_explicit_empty_bars(tmp_path: Path) -> None:
    with dg.DagsterInstance.ephemeral() as instance:
        assert _import(tmp_path, instance, KRAKEN, since="2023-01-02", until="2023-01-03").success
    got = LakeResource(root=str(tmp_path / "lake")).read_partition(
        tables.CANDLES_1M, _part(KRAKEN, "2023-01-02")
    )
    traded = duckdb.sql(
        f"select to_timestamp(column0) at time zone 'UTC' as ts, column4 as close, column5 as volume, "
        f"column6 as trades from read_csv('{KRAKEN_1M}', header = false) "
        f"where column0 >= {int(datetime(2023, 1, 2, tzinfo=UTC).timestamp())} "
        f"and column0 < {int(datetime(2023, 1, 3, tzinfo=UTC).timestamp())} order by 1"
    ).pl()
    assert got.height == 1440  # every minute of the day (the file continues on both sides)
    assert (~got["is_empty"]).sum() == traded.height > 0
    assert got["is_empty"].sum() > 500  # illiquid: most minutes had no trade
    bars = got.filter(~pl.col("is_empty"))
    assert bars["close"].to_list() == traded["close"].to_list()
    assert bars["trade_count"].to_list() == traded["trades"].to_list()
    empty = got.with_columns(pl.col("close").shift(1).alias("prev")).filter(pl.col("is_empty"))
    assert (empty["volume"] == 0).all() and (empty["trade_count"] == 0).all()
    assert empty.drop_nulls("prev").select((pl.col("close") == pl.col("prev")).all()).item()


def test_bad_imports_fail_with_a_clear_message_and_write_nothing(tmp_path: Path) -> None:
    with dg.DagsterInstance.ephemeral() as instance:
        msg = _failure(_import(tmp_path, instance, KRAKEN, path=str(KRAKEN_5M), file_format="kraken"))
        assert "0:05:00 apart" in msg and "only takes 1-minute bars" in msg
        msg = _failure(_import(tmp_path, instance, "kraken.XBT-USD"))
        assert "unknown instrument 'kraken.XBT-USD'" in msg
        msg = _failure(_import(tmp_path, instance, FTX, path="../shared/data/candles/nothing_*.csv"))
        assert "no OHLCV file matches" in msg
        msg = _failure(_import(tmp_path, instance, FTX, source="ccxt"))
        assert "needs 'since'" in msg
        msg = _failure(_import(tmp_path, instance, FTX, since="2022-02-03"))
        assert "no bars in" in msg
    assert not (tmp_path / "lake").exists()


def test_days_outside_the_partition_grid_are_skipped_and_named(tmp_path: Path) -> None:
    """The test universe starts on 2019-10-01: a file reaching back before it is cut, loudly."""
    path = tmp_path / "bars.csv"
    start = datetime(2019, 9, 30, 23, 58, tzinfo=UTC)
    pl.DataFrame(
        {
            "timestamp": [start + timedelta(minutes=i) for i in range(4)],
            "open": [1.0, 2.0, 3.0, 4.0],
            "high": [1.5, 2.5, 3.5, 4.5],
            "low": [0.5, 1.5, 2.5, 3.5],
            "close": [1.2, 2.2, 3.2, 4.2],
            "volume": [1.0, 0.0, 2.0, 3.0],
        }
    ).write_csv(path)
    with dg.DagsterInstance.ephemeral() as instance:
        result = _import(tmp_path, instance, FTX, path=str(path), volume_unit="base")
        assert result.success
        assert {str(e.materialization.partition) for e in result.get_asset_materialization_events()} == {
            f"2019-10-01|{FTX}"
        }
        warnings = _logs(instance, result, "skipped: outside the partitions")
        assert any(w.startswith(f"2019-09-30|{FTX}") for w in warnings)
    lake = LakeResource(root=str(tmp_path / "lake"))
    assert lake.read_partition(tables.CANDLES_1M, _part(FTX, "2019-10-01")).height == 2


def test_an_import_entirely_outside_the_partition_grid_fails_naming_instrument_start_and_span(
    tmp_path: Path,
) -> None:
    """A file wholly before start_date used to 'succeed' writing nothing (docs/gold.md §1 with the
    default instruments file): now the run fails and says which start_date would take it."""
    path = tmp_path / "old.csv"
    start = datetime(2019, 9, 28, 12, 0, tzinfo=UTC)
    n = 2 * 1440
    pl.DataFrame(
        {
            "timestamp": [start + timedelta(minutes=i) for i in range(n)],
            "open": [100.0] * n,
            "high": [101.0] * n,
            "low": [99.0] * n,
            "close": [100.5] * n,
            "volume": [1.0] * n,
        }
    ).write_csv(path)
    with dg.DagsterInstance.ephemeral() as instance:
        msg = _failure(_import(tmp_path, instance, FTX, path=str(path), volume_unit="base"))
    assert f"import_candles {FTX}: every day of the bars (2019-09-28 .. 2019-09-30)" in msg
    assert "outside the partitions (2019-10-01 .. " in msg
    assert "Set start_date to 2019-09-28 or earlier in the instruments file" in msg
    assert "instruments_test.yaml" in msg
    assert not (tmp_path / "lake").exists()


def _suite(result: dg.ExecuteInProcessResult):
    [ev] = [e for e in result.get_asset_check_evaluations() if e.check_name == "candles_1m_suite"]
    return ev


def test_import_job_runs_the_candles_suite_on_every_imported_partition(tmp_path: Path) -> None:
    """import_candles_job writes silver without the asset graph: it runs the blocking check's suite
    itself and records it as that check's evaluation; a failed expectation fails the job."""
    lake = LakeResource(root=str(tmp_path / "lake"))
    with dg.DagsterInstance.ephemeral() as instance:
        ok = _import(tmp_path, instance, FTX, since="2022-01-05", until="2022-01-07")
        assert ok.success
        ev = _suite(ok)
        assert ev.passed and ev.blocking and ev.asset_key == tables.CANDLES_1M.key
        assert ev.metadata["partitions"].value == 2 and ev.metadata["failed_partitions"].value == "-"
        assert ev.metadata["row_count"].value == 2 * 1440
        assert (
            instance.event_log_storage.get_latest_asset_check_execution_by_key([ev.asset_check_key])[
                ev.asset_check_key
            ].status.value
            == "SUCCEEDED"
        )

        # Kraken XBTUSDC is illiquid: its entry turns the liquidity floor off (min_non_empty_share: null);
        # with a fixed floor of 0.5 forced on (the old default), the same import fails on it, and says so
        config = history.run_config(KRAKEN, since="2023-01-02", until="2023-01-03")
        forced = {"use_instrument_overrides": False, "min_non_empty_share": 0.5}
        config["ops"]["validate_imported_candles"] = {"config": forced}
        bad = history.import_candles_job.execute_in_process(
            run_config=config, resources=_resources(tmp_path), instance=instance, raise_on_error=False
        )
        assert not bad.success
        ev = _suite(bad)
        assert not ev.passed and ev.metadata["failed_expectations"].value == "non_empty_share"
        assert ev.metadata["failed_partitions"].value == multi_key(date(2023, 1, 2), KRAKEN)
        msg = _failure(bad)
        assert "imported silver/candles_1m fails candles_1m_suite" in msg and "non_empty_share" in msg
        assert "below the liquidity floor 0.500 (fixed min_non_empty_share 0.5)" in ev.description
        # the bars are written (as after a materialization whose check fails) and reported as such
        assert lake.read_partition(tables.CANDLES_1M, _part(KRAKEN, "2023-01-02")).height == 1440
        assert _import(tmp_path, instance, KRAKEN, since="2023-01-02", until="2023-01-03").success


# ----------------------------------------------------------------------------------------------
# ccxt fetch_ohlcv against a local fake Binance


@pytest.fixture(scope="module")
def ftx_candles() -> pl.DataFrame:
    """Two days of the FTX file as Binance BTCUSDT would serve them (base volume = quote / close)."""
    return (
        pl.read_csv(FTX_FILE, try_parse_dates=True)
        .filter(pl.col("timestamp").is_between(datetime(2022, 1, 5), datetime(2022, 1, 7), closed="left"))
        .select(
            pl.col("timestamp").dt.replace_time_zone("UTC").alias("ts"),
            "open",
            "high",
            "low",
            "close",
            (pl.col("volume") / pl.col("close")).alias("volume"),
            pl.col("volume").alias("quote_volume"),
        )
    )


@pytest.fixture
def kline_server(ftx_candles: pl.DataFrame) -> Iterator[FakeKlineServer]:
    hidden = {int(datetime(2022, 1, 5, 10, m, tzinfo=UTC).timestamp() * 1000) for m in (7, 8, 9)}
    state = KlineState(RecordedKlines.from_frame("BTCUSDT", ftx_candles), "BTC", "USDT", hidden_ms=hidden)
    with FakeKlineServer(state) as srv:
        yield srv


def test_ccxt_fetch_ohlcv_pages_through_two_days_into_silver(
    tmp_path: Path, kline_server: FakeKlineServer, ftx_candles: pl.DataFrame
) -> None:
    lake = LakeResource(root=str(tmp_path / "lake"))
    # A day of this instrument already built from trades is kept (trades are the better source).
    kept = (
        ftx_candles.filter(pl.col("ts").dt.date() == date(2022, 1, 6))
        .with_columns(
            pl.lit("binance").alias("exchange"),
            pl.lit("BTC/USDT").alias("symbol"),
            pl.col("volume").alias("vwap"),
            pl.lit(1, pl.Int64).alias("trade_count"),
            pl.lit(None, pl.Float64).alias("buy_volume"),
            pl.lit(None, pl.Float64).alias("sell_volume"),
            pl.lit(False).alias("is_empty"),
            pl.lit("trades").alias("origin"),
        )
        .select(list(CANDLES))
    )
    lake.write_partition(kept, tables.CANDLES_1M, _part(BINANCE, "2022-01-06"))

    with dg.DagsterInstance.ephemeral() as instance:
        result = _import(
            tmp_path,
            instance,
            BINANCE,
            source="ccxt",
            since="2022-01-05",
            until="2022-01-07",
            api_url=kline_server.url,
            page_limit=1000,
        )
        assert result.success, _failure(result)
        mats = [e.materialization for e in result.get_asset_materialization_events()]
        assert [str(m.partition) for m in mats] == [f"2022-01-05|{BINANCE}"]
        skipped = _logs(instance, result, "bars built from trades kept")
        assert any(w.startswith(f"2022-01-06|{BINANCE}: skipped") for w in skipped)

    # Real pagination: 2 days x 1440 minutes in pages of at most 1000, walking forward from `since`.
    queries = kline_server.state.kline_queries
    assert len(queries) >= 3
    assert int(queries[0]["startTime"]) == int(datetime(2022, 1, 5, tzinfo=UTC).timestamp() * 1000)
    assert all(int(q["limit"]) == 1000 and q["interval"] == "1m" for q in queries)

    got = lake.read_partition(tables.CANDLES_1M, _part(BINANCE, "2022-01-05"))
    day = ftx_candles.filter(pl.col("ts").dt.date() == date(2022, 1, 5))
    assert got.height == 1440 and got["origin"].unique().to_list() == ["import:ccxt"]
    # The three minutes the exchange had no kline for are explicit empty bars at the previous close.
    gap = got.filter(pl.col("ts").dt.hour() == 10, pl.col("ts").dt.minute().is_between(6, 9))
    assert gap["is_empty"].to_list() == [False, True, True, True]
    assert gap["close"].to_list() == [day.filter(pl.col("ts") == gap["ts"][0])["close"].item()] * 4
    served = got.filter(~pl.col("is_empty")).join(day, on="ts", suffix="_file")
    assert served.height == 1437
    for col in ["open", "high", "low", "close", "volume"]:
        assert served[col].to_list() == served[f"{col}_file"].to_list(), col
    assert lake.read_partition(tables.CANDLES_1M, _part(BINANCE, "2022-01-06")).equals(kept)


def test_ccxt_import_of_an_unlisted_symbol_fails_clearly(
    tmp_path: Path, kline_server: FakeKlineServer
) -> None:
    with dg.DagsterInstance.ephemeral() as instance:
        msg = _failure(
            _import(
                tmp_path,
                instance,
                "binanceusdm.BTC-USDT-USDT",
                source="ccxt",
                since="2022-01-05",
                until="2022-01-06",
                api_url=kline_server.url,
            )
        )
    assert "BTC/USDT:USDT" in msg and "not listed" in msg


# ----------------------------------------------------------------------------------------------
# 'candles' instruments have no trades


def test_raw_trades_of_a_candles_instrument_fail_naming_the_instrument_and_source(tmp_path: Path) -> None:
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize(
            [ingest.raw_trades],
            partition_key=f"2022-01-05|{FTX}",
            instance=instance,
            raise_on_error=False,
            resources={
                "lake": LakeResource(root=str(tmp_path / "lake")),
                "trade_sources": TradeSourcesResource(),
            },
        )
    msg = _failure(result)
    assert FTX in msg and "candles" in msg


def test_candles_source_settings_are_validated(tmp_path: Path) -> None:
    path = tmp_path / "instruments.yaml"

    def parse(item: dict) -> None:
        parse_universe({"instruments": [item]}, path)

    parse({"exchange": "ftx", "symbol": "BTC/USD:USD", "source": "candles"})
    assert not load_universe().instrument(FTX).has_trades
    assert load_universe().instrument(BINANCE).has_trades
    with pytest.raises(SettingsError, match="format 'json' is not one of"):
        parse({"exchange": "ftx", "symbol": "BTC/USD:USD", "source": "candles", "format": "json"})
    with pytest.raises(SettingsError, match="volume_unit 'usd' is not one of"):
        parse({"exchange": "ftx", "symbol": "BTC/USD:USD", "source": "candles", "volume_unit": "usd"})
    with pytest.raises(SettingsError, match="only allowed with exchange 'sim'"):
        parse({"exchange": "sim", "symbol": "BTC/USD", "source": "candles"})
