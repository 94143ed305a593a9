"""Point-in-time training sets: features joined to the labels that were known at a cut-off."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl

from crypto_platform.schemas import INDEX_COLUMNS


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


def _utc(t: datetime) -> datetime:
    """Naive datetimes are taken as UTC."""
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
