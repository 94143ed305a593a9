"""Point-in-time training sets: features joined to the labels that were known at a cut-off.

`build_training_set` is the whole gold/training_set computation without Dagster: the labels of one
horizon known at `as_of`, the features of the trailing window they end, the join, the per-instrument
summary and the feature days that lack labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import polars as pl

from crypto_platform.schemas import INDEX_COLUMNS, KEYS
from crypto_platform.transforms.features import RETURN_HORIZONS

MINUTE = timedelta(minutes=1)
DEFAULT_HORIZON = 5
# Labels are written for every horizon the model can be trained on (the momentum baseline of a
# horizon h is the feature ret_h), so the training set's horizon can never disagree with the labels.
LABEL_HORIZONS: tuple[int, ...] = RETURN_HORIZONS


class TrainingSetError(ValueError):
    """The training set cannot be built as asked; the message names the input and the fix."""


@dataclass(frozen=True)
class TrainingSet:
    """The labelled rows of one horizon over a trailing window, and what describes them."""

    rows: pl.DataFrame  # features + horizon, label, label_available_at; sorted by time
    summary: pl.DataFrame  # per instrument: see `training_summary`
    unlabelled: pl.DataFrame  # (exchange, symbol, day) feature days in the window without labels
    horizon: int
    as_of: datetime
    start: datetime  # the window [start, end)
    end: datetime


def training_frame(
    features: pl.DataFrame,
    labels: pl.DataFrame,
    as_of: datetime | None = None,
    *,
    horizon: int | None = None,
) -> pl.DataFrame:
    """Features + label rows whose label was available at `as_of` (None: all), ordered by time."""
    if horizon is not None:
        labels = labels.filter(pl.col("horizon") == horizon)
    horizons = labels["horizon"].unique().to_list()
    if len(horizons) > 1:
        raise ValueError(f"training_frame: labels hold several horizons {sorted(horizons)}; pass horizon=")
    lab = labels.select(*INDEX_COLUMNS, "horizon", "label", "label_available_at").filter(
        pl.col("label").is_not_null() & pl.col("label").is_finite()
    )
    if as_of is not None:
        lab = lab.filter(pl.col("label_available_at") <= _utc(as_of))
    overlap = [c for c in lab.columns if c in features.columns and c not in INDEX_COLUMNS]
    if overlap:
        raise ValueError(f"training_frame: features already hold label columns {overlap}")
    return features.join(lab, on=INDEX_COLUMNS, how="inner").sort(["ts", "exchange", "symbol"])


def rolling_window(df: pl.DataFrame, end: datetime, days: float, *, column: str = "ts") -> pl.DataFrame:
    """The rows with `end - days <= ts < end`: a trailing training window of fixed length."""
    stop = _utc(end)
    return df.filter((pl.col(column) >= stop - timedelta(days=days)) & (pl.col(column) < stop))


def check_training_config(horizon: int, window_days: float) -> None:
    """Fail on a horizon the labels do not have or a window that is not a positive length."""
    if horizon not in LABEL_HORIZONS:
        raise TrainingSetError(
            f"training set: horizon_minutes {horizon} is not one of {list(LABEL_HORIZONS)} (the labels' "
            "horizons; the momentum baseline of horizon h is the feature ret_h)"
        )
    if window_days <= 0:
        raise TrainingSetError(f"training set: window_days must be > 0, got {window_days}")


def build_training_set(
    features: pl.LazyFrame,
    labels: pl.LazyFrame,
    *,
    horizon: int,
    window_days: float,
    as_of: datetime,
    instruments: Sequence[str] = (),
) -> TrainingSet:
    """Labels of `horizon` known at `as_of` joined to the features of the `window_days` they end.

    The window ends one minute after the newest known label. `instruments` only names the selection
    in errors (the frames are already filtered to it).
    """
    check_training_config(horizon, window_days)
    labels_df = labels.filter(
        (pl.col("horizon") == horizon) & (pl.col("label_available_at") <= as_of)
    ).collect()
    if labels_df.is_empty():
        present = sorted(labels.select(pl.col("horizon").unique()).collect()["horizon"].to_list())
        raise TrainingSetError(
            f"gold/labels holds no {horizon}-minute label known at {as_of:%Y-%m-%d %H:%M} UTC"
            f"{' for ' + ', '.join(instruments) if instruments else ''} (horizons present: {present}); "
            f"materialize gold/labels with {horizon} among its horizons"
        )
    end = labels_df["ts"].max() + MINUTE
    start = end - timedelta(days=window_days)
    feats = features.filter((pl.col("ts") >= start) & (pl.col("ts") < end)).collect()
    rows = rolling_window(training_frame(feats, labels_df, as_of, horizon=horizon), end, window_days)
    if rows.is_empty():
        raise TrainingSetError(f"the training window [{start}, {end}) holds no labelled feature rows")
    return TrainingSet(
        rows=rows,
        summary=training_summary(rows, feats, horizon=horizon, as_of=as_of),
        unlabelled=unlabelled_days(feats, labels_df),
        horizon=horizon,
        as_of=as_of,
        start=start,
        end=end,
    )


def training_summary(
    rows: pl.DataFrame, features: pl.DataFrame, *, horizon: int, as_of: datetime
) -> pl.DataFrame:
    """Per instrument: labelled rows, time span, label mean/std/share up, and the share of feature rows
    that made it into the set (labelled_share = rows / feature_rows)."""
    feature_rows = features.group_by(KEYS).len("feature_rows")
    return (
        rows.group_by(KEYS)
        .agg(
            pl.len().alias("rows"),
            pl.col("ts").min().alias("first_ts"),
            pl.col("ts").max().alias("last_ts"),
            pl.col("label").mean().alias("label_mean"),
            pl.col("label").std().alias("label_std"),
            (pl.col("label") > 0).mean().alias("share_up"),
        )
        .join(feature_rows, on=KEYS, how="left")
        .with_columns(
            (pl.col("rows") / pl.col("feature_rows")).alias("labelled_share"),
            pl.lit(horizon, pl.Int32).alias("horizon"),
            pl.lit(as_of).alias("as_of"),
        )
        .sort(KEYS)
    )


def unlabelled_days(features: pl.DataFrame, labels: pl.DataFrame) -> pl.DataFrame:
    """(exchange, symbol, day) of feature rows whose day has no label row: labels not materialized."""
    day = pl.col("ts").dt.date().alias("day")
    return (
        features.select(*KEYS, day)
        .unique()
        .join(labels.select(*KEYS, day).unique(), on=[*KEYS, "day"], how="anti")
        .sort(*KEYS, "day")
    )


def _utc(t: datetime) -> datetime:
    """Naive datetimes are taken as UTC."""
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
