"""Drift thresholds calibrated on the reference's own day-to-day variation (used for prediction drift).

A model's forecasts are smooth within a day (their inputs are overlapping rolling windows), so one
day is far fewer than 1,440 independent draws, and its PSI / KS against the whole training reference
is large even when nothing changed: with the feature thresholds, `prediction_drift` was ERROR on 5 of
15 held-out FTX January 2022 days on which the model kept its skill, and on 2 of the 16 training days
themselves (bench/MONITORING.md, section g). So the reference is split into day cells (per instrument
when it has one), each cell is compared with the rest of the reference (leave one day out), and a
window only alarms when it is further from the reference than the training days were:

* WARN at max(default WARN, the `quantile` of the training days' statistic),
* ERROR at max(default ERROR, `margin` x the largest training day's statistic),

separately for PSI and the KS statistic D. This accounts for the autocorrelation within a day (the
training days are day samples of the same process) without modelling it, keeps the defaults as
floors, and needs at least `min_cells` judged days (else the defaults, with a note).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from crypto_platform.monitoring.drift import MIN_ROWS, DriftThresholds, finite_values, ks, psi

MARGIN = 1.25
QUANTILE = 0.9
MIN_CELLS = 5


@dataclass(frozen=True)
class Calibration:
    """Thresholds derived from the reference's day-to-day variation, with the figures behind them."""

    thresholds: DriftThresholds
    cells: int  # reference day cells judged
    psi_quantile: float | None
    psi_max: float | None
    ks_quantile: float | None
    ks_max: float | None
    note: str

    def to_metadata(self) -> dict[str, str | int | float]:
        """Flat figures for Dagster metadata."""
        out: dict[str, str | int | float] = {"calibration": self.note, "calibration_cells": self.cells}
        for k in ("psi_quantile", "psi_max", "ks_quantile", "ks_max"):
            v = getattr(self, k)
            if v is not None:
                out[f"reference_day_{k}"] = round(v, 4)
        return out


def day_to_day(
    reference: pl.DataFrame, column: str, *, by: tuple[str, ...] = (), min_rows: int = MIN_ROWS
) -> pl.DataFrame:
    """(cell, n, psi, ks) of every reference day cell (`ts` day x `by`) against the rest of the reference."""
    missing = [c for c in ["ts", column, *by] if c not in reference.columns]
    if missing:
        raise ValueError(f"day_to_day: reference lacks columns {missing}")
    ref = reference.select(*by, pl.col("ts").dt.date().alias("_day"), pl.col(column).cast(pl.Float64))
    ref = ref.filter(pl.col(column).is_finite())
    keys = [*by, "_day"]
    rows = []
    for cell, part in ref.group_by(keys, maintain_order=True):
        if part.height < min_rows:
            continue
        rest = ref.join(part.select(keys).unique(), on=keys, how="anti")[column]
        if len(finite_values(rest)) < min_rows:
            continue
        values = part[column]
        rows.append(
            {
                "cell": "|".join(str(c) for c in cell),
                "n": part.height,
                "psi": psi(rest, values),
                "ks": ks(rest, values)[0],
            }
        )
    return pl.DataFrame(rows, schema={"cell": pl.String, "n": pl.Int64, "psi": pl.Float64, "ks": pl.Float64})


def calibrate(
    reference: pl.DataFrame,
    column: str,
    base: DriftThresholds | None = None,
    *,
    by: tuple[str, ...] = (),
    margin: float = MARGIN,
    quantile: float = QUANTILE,
    min_cells: int = MIN_CELLS,
    min_rows: int = MIN_ROWS,
) -> Calibration:
    """Thresholds no lower than `base` that the reference's own days would (almost) never cross."""
    base = base or DriftThresholds()
    if margin < 1 or not 0 < quantile <= 1:
        raise ValueError(f"calibrate: margin must be >= 1 and quantile in (0, 1], got {margin}, {quantile}")
    days = day_to_day(reference, column, by=by, min_rows=min_rows)
    if days.height < min_cells:
        note = (
            f"default thresholds: only {days.height} reference day(s) with >= {min_rows} rows (< {min_cells})"
        )
        return Calibration(base, days.height, None, None, None, None, note)
    p, k = days["psi"].to_numpy(), days["ks"].to_numpy()
    pq, pm, kq, km = (
        float(np.quantile(p, quantile)),
        float(p.max()),
        float(np.quantile(k, quantile)),
        float(k.max()),
    )
    psi_error, ks_error = max(base.psi_error, margin * pm), min(1.0, max(base.ks_error, margin * km))
    thresholds = DriftThresholds(
        psi_warn=min(psi_error, max(base.psi_warn, pq)),
        psi_error=psi_error,
        ks_warn=min(ks_error, max(base.ks_warn, kq)),
        ks_error=ks_error,
    )
    note = (
        f"calibrated on {days.height} reference days (each vs the rest): WARN at the q{quantile:g} of their "
        f"PSI / D, ERROR at {margin:g} x their maximum, never below the defaults"
    )
    return Calibration(thresholds, days.height, pq, pm, kq, km, note)
