"""The candle suite's liquidity floor by default ('auto'): derived from the instrument's own recent
history, so a real low-volume pair (Kraken BTC/USDC, Q1 2023, 27-64% of minutes traded: the old fixed
0.5 failed most of its days) passes, and a day that really lost most of its trades still fails, with
a message naming the threshold, the measured share and the setting to change."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from statistics import median

import dagster as dg
import polars as pl
import pytest

from crypto_platform import tables
from crypto_platform.checks.quality import candles_1m_suite
from crypto_platform.partitions import DayPartition
from crypto_platform.platform_settings import load_settings
from crypto_platform.quality.liquidity import AUTO_MIN_DAYS, liquidity_floor, non_empty_share
from crypto_platform.resources.lake import LakeResource
from crypto_platform.settings import INSTRUMENTS_ENV, Instrument, load_universe
from crypto_platform.transforms.ohlcv_import import read_kraken_ohlcvt, split_by_day
from crypto_platform_tests.conftest import SHARED_DATA
from crypto_platform_tests.test_checks import PARTITIONED, evaluation, meta, partition_tags, resources

KRAKEN_USDC = SHARED_DATA / "candles" / "kraken_2023q1" / "XBTUSDC_1.csv"
KEY = "kraken.BTC-USDC"  # an instrument key of the test universe (its entry turns the floor off)


@pytest.fixture
def default_floor_universe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """kraken BTC/USDC without a `min_non_empty_share` of its own: the default applies."""
    entry = {"exchange": "kraken", "symbol": "BTC/USDC", "source": "candles", "path": str(KRAKEN_USDC)}
    path = tmp_path / "instruments.yaml"
    path.write_text(json.dumps({"start_date": "2019-10-01", "instruments": [entry]}))
    monkeypatch.setenv(INSTRUMENTS_ENV, str(path))
    load_settings.cache_clear()  # as a process started with this file would read it
    load_universe.cache_clear()
    yield
    monkeypatch.undo()
    load_settings.cache_clear()
    load_universe.cache_clear()


def thinned(df: pl.DataFrame, keep_minutes: int) -> pl.DataFrame:
    """The day with only its first `keep_minutes` minutes traded (an outage ate the rest)."""
    gone = pl.int_range(pl.len()) >= keep_minutes
    flat = {
        c: pl.when(gone).then(pl.col("close")).otherwise(pl.col(c)) for c in ("open", "high", "low", "vwap")
    }
    zero = {
        c: pl.when(gone).then(0.0).otherwise(pl.col(c))
        for c in ("volume", "quote_volume", "buy_volume", "sell_volume")
    }
    return df.with_columns(
        **flat, **zero,
        trade_count=pl.when(gone).then(0).otherwise(pl.col("trade_count")),
        is_empty=pl.col("is_empty") | gone,
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.usefixtures("default_floor_universe")
def test_real_illiquid_pair_passes_by_default_and_a_broken_day_fails(tmp_path: Path) -> None:
    lake = LakeResource(root=str(tmp_path / "lake"))
    inst = load_universe().instrument(KEY)
    days = split_by_day(read_kraken_ohlcvt(KRAKEN_USDC, symbol="BTC/USDC"))
    for day in [date(2023, 1, 1) + timedelta(days=k) for k in range(16)]:
        lake.write_partition(days[day], tables.CANDLES_1M, DayPartition(inst, day))
    quiet, broken = DayPartition(inst, date(2023, 1, 15)), DayPartition(inst, date(2023, 1, 16))
    assert non_empty_share(days[quiet.day]) < 0.5  # the old fixed default failed this real day
    lake.write_partition(thinned(days[broken.day], 60), tables.CANDLES_1M, broken)

    def check(part: DayPartition) -> dg.AssetCheckEvaluation:
        with dg.DagsterInstance.ephemeral() as instance:
            res = dg.materialize(
                [*PARTITIONED, candles_1m_suite],
                selection=dg.AssetSelection.checks(candles_1m_suite),
                instance=instance,
                resources=resources(tmp_path),
                tags=partition_tags(part.key),
                raise_on_error=False,
            )
        return evaluation(res, "candles_1m_suite")

    ok = check(quiet)
    assert ok.passed, ok.description
    history = [non_empty_share(days[quiet.day - timedelta(days=k)]) for k in range(1, 15)]
    floor, how = liquidity_floor(quiet, None, True, lambda p: lake.read_partition(tables.CANDLES_1M, p))
    assert floor == round(0.5 * median(history), 4) and non_empty_share(days[quiet.day]) > floor
    assert "auto: 0.5 x the median share" in how

    bad = check(broken)
    assert not bad.passed and "non_empty_share" in meta(bad, "failed_expectations")
    measured = non_empty_share(thinned(days[broken.day], 60))
    assert f"{broken}: {measured:.3f} of its minutes traded, below the liquidity floor" in bad.description
    assert (
        "auto: 0.5 x the median share" in bad.description
        and "'min_non_empty_share' for kraken.BTC-USDC" in bad.description
    )


def test_floor_settings_fixed_off_auto_and_too_little_history() -> None:
    part = DayPartition(Instrument("kraken", "BTC/USDC", "candles", {}), date(2023, 1, 10))
    bars = pl.DataFrame({"is_empty": [False, True, True, True]})  # 25% traded

    def history(days: int):
        return lambda p: bars if (part.day - p.day).days <= days else None

    assert liquidity_floor(part, None, True, history(14)) == (
        0.125,
        "auto: 0.5 x the median share 0.250 of its previous 14 days",
    )
    floor, how = liquidity_floor(part, None, True, history(AUTO_MIN_DAYS - 1))
    assert floor == 0.0 and "no floor yet" in how  # measured (reported), never failing
    assert liquidity_floor(part, 0.9, True, history(14)) == (0.9, "fixed min_non_empty_share 0.9")
    off = DayPartition(Instrument("kraken", "BTC/USDC", "candles", {"min_non_empty_share": None}), part.day)
    assert liquidity_floor(off, 0.9, True, history(14))[0] is None
    assert liquidity_floor(off, 0.9, False, history(14))[0] == 0.9  # overrides not honoured
    odd = DayPartition(Instrument("kraken", "BTC/USDC", "candles", {"min_non_empty_share": "half"}), part.day)
    with pytest.raises(ValueError, match=r"kraken\.BTC-USDC: min_non_empty_share .half. is not a share"):
        liquidity_floor(odd, None, True, history(14))
