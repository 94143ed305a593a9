"""Silver 1-minute candles as the gold assets read them from the lake, and the per-day gold frames.

Silver is read as it is: a minute absent from silver is unknown time and gold never fills it
(`transforms.gold_candles.priced_candles`). Corrupted or missing silver partitions fail the run
with the partition named, even when the candles_1m_suite check did not run.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import date, timedelta

import dagster as dg
import polars as pl

from crypto_platform import tables
from crypto_platform.assets.open_day import stored_infos
from crypto_platform.lineage import DERIVATION, Lineage, new_id
from crypto_platform.partitions import DayPartition
from crypto_platform.resources.lake import LakeResource, WriteInfo
from crypto_platform.settings import Instrument, load_universe
from crypto_platform.transforms.candles import candle_violations, describe_violations
from crypto_platform.transforms.features import (
    FEATURES_SCHEMA,
    INDEX_COLUMNS,
    LOOKBACK_MINUTES,
    segmented_features,
)
from crypto_platform.transforms.gold_candles import priced_candles
from crypto_platform.transforms.incremental import (
    InputStamp,
    features_restart,
    features_tail,
    splice_rows,
    stamp_of,
)
from crypto_platform.transforms.labels import LABEL_COLUMNS, forward_return_labels

HISTORY_DAYS = math.ceil(LOOKBACK_MINUTES / (24 * 60))  # earlier days a feature day needs


def read_candles(
    lake: LakeResource, inst: Instrument, day: date, offsets: range
) -> tuple[pl.DataFrame | None, list[InputStamp]]:
    """Priced 1-minute candles of one instrument over days relative to `day` (None: none written), and
    what identifies each partition read (data and lineage from one open file each)."""
    frames, stamps = [], []
    for d in offsets:
        part = DayPartition(inst, day + timedelta(days=d))
        one, lineage = lake.read_with_lineage(tables.CANDLES_1M, part)
        stamps.append(InputStamp(part.key, stamp_of(one, lineage), lineage))
        if one is not None:
            frames.append(one)
    df = pl.concat(frames, how="vertical") if frames else None
    if df is not None and (bad := candle_violations(df)).height:  # even when candles_1m_suite did not run
        part = DayPartition(inst, bad["ts"].min().date())
        raise dg.Failure(
            f"silver/candles_1m {part} is corrupted, refusing to build gold from it: "
            f"{describe_violations(bad.filter(pl.col('ts').dt.date() == part.day))}. Re-materialize or "
            "re-import that partition (the candles_1m_suite check reports every expectation)."
        )
    return (None if df is None else priced_candles(df)), stamps


def silver_candles(lake: LakeResource, inst: Instrument, day: date, offsets: range) -> pl.DataFrame | None:
    """Priced 1-minute candles of one instrument over days relative to `day` (None: none written)."""
    return read_candles(lake, inst, day, offsets)[0]


def day_rows(df: pl.DataFrame, part: DayPartition) -> pl.DataFrame:
    """The rows of one (instrument, UTC day) partition."""
    return df.filter(
        (pl.col("exchange") == part.instrument.exchange)
        & (pl.col("symbol") == part.instrument.symbol)
        & (pl.col("ts") >= part.start)
        & (pl.col("ts") < part.end)
    )


def require_silver(lake: LakeResource, part: DayPartition) -> None:
    """Fail naming the partition when silver/candles_1m has not been written for it."""
    if not lake.has_partition(tables.CANDLES_1M, part):
        raise dg.Failure(
            f"silver/candles_1m {part} is not materialized; materialize the silver layer (or import its "
            "OHLCV history with import_candles_job) first"
        )


class FeatureRunMemo:
    """What one run of gold/features reads and computes once for all its partitions: each instrument's
    candles, and the features of an exchange's instruments from one restart minute. Every partition of
    an exchange reads all its peers (cross-symbol features), so without this a tick over N instruments
    read N x N candle partitions and computed the exchange's features N times."""

    def __init__(self) -> None:
        self._reads: dict[tuple[Instrument, date], tuple[pl.DataFrame | None, list[InputStamp]]] = {}
        self._features: dict[tuple, pl.DataFrame] = {}

    def candles(self, lake: LakeResource, inst: Instrument, day: date) -> tuple[pl.DataFrame | None, list]:
        """`read_candles` of one instrument over the day and HISTORY_DAYS before, read once per run."""
        if (inst, day) not in self._reads:
            self._reads[inst, day] = read_candles(lake, inst, day, range(-HISTORY_DAYS, 1))
        df, stamps = self._reads[inst, day]
        return df, list(stamps)

    def features(
        self, stamps: list[InputStamp], since: object, compute: Callable[[], pl.DataFrame]
    ) -> pl.DataFrame:
        """`compute()` once per set of input partitions (by their stamps) and restart minute."""
        key = (tuple(sorted((s.name, s.stamp) for s in stamps)), since)
        if key not in self._features:
            self._features[key] = compute()
        return self._features[key]


def feature_candles(
    lake: LakeResource, part: DayPartition, memo: FeatureRunMemo | None = None
) -> tuple[pl.DataFrame | None, list[InputStamp]]:
    """The candles a feature day reads: its own (None when it has no priced minute that day) plus the
    same exchange's peers, over the day and the HISTORY_DAYS before; and each partition's stamp."""
    require_silver(lake, part)
    memo = memo or FeatureRunMemo()
    own, stamps = memo.candles(lake, part.instrument, part.day)
    if own is None or day_rows(own, part).is_empty():
        return None, stamps
    frames = [own]
    for inst in load_universe().instruments:
        if inst.exchange == part.instrument.exchange and inst != part.instrument:
            peer, peer_stamps = memo.candles(lake, inst, part.day)
            stamps += peer_stamps
            if peer is not None and peer.height:
                frames.append(peer)
    return pl.concat(frames, how="vertical"), stamps


def derive_features(
    lake: LakeResource, part: DayPartition, memo: FeatureRunMemo | None = None
) -> tuple[pl.DataFrame, WriteInfo, int]:
    """Features of one (instrument, day), committed with the ids of the candles they read. Stored
    features computed from the candles one tick before keep their rows before the first minute any of
    those candles changed (`transforms.incremental`); returns the features, the write, rows kept. Pass
    one `memo` to every partition of a run (same day, same exchange): each input is read once."""
    memo = memo or FeatureRunMemo()
    candles, stamps = feature_candles(lake, part, memo)
    stored, lineage = lake.read_with_lineage(tables.FEATURES, part)
    since = features_restart(lineage, stamps) if stored is not None and candles is not None else True
    kept, changed = 0, None
    if candles is None:
        df = pl.DataFrame(schema=FEATURES_SCHEMA)  # no priced minute that day (see priced_candles)
    elif since is True:
        df = day_rows(memo.features(stamps, True, lambda: segmented_features(candles)), part)
    elif since is False:  # no candle it read changed: a re-run rewrites nothing
        return stored, stored_infos(lake, part, {tables.FEATURES: stored})[0], stored.height  # type: ignore
    else:
        tail = memo.features(stamps, since, lambda: features_tail(candles, since))  # type: ignore[arg-type]
        df, kept = splice_rows(stored, day_rows(tail, part), since)  # type: ignore[arg-type]
        changed = since
    base = lineage.id if lineage is not None and since is not True else None
    inputs = tuple((s.name, s.stamp) for s in stamps)
    new = Lineage(0, id=new_id(), base=base, changed_from=changed, inputs=inputs, derivation=DERIVATION)
    infos = lake.commit_derived({tables.FEATURES: df}, part, new, inputs_current=lambda: True)
    assert infos is not None  # version 0 never loses to a stored one
    return df, infos[0], kept


def labels_for(lake: LakeResource, part: DayPartition, horizons: list[int]) -> pl.DataFrame:
    """Labels of one (instrument, day) for each horizon; the next day's candles complete the last ones."""
    require_silver(lake, part)
    candles = silver_candles(lake, part.instrument, part.day, range(-1, 2))  # day before: leading empties
    if candles is None or day_rows(candles, part).is_empty():
        return pl.DataFrame(schema=tables.LABELS.schema)
    frames = [day_rows(forward_return_labels(candles, h), part) for h in horizons]
    return pl.concat(frames, how="vertical").select(LABEL_COLUMNS).sort("horizon", *INDEX_COLUMNS)


def closes_for(lake: LakeResource, part: DayPartition) -> pl.DataFrame:
    """The priced candles of one partition as its features saw them (leading empty minutes priced
    from the day before), for the prices implied by forecasts."""
    require_silver(lake, part)
    candles = silver_candles(lake, part.instrument, part.day, range(-1, 1))
    return day_rows(candles, part)  # type: ignore[arg-type]  # present: require_silver passed
