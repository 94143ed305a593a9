"""GX suites on real candles and trades: clean data passes, crafted faults fail with the right counts."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from crypto_platform import tables
from crypto_platform.lineage import new_id
from crypto_platform.partitions import DayPartition
from crypto_platform.quality.expectations import (
    SuiteResult,
    validate_bronze,
    validate_candles,
    warm_up,
)
from crypto_platform.resources.lake import LINEAGE_KEY, PART_FILE, LakeResource, Lineage
from crypto_platform.schemas import BRONZE_TRADES, CANDLES, conform
from crypto_platform.settings import load_universe

DAY = datetime(2022, 1, 10, tzinfo=UTC)
NEXT = DAY + timedelta(days=1)
TRADES_START = datetime(2024, 1, 1, tzinfo=UTC)
TRADES_END = TRADES_START + timedelta(days=1)
CANDLES_PX = ["open", "high", "low", "close", "vwap"]


def ftx_candles(shared_data: Path, start: datetime, end: datetime) -> pl.DataFrame:
    """FTX BTC-PERP 1-minute bars in [start, end) as silver CANDLES (volume in the file is quote volume)."""
    raw = pl.read_csv(shared_data / "candles" / "ftx_btcperp_1m_2022-01.csv")
    ts = pl.col("timestamp").str.to_datetime("%Y-%m-%d %H:%M:%S%.f", time_unit="us", time_zone="UTC")
    df = (
        raw.with_columns(ts.alias("ts"))
        .filter((pl.col("ts") >= start) & (pl.col("ts") < end))
        .select(
            pl.lit("ftx").alias("exchange"),
            pl.lit("BTC/USD:USD").alias("symbol"),
            "ts",
            "open",
            "high",
            "low",
            "close",
            (pl.col("volume") / pl.col("close")).alias("volume"),
            pl.col("volume").alias("quote_volume"),
            pl.col("close").alias("vwap"),
            pl.lit(None, pl.Int64).alias("trade_count"),
            pl.lit(None, pl.Float64).alias("buy_volume"),
            pl.lit(None, pl.Float64).alias("sell_volume"),
            (pl.col("volume") == 0).alias("is_empty"),
            pl.lit("import:ftx").alias("origin"),
        )
    )
    return conform(df, CANDLES, name="test candles")


def binance_trades(shared_data: Path) -> pl.DataFrame:
    """Binance spot BTC/USDT trades (2024-01-01 12:00-12:30) as BRONZE_TRADES."""
    raw = pl.read_parquet(shared_data / "trades" / "binance_spot_btcusdt_2024-01-01_1200-1230.parquet")
    side = pl.when(pl.col("is_buyer_maker") == 1).then(pl.lit("sell")).otherwise(pl.lit("buy"))
    df = raw.select(
        pl.lit("binance").alias("exchange"),
        pl.lit("BTC/USDT").alias("symbol"),
        pl.col("trade_id").cast(pl.String),
        pl.col("datetime").alias("ts"),
        "price",
        pl.col("quantity").alias("amount"),
        (pl.col("price") * pl.col("quantity")).alias("cost"),
        side.alias("side"),
    )
    return conform(df, BRONZE_TRADES, name="test trades")


@pytest.fixture(scope="module")
def candles(shared_data: Path) -> pl.DataFrame:
    warm_up()
    return ftx_candles(shared_data, DAY, NEXT)


@pytest.fixture(scope="module")
def trades(shared_data: Path) -> pl.DataFrame:
    warm_up()
    return binance_trades(shared_data)


def counts(result: SuiteResult) -> dict[str, int | None]:
    """unexpected_count of every failed outcome."""
    return {o.name: o.unexpected_count for o in result.failed}


def set_row(df: pl.DataFrame, row: int, **values: object) -> pl.DataFrame:
    idx = pl.int_range(pl.len()) == row
    return df.with_columns(
        [
            pl.when(idx).then(pl.lit(v, dtype=df.schema[c])).otherwise(pl.col(c)).alias(c)
            for c, v in values.items()
        ]
    )


# ----------------------------------------------------------------------------------------------
# candles


def test_clean_candles_pass(candles: pl.DataFrame) -> None:
    r = validate_candles(candles, DAY, NEXT)
    assert candles.height == 1440
    assert r.success, r.summary()
    assert r.row_count == 1440
    assert all(o.success for o in r.outcomes)
    names = {o.name for o in r.outcomes}
    assert {
        "columns",
        "dtypes_match_contract",
        "minute_unique",
        "high_ge_low",
        "open_ge_low",
        "close_le_high",
        "low_positive",
        "volume_non_negative",
        "ts_in_window",
        "non_empty_share",
        "symbol_not_null",
    } <= names
    assert r.outcome("non_empty_share").observed_value == "1.0000"
    assert r.outcome("ts_in_window").element_count == 1440
    meta = r.to_metadata()
    assert meta["success"] is True and meta["failed_expectations"] == "-"
    assert meta["minute_unique.unexpected_count"] == 0


def test_high_below_low_is_counted(candles: pl.DataFrame) -> None:
    row = candles.row(100, named=True)
    bad = set_row(candles, 100, high=row["low"] - 10.0)
    r = validate_candles(bad, DAY, NEXT)
    assert not r.success
    # high < low, and therefore also high < open and high < close; open/close >= low still hold
    assert counts(r) == {"high_ge_low": 1, "open_le_high": 1, "close_le_high": 1}
    assert r.outcome("high_ge_low").unexpected_examples[0].startswith(f"({row['low'] - 10.0}")


def test_non_positive_low_is_counted(candles: pl.DataFrame) -> None:
    # a zero low on one bar and a negative low on another: OHLC stay ordered, only the price is wrong
    bad = set_row(set_row(candles, 100, low=0.0), 200, low=-1.0)
    r = validate_candles(bad, DAY, NEXT)
    assert not r.success
    assert counts(r) == {"low_positive": 2}
    assert r.to_metadata()["low_positive.unexpected_count"] == 2


def test_duplicated_minute_and_null_key(candles: pl.DataFrame) -> None:
    dup = pl.concat([candles, candles.slice(500, 1)])
    r = validate_candles(dup, DAY, NEXT)
    assert counts(r) == {"minute_unique": 2}  # GX counts every row of a duplicated key
    assert "2022-01-10 08:20:00" in r.outcome("minute_unique").unexpected_examples[0]

    nulls = set_row(candles, 7, symbol=None)
    r = validate_candles(nulls, DAY, NEXT)
    assert counts(r) == {"symbol_not_null": 1}
    assert r.outcome("symbol_not_null").unexpected_examples == ("null",)


def test_prices_required_on_traded_bars_not_before_the_first_price(candles: pl.DataFrame) -> None:
    # a quiet start with no previous close: the leading empty bars have no price to carry forward
    lead = candles.with_columns(
        *[
            pl.when(pl.int_range(pl.len()) < 30).then(None).otherwise(pl.col(c)).alias(c)
            for c in ["open", "high", "low", "close", "vwap"]
        ],
        pl.when(pl.int_range(pl.len()) < 30).then(True).otherwise(pl.col("is_empty")).alias("is_empty"),
    )
    r = validate_candles(lead, DAY, NEXT)
    assert r.success, r.summary()
    # a traded bar without a close is a broken candle
    r = validate_candles(set_row(candles, 100, close=None), DAY, NEXT)
    assert counts(r) == {"close_not_null": 1, "close_ge_low": 1, "close_le_high": 1}


def test_ts_outside_window(candles: pl.DataFrame, shared_data: Path) -> None:
    spill = ftx_candles(shared_data, NEXT, NEXT + timedelta(minutes=3))
    r = validate_candles(pl.concat([candles, spill]), DAY, NEXT)
    assert counts(r) == {"ts_in_window": 3}
    # the window is a parameter of the cached suite: the same frame passes with a wider window
    assert validate_candles(pl.concat([candles, spill]), DAY, NEXT + timedelta(hours=1)).success


def test_non_empty_share(candles: pl.DataFrame) -> None:
    first = candles.row(0, named=True)
    empty_bar = {
        "open": first["close"],
        "high": first["close"],
        "low": first["close"],
        "volume": 0.0,
        "quote_volume": 0.0,
        "is_empty": True,
    }
    n_empty = 900  # 540 / 1440 = 37.5% non-empty
    thin = candles.with_columns(
        [
            pl.when(pl.int_range(pl.len()) < n_empty).then(pl.lit(v)).otherwise(pl.col(c)).alias(c)
            for c, v in empty_bar.items()
        ]
    )
    r = validate_candles(thin, DAY, NEXT, min_non_empty_share=0.5)
    assert counts(r) == {"non_empty_share": n_empty}
    assert r.outcome("non_empty_share").observed_value == f"{540 / 1440:.4f}"
    assert validate_candles(thin, DAY, NEXT, min_non_empty_share=0.3).success
    skipped = validate_candles(thin, DAY, NEXT, min_non_empty_share=None)
    assert skipped.success and "non_empty_share" not in {o.name for o in skipped.outcomes}


def test_open_close_range_is_only_checked_on_traded_bars(candles: pl.DataFrame) -> None:
    row = candles.row(3, named=True)
    out_of_range = {"open": row["high"] + 5.0}
    on_traded = validate_candles(set_row(candles, 3, **out_of_range), DAY, NEXT)
    assert counts(on_traded) == {"open_le_high": 1}
    on_empty = validate_candles(set_row(candles, 3, is_empty=True, **out_of_range), DAY, NEXT)
    assert on_empty.success, on_empty.summary()


def test_schema_faults(candles: pl.DataFrame) -> None:
    r = validate_candles(candles.drop("vwap"), DAY, NEXT)
    assert not r.outcome("columns").success
    assert "missing=['vwap']" in (r.outcome("columns").observed_value or "")
    assert not r.outcome("vwap_type").success and r.outcome("vwap_type").error

    ns = candles.with_columns(pl.col("ts").cast(pl.Datetime("ns", "UTC")))
    r = validate_candles(ns, DAY, NEXT)
    assert counts(r) == {"dtypes_match_contract": 1}
    assert r.outcome("dtypes_match_contract").unexpected_examples[0].startswith("ts: Datetime(time_unit='ns'")

    with pytest.raises(ValueError, match="timezone-aware"):
        validate_candles(candles, DAY.replace(tzinfo=None), NEXT)
    with pytest.raises(ValueError, match="min_non_empty_share"):
        validate_candles(candles, DAY, NEXT, min_non_empty_share=1.5)


# ----------------------------------------------------------------------------------------------
# bronze trades


def test_clean_trades_pass(trades: pl.DataFrame) -> None:
    assert trades.height == 16_702
    r = validate_bronze(trades, TRADES_START, TRADES_END)
    assert r.success, r.summary()
    assert r.outcome("trade_id_unique").element_count == 16_702


def test_bad_trades_are_counted(trades: pl.DataFrame) -> None:
    bad = set_row(trades, 10, price=-1.0)
    bad = set_row(bad, 11, amount=0.0)
    bad = set_row(bad, 12, trade_id=None)
    bad = pl.concat([bad, trades.slice(20, 1)])  # a duplicated trade id
    late = trades.slice(30, 2).with_columns(pl.col("ts") + timedelta(days=1), pl.col("trade_id") + "-late")
    bad = pl.concat([bad, late])
    r = validate_bronze(bad, TRADES_START, TRADES_END)
    assert counts(r) == {
        "trade_id_not_null": 1,
        "price_positive": 1,
        "amount_positive": 1,
        "trade_id_unique": 2,
        "ts_in_window": 2,
    }
    assert r.outcome("price_positive").unexpected_examples == ("-1.0",)
    meta = r.to_metadata()
    assert meta["success"] is False
    assert meta["ts_in_window.unexpected_count"] == 2
    assert "price_positive" in str(meta["failed_expectations"])


def test_unknown_side(trades: pl.DataFrame) -> None:
    # Off-contract frame (side as free text): both the type and the value set fail.
    loose = trades.with_columns(pl.col("side").cast(pl.String))
    loose = set_row(loose, 5, side="unknown")
    r = validate_bronze(loose, TRADES_START, TRADES_END)
    assert counts(r) == {"side_type": None, "dtypes_match_contract": 1, "side_in_set": 1}
    assert r.outcome("side_in_set").unexpected_examples == ("unknown",)


def test_empty_partition_passes() -> None:
    r = validate_bronze(pl.DataFrame(schema=BRONZE_TRADES), TRADES_START, TRADES_END)
    assert r.success and r.row_count == 0


@pytest.mark.slow
def test_no_network_and_no_analytics() -> None:
    """Importing GX, building the context and validating opens no connection (fresh interpreter)."""
    script = textwrap.dedent(
        """
        import socket
        attempts = []
        real_connect = socket.socket.connect
        def guard(self, address):
            if not (isinstance(address, str) or str(address[0]) in ("127.0.0.1", "::1", "localhost")):
                attempts.append(address)
                raise OSError("network disabled in test")
            return real_connect(self, address)
        socket.socket.connect = guard  # socket.create_connection and every HTTP client go through it
        from datetime import UTC, datetime, timedelta
        import polars as pl
        from crypto_platform.quality import expectations as q
        from crypto_platform.schemas import CANDLES
        start = datetime(2022, 1, 10, tzinfo=UTC)
        r = q.validate_candles(pl.DataFrame(schema=CANDLES), start, start + timedelta(days=1))
        assert r.success, r.summary()
        ctx = q._runtime().context
        print("analytics", ctx.config.analytics_enabled, "attempts", len(attempts))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "analytics False attempts 0" in out.stdout


# ----------------------------------------------------------------------------------------------
# the polars contract (live runs' blocking gate) against the GX suites


def _verdicts(result: SuiteResult) -> tuple[bool, dict[str, int | None]]:
    """(success, unexpected count of every failed expectation that counts rows)."""
    return result.success, {o.name: o.unexpected_count for o in result.failed if not o.name.endswith("_type")}


def test_polars_contract_gives_the_gx_verdicts_on_every_fault(
    candles: pl.DataFrame, trades: pl.DataFrame, shared_data: Path
) -> None:
    from crypto_platform.quality.contract import check_bronze, check_candles

    row = candles.row(100, named=True)
    spill = ftx_candles(shared_data, NEXT, NEXT + timedelta(minutes=3))
    lead = candles.with_columns(
        *[pl.when(pl.int_range(pl.len()) < 30).then(None).otherwise(pl.col(c)).alias(c) for c in CANDLES_PX],
        pl.when(pl.int_range(pl.len()) < 30).then(True).otherwise(pl.col("is_empty")).alias("is_empty"),
    )
    thin = candles.with_columns((pl.int_range(pl.len()) % 10 != 0).alias("is_empty"))
    candle_cases = {
        "clean": candles,
        "high below low": set_row(candles, 100, high=row["low"] - 10.0),
        "non-positive low": set_row(set_row(candles, 100, low=0.0), 200, low=-1.0),
        "duplicated minute": pl.concat([candles, candles.slice(500, 1)]),
        "null symbol": set_row(candles, 7, symbol=None),
        "no close on a traded bar": set_row(candles, 100, close=None),
        "leading bars without a price": lead,
        "outside the window": pl.concat([candles, spill]),
        "open above high on a traded bar": set_row(candles, 3, open=candles.row(3, named=True)["high"] + 5),
        "ns timestamps": candles.with_columns(pl.col("ts").cast(pl.Datetime("ns", "UTC"))),
        "thin": thin,
    }
    for name, frame in candle_cases.items():
        gx, contract = validate_candles(frame, DAY, NEXT), check_candles(frame, DAY, NEXT)
        assert _verdicts(contract) == _verdicts(gx), name
    assert (
        not check_candles(thin, DAY, NEXT).success
        and check_candles(thin, DAY, NEXT, min_non_empty_share=0.05).success
    )

    bad = set_row(set_row(set_row(trades, 10, price=-1.0), 11, amount=0.0), 12, trade_id=None)
    late = trades.slice(30, 2).with_columns(pl.col("ts") + timedelta(days=1), pl.col("trade_id") + "-late")
    trade_cases = {
        "clean": trades,
        "bad values, duplicate id, late trades": pl.concat([bad, trades.slice(20, 1), late]),
        "unknown side": set_row(trades.with_columns(pl.col("side").cast(pl.String)), 5, side="unknown"),
        "one id on two symbols (not a duplicate)": pl.concat(
            [trades, trades.slice(20, 1).with_columns(pl.lit("ETH/USD").alias("symbol"))]
        ),
        "a duplicate on two symbols": pl.concat(
            [trades, *[trades.slice(20, 1).with_columns(pl.lit("ETH/USD").alias("symbol"))] * 2]
        ),
        "empty": pl.DataFrame(schema=BRONZE_TRADES),
    }
    for name, frame in trade_cases.items():
        gx, contract = (
            validate_bronze(frame, TRADES_START, TRADES_END),
            check_bronze(frame, TRADES_START, TRADES_END),
        )
        assert _verdicts(contract) == _verdicts(gx), name
        assert {o.name for o in contract.outcomes} == {o.name for o in gx.outcomes}, name
    missing = check_bronze(trades.drop("side"), TRADES_START, TRADES_END)
    assert not missing.success and "missing=['side']" in (missing.outcome("columns").observed_value or "")


# ----------------------------------------------------------------------------------------------
# the contract on an open day's new delta only (checks/bronze_cells.py, quality/contract_delta.py)


BINANCE_DAY = DayPartition(load_universe().instrument("binance.BTC-USDT"), TRADES_START.date())


def open_day(tmp_path: Path, base: pl.DataFrame) -> LakeResource:
    """A lake whose bronze partition BINANCE_DAY is `base` (with a lineage, so deltas can follow)."""
    lake = LakeResource(root=str(tmp_path / "lake"))
    lake.store.write(bronze_key(lake), base, {LINEAGE_KEY: Lineage(1, id=new_id()).to_json()})
    return lake


def bronze_key(lake: LakeResource) -> str:
    return f"{lake.part_key(tables.BRONZE_TRADES, BINANCE_DAY)}/{PART_FILE}"


def append(lake: LakeResource, delta: pl.DataFrame) -> None:
    """One tick's delta, committed as the bronze asset commits it."""
    lake.store.append(bronze_key(lake), delta, {LINEAGE_KEY: Lineage(2, id=new_id()).to_json()})


def judged(lake: LakeResource, *, gx: bool = False) -> SuiteResult:
    """The bronze check's verdict on BINANCE_DAY (contract engine, incremental when proven), checked
    against a full validation of the same stored partition: every outcome equal (counts, element
    counts, examples, in the same order) and, with `gx`, on verdict and counts the GX suite too."""
    from crypto_platform.checks.bronze_cells import validate_bronze_cell
    from crypto_platform.quality.contract import check_bronze

    stored = lake.read_partition(tables.BRONZE_TRADES, BINANCE_DAY)
    full = check_bronze(stored, TRADES_START, TRADES_END)
    got = validate_bronze_cell(lake, BINANCE_DAY, check_bronze, incremental=True)
    assert got is not None
    assert (got.success, got.row_count, got.outcomes) == (full.success, full.row_count, full.outcomes)
    assert not gx or _verdicts(got) == _verdicts(validate_bronze(stored, TRADES_START, TRADES_END))
    return got


def how(result: SuiteResult) -> tuple[str, int]:
    return result.parameters["validation"], int(result.parameters["rows_validated"])


def test_the_contract_on_a_delta_gives_the_full_verdict_on_every_fault(
    trades: pl.DataFrame, tmp_path: Path
) -> None:
    from crypto_platform.checks.bronze_cells import proof_key

    day = trades.sort(list(tables.BRONZE_TRADES.order))
    lake = open_day(tmp_path, day.slice(0, 12_000))
    first = judged(lake)  # a base that was never validated: full
    assert first.success and how(first) == ("full", 12_000)
    assert first.parameters["why_full"] == "no proof that the stored files passed"
    append(lake, day.slice(12_000, 2_000))
    assert how(judged(lake)) == ("incremental", 2_000)
    proof_file = lake.root_path / proof_key(lake, BINANCE_DAY)
    recorded = proof_file.stat().st_mtime_ns
    assert how(judged(lake)) == ("incremental", 0)  # nothing new: the proof covers every file...
    assert proof_file.stat().st_mtime_ns == recorded  # ...and stays as it is

    # faults inside the delta, a trade id of the base and one of the earlier delta sent again (twice)
    faults = set_row(
        set_row(set_row(day.slice(14_000, 1_000), 10, price=-1.0), 11, amount=0.0), 12, trade_id=None
    )
    late = day.slice(14_500, 2).with_columns(pl.col("ts") + timedelta(days=1), pl.col("trade_id") + "-late")
    again = [day.slice(100, 1), day.slice(13_000, 1), day.slice(13_000, 1), faults.slice(500, 1)]
    append(lake, pl.concat([faults, late, *again]))
    bad = judged(lake, gx=True)
    assert how(bad) == ("incremental", 1_006)
    assert counts(bad) == {
        "trade_id_not_null": 1,
        "price_positive": 1,
        "amount_positive": 1,
        "trade_id_unique": 2 + 3 + 2,  # base + delta, earlier delta + two re-sends, within the delta
        "ts_in_window": 2,
    }
    assert bad.row_count == 15_006 and bad.outcome("price_positive").element_count == 15_006

    append(lake, day.slice(15_000, 500))  # after a failed verdict nothing is proven: full again
    after = judged(lake, gx=True)
    assert how(after) == ("full", 15_506) and after.parameters["why_full"] == "the last validation failed"
    assert counts(after) == counts(bad)


def test_a_base_changed_after_validation_or_compacted_is_validated_whole(
    trades: pl.DataFrame, tmp_path: Path
) -> None:
    day = trades.sort(list(tables.BRONZE_TRADES.order))
    lake = open_day(tmp_path, day.slice(0, 10_000))
    judged(lake)
    append(lake, day.slice(10_000, 1_000))
    assert how(judged(lake)) == ("incremental", 1_000)

    # the base rewritten in place after it passed (same footer, so its deltas stay listed)
    base = Path(lake.store.current(bronze_key(lake)).uri)
    footer = pl.read_parquet_metadata(base)
    set_row(day.slice(0, 10_000), 42, price=-5.0).write_parquet(base, metadata=footer)
    append(lake, day.slice(11_000, 1_000))
    changed = judged(lake, gx=True)  # the delta alone passes; the whole partition does not
    assert how(changed) == ("full", 12_000) and counts(changed) == {"price_positive": 1}
    assert changed.parameters["why_full"].startswith("the files validated changed")

    # the compaction: one new base, then a tick on top of it
    lake.store.write(bronze_key(lake), day.slice(0, 12_000), {LINEAGE_KEY: Lineage(3, id=new_id()).to_json()})
    compacted = judged(lake)
    assert compacted.success and how(compacted) == ("full", 12_000)
    append(lake, pl.concat([day.slice(12_000, 1_000), day.slice(5, 1)]))  # a compacted trade sent again
    dup = judged(lake, gx=True)
    assert how(dup) == ("incremental", 1_001) and counts(dup) == {"trade_id_unique": 2}


def test_a_proof_of_other_rules_or_a_damaged_one_proves_nothing(trades: pl.DataFrame, tmp_path: Path) -> None:
    from crypto_platform.checks.bronze_cells import proof_key, read_proof

    day = trades.sort(list(tables.BRONZE_TRADES.order))
    lake = open_day(tmp_path, day.slice(0, 5_000))
    judged(lake)
    proof = read_proof(lake, BINANCE_DAY)
    assert proof is not None and proof.passed and proof.rows == 5_000 and len(proof.stamps) == 1
    lake.store.write_json(proof_key(lake, BINANCE_DAY), {**proof.to_json(), "version": "bronze_trades/0"})
    append(lake, day.slice(5_000, 100))
    assert judged(lake).parameters["why_full"].startswith("proof of other rules")
    (lake.root_path / proof_key(lake, BINANCE_DAY)).write_text("{not json")
    append(lake, day.slice(5_100, 100))
    assert how(judged(lake)) == ("full", 5_200)
    append(lake, day.slice(5_200, 100))
    assert how(judged(lake)) == ("incremental", 100)


@pytest.mark.slow
def test_on_s3_a_delta_is_validated_alone_until_the_compaction(
    trades: pl.DataFrame, s3_endpoint: str
) -> None:
    from crypto_platform_tests.fixtures import s3_lake

    day = trades.sort(list(tables.BRONZE_TRADES.order))
    lake = s3_lake(s3_endpoint)
    lake.store.write(bronze_key(lake), day.slice(0, 8_000), {LINEAGE_KEY: Lineage(1, id=new_id()).to_json()})
    assert how(judged(lake)) == ("full", 8_000)
    append(lake, day.slice(8_000, 1_000))
    assert how(judged(lake)) == ("incremental", 1_000)
    append(lake, pl.concat([day.slice(9_000, 1_000), day.slice(3, 1)]))
    dup = judged(lake)
    assert how(dup) == ("incremental", 1_001) and counts(dup) == {"trade_id_unique": 2}
    lake.store.write(bronze_key(lake), day.slice(0, 10_000), {LINEAGE_KEY: Lineage(3, id=new_id()).to_json()})
    assert how(judged(lake)) == ("full", 10_000)
    append(lake, day.slice(10_000, 500))
    assert how(judged(lake)) == ("incremental", 500)


@pytest.mark.slow
def test_the_check_says_which_validation_ran_and_on_how_many_rows(
    trades: pl.DataFrame, tmp_path: Path
) -> None:
    import dagster as dg

    from crypto_platform.checks.quality import bronze_trades_suite
    from crypto_platform_tests.fixtures import PARTITIONED, evaluation, meta, partition_tags, resources

    day = trades.sort(list(tables.BRONZE_TRADES.order))
    lake = open_day(tmp_path, day.slice(0, 12_000))
    op = "bronze__trades_bronze_trades_suite"
    with dg.DagsterInstance.ephemeral() as instance:

        def check(engine: str = "contract") -> dg.AssetCheckEvaluation:
            res = dg.materialize(
                [*PARTITIONED, bronze_trades_suite],
                selection=dg.AssetSelection.checks(bronze_trades_suite),
                instance=instance,
                resources=resources(tmp_path),
                tags=partition_tags(BINANCE_DAY.key),
                run_config={"ops": {op: {"config": {"engine": engine}}}},
                raise_on_error=False,
            )
            return evaluation(res, "bronze_trades_suite")

        first = check()
        assert first.passed and meta(first, "validation_mode") == "full"
        assert meta(first, "rows_validated") == meta(first, "row_count") == 12_000
        assert meta(first, "why_full") == f"{BINANCE_DAY.key}: no proof that the stored files passed"
        append(lake, set_row(day.slice(12_000, 2_000), 3, price=0.0))
        tick = check()
        assert not tick.passed and meta(tick, "validation_mode") == "incremental"
        assert meta(tick, "rows_validated") == 2_000 and meta(tick, "row_count") == 14_000
        assert meta(tick, "price_positive.unexpected_count") == 1
        gx = check("great_expectations")  # the reference suite always reads the whole partition
        assert (
            not gx.passed and meta(gx, "validation_mode") == "full" and meta(gx, "rows_validated") == 14_000
        )
        assert meta(gx, "price_positive.unexpected_count") == 1


def test_a_delta_off_the_schema_gets_the_full_reads_named_error(trades: pl.DataFrame, tmp_path: Path) -> None:
    from crypto_platform.checks.bronze_cells import validate_bronze_cell
    from crypto_platform.quality.contract import check_bronze
    from crypto_platform.resources.lake import LakeReadError

    day = trades.sort(list(tables.BRONZE_TRADES.order))
    lake = open_day(tmp_path, day.slice(0, 5_000))
    judged(lake)
    append(lake, day.slice(5_000, 100).with_columns(pl.col("price").cast(pl.Float32)))
    with pytest.raises(LakeReadError, match="bronze/trades"):
        lake.read_partition(tables.BRONZE_TRADES, BINANCE_DAY)  # today's full read
    with pytest.raises(LakeReadError, match="bronze/trades"):  # the delta alone would pass: not judged alone
        validate_bronze_cell(lake, BINANCE_DAY, check_bronze, incremental=True)
