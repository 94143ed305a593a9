"""Time splits of a labelled frame: development span vs evaluation window, and walk-forward folds.

The evaluation window is the final `holdout_fraction` of bar times, or the dates `eval_from` /
`eval_to` ([eval_from, eval_to), UTC) when given. Everything the model and the baselines learn from
(tuning folds, early stopping, the final fit) lies before it, minus a purge of `gap` minutes, so the
window is scored once, by a model that never saw it: its figures are the out-of-sample estimate,
and the tuning's own mean CV score minus them is the selection's optimism.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import polars as pl


class EvalWindowError(ValueError):
    """`eval_from` / `eval_to` do not give a usable evaluation window; the message names the field."""


def as_utc(value: datetime | date | str | None, field: str) -> datetime | None:
    """A date ('2022-01-20': midnight UTC), ISO datetime (naive = UTC) or datetime, as aware UTC."""
    if value is None or value == "":
        return None
    try:
        if isinstance(value, str):
            value = datetime.fromisoformat(value.strip())
        elif not isinstance(value, datetime):
            value = datetime(value.year, value.month, value.day)
    except ValueError as exc:
        raise EvalWindowError(f"{field} {value!r} is not a date (YYYY-MM-DD) or ISO datetime") from exc
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def evaluation_split(
    data: pl.DataFrame,
    *,
    gap: timedelta,
    holdout_fraction: float,
    eval_from: datetime | date | str | None = None,
    eval_to: datetime | date | str | None = None,
    min_dev_times: int = 1,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(development rows: ts < start - gap, evaluation rows: start <= ts < end) of a time-sorted frame.

    Without dates the window is the final `holdout_fraction` of unique bar times. With them it is
    [eval_from, eval_to) (eval_to default: after the last bar); EvalWindowError names the field when
    the window lies outside the data, is empty, or leaves fewer than `min_dev_times` bar times before it
    to train on (training must end before evaluation starts: nothing after the window is trained on).
    """
    times = data["ts"].unique().sort()
    first, last = times[0], times[-1]
    start, end = as_utc(eval_from, "eval_from"), as_utc(eval_to, "eval_to")
    if start is None and end is not None:
        raise EvalWindowError(f"eval_to {end} is set without eval_from: say where the evaluation starts")
    if start is None:
        start = times[int(len(times) * (1.0 - holdout_fraction))]
    else:
        span = f"the data's bars {first} .. {last}"
        if start > last:
            raise EvalWindowError(f"eval_from {start} is after {span}: nothing to evaluate")
        if end is not None and end <= start:
            raise EvalWindowError(f"eval_to {end} is not after eval_from {start}")
        if end is not None and end <= first:
            raise EvalWindowError(f"eval_to {end} is before {span}")
        n_dev = int((times < start - gap).sum())
        if n_dev < min_dev_times:
            raise EvalWindowError(
                f"eval_from {start} overlaps the training data: it leaves {n_dev} bar times of {span} "
                f"before it (minus the {gap} purge), need at least {min_dev_times} to train and tune on"
            )
    in_window = pl.col("ts") >= start
    if end is not None:
        in_window = in_window & (pl.col("ts") < end)
    dev = data.filter(pl.col("ts") < start - gap)
    window = data.filter(in_window)
    if window.is_empty():
        raise EvalWindowError(f"the evaluation window [{start}, {end or 'end'}) holds no labelled rows")
    return dev, window


def walk_forward_folds(dev: pl.DataFrame, n_folds: int, purge: timedelta) -> list[dict[str, Any]]:
    """Expanding-window folds over equal time blocks, with `purge` between train end and validation."""
    times = dev["ts"].unique().sort()
    edges = [times[int(len(times) * k / (n_folds + 1))] for k in range(n_folds + 1)] + [None]
    ts = dev["ts"]
    folds = []
    for k in range(1, n_folds + 1):
        val_start, val_end = edges[k], edges[k + 1]
        val_mask = (ts >= val_start) if val_end is None else ((ts >= val_start) & (ts < val_end))
        train_mask = ts < val_start - purge
        train_idx = np.flatnonzero(train_mask.to_numpy())
        val_idx = np.flatnonzero(val_mask.to_numpy())
        if train_idx.size == 0 or val_idx.size == 0:
            raise ValueError(f"train: walk-forward fold {k} is empty; use fewer folds or more data")
        folds.append(
            {
                "fold": k,
                "train_start": ts[int(train_idx[0])],
                "train_end": ts[int(train_idx[-1])],
                "val_start": ts[int(val_idx[0])],
                "val_end": ts[int(val_idx[-1])],
                "n_train": int(train_idx.size),
                "n_val": int(val_idx.size),
                "train_idx": train_idx,
                "val_idx": val_idx,
            }
        )
    return folds
