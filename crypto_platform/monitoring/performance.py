"""Prediction skill on matured predictions: errors vs realised forward returns, rolling skill, verdict.

A prediction made at bar `ts` for horizon `h` minutes matures when the candle at `ts + h` exists; its
realised value is the forward log return ln(close[ts + h] / close[ts]). The natural baseline of a
return forecast is "no move" (predicted return 0), whose absolute error is |realised|.

Skill is judged on ranks and signs, not on MAE: a useful short-horizon model usually has a *higher*
MAE than the zero baseline unless its forecasts are shrunk, so MAE vs baseline is reported but the
verdict uses the Spearman rank IC and the directional hit rate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import polars as pl

from crypto_platform.schemas import UTC_TS

# Predictions as the monitoring reads them ('exchange' is optional: used in the join when present).
PREDICTIONS: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "ts": UTC_TS,  # bar the prediction was made at (its close is known)
    "horizon": pl.Int64(),  # minutes ahead
    "predicted_return": pl.Float64(),  # predicted log return close[ts] -> close[ts + horizon]
    "model_version": pl.String(),
}

# One row per matured prediction (output of prediction_errors).
ERRORS: dict[str, pl.DataType] = {
    "model_version": pl.String(),
    "symbol": pl.String(),
    "ts": UTC_TS,
    "horizon": pl.Int64(),
    "predicted_return": pl.Float64(),
    "realised_return": pl.Float64(),
    "error": pl.Float64(),  # predicted - realised
    "abs_error": pl.Float64(),
    "baseline_abs_error": pl.Float64(),  # |realised|: the zero-return forecast's error
    "hit": pl.Boolean(),  # same sign; null when the prediction or the realised return is exactly 0
}

MIN_ROWS = 500
MIN_RANK_IC = 0.0
MIN_HIT_RATE = 0.5


def prediction_errors(predictions: pl.DataFrame, candles: pl.DataFrame, horizon: int) -> pl.DataFrame:
    """Join matured `horizon`-minute predictions to realised forward log returns (ERRORS columns)."""
    if horizon <= 0:
        raise ValueError(f"horizon must be a positive number of minutes, got {horizon}")
    missing = [c for c in PREDICTIONS if c not in predictions.columns]
    if missing:
        raise ValueError(f"prediction_errors: predictions lack columns {missing}")
    keys = ["exchange", "symbol"] if "exchange" in predictions.columns else ["symbol"]
    missing = [c for c in [*keys, "ts", "close"] if c not in candles.columns]
    if missing:
        raise ValueError(f"prediction_errors: candles lack columns {missing}")
    bars = candles.select(*keys, pl.col("ts").cast(UTC_TS), pl.col("close").cast(pl.Float64))
    future = bars.select(
        *keys, (pl.col("ts") - timedelta(minutes=horizon)).alias("ts"), pl.col("close").alias("_close_h")
    )
    preds = predictions.filter(pl.col("horizon") == horizon).with_columns(
        pl.col("ts").cast(UTC_TS), pl.col("predicted_return").cast(pl.Float64)
    )
    realised = (pl.col("_close_h") / pl.col("close")).log()
    out = (
        preds.join(bars, on=[*keys, "ts"], how="inner")
        .join(future, on=[*keys, "ts"], how="inner")
        .with_columns(realised.alias("realised_return"))
        .filter(pl.col("realised_return").is_finite() & pl.col("predicted_return").is_finite())
        .with_columns(
            (pl.col("predicted_return") - pl.col("realised_return")).alias("error"),
            (pl.col("predicted_return") - pl.col("realised_return")).abs().alias("abs_error"),
            pl.col("realised_return").abs().alias("baseline_abs_error"),
            pl.when((pl.col("predicted_return") != 0) & (pl.col("realised_return") != 0))
            .then(pl.col("predicted_return").sign() == pl.col("realised_return").sign())
            .alias("hit"),
        )
    )
    extra = ["exchange"] if "exchange" in keys else []
    return out.select(*extra, *[pl.col(c).cast(t) for c, t in ERRORS.items()]).sort(
        ["model_version", *extra, "symbol", "ts"]
    )


def skill_aggregates() -> list[pl.Expr]:
    """n, MAE, baseline MAE, MAE skill, Spearman rank IC and hit rate, as polars aggregations."""
    mae, base = pl.col("abs_error").mean(), pl.col("baseline_abs_error").mean()
    return [
        pl.len().alias("n"),
        mae.alias("mae"),
        base.alias("baseline_mae"),
        pl.when(base > 0).then(1.0 - mae / base).alias("mae_skill"),
        pl.corr("predicted_return", "realised_return", method="spearman").alias("rank_ic"),
        pl.col("hit").cast(pl.Float64).mean().alias("hit_rate"),
    ]


def rolling_skill(
    errors: pl.DataFrame, window_minutes: int, *, every_minutes: int | None = None
) -> pl.DataFrame:
    """Per model version, skill over trailing `window_minutes` windows ending every `every_minutes`."""
    if window_minutes <= 0:
        raise ValueError(f"window_minutes must be positive, got {window_minutes}")
    every = every_minutes or min(60, window_minutes)
    if errors.height == 0:
        return pl.DataFrame(
            schema={
                "model_version": pl.String(),
                "window_end": UTC_TS,
                "n": pl.UInt32(),
                "mae": pl.Float64(),
                "baseline_mae": pl.Float64(),
                "mae_skill": pl.Float64(),
                "rank_ic": pl.Float64(),
                "hit_rate": pl.Float64(),
            }
        )
    # Windows (end - window, end]; `ts` is when the prediction was made.
    out = (
        errors.sort(["model_version", "ts"])
        .group_by_dynamic(
            "ts",
            every=f"{every}m",
            period=f"{window_minutes}m",
            offset=f"{every - window_minutes}m",
            closed="right",
            label="right",
            group_by="model_version",
        )
        .agg(skill_aggregates())
        .rename({"ts": "window_end"})
    )
    return out.with_columns(pl.col("window_end").cast(UTC_TS)).sort(["model_version", "window_end"])


@dataclass(frozen=True)
class SkillVerdict:
    """Whether a model has lost its skill over the recent window, with the figures behind it."""

    lost: bool
    rank_ic: float | None  # Spearman correlation of predicted vs realised returns
    hit_rate: float | None  # share of same-sign (prediction, realised) among non-zero pairs
    n: int
    reasons: tuple[str, ...] = field(default_factory=tuple)
    sufficient: bool = True  # False: fewer than min_rows matured predictions, verdict not lost
    mae: float | None = None
    baseline_mae: float | None = None
    model_version: str | None = None
    window_start: datetime | None = None
    window_end: datetime | None = None

    def to_metadata(self) -> dict[str, str | int | float | bool]:
        """Flat figures for Dagster metadata."""
        out: dict[str, str | int | float | bool] = {
            "lost": self.lost,
            "sufficient": self.sufficient,
            "n": self.n,
            "reasons": "; ".join(self.reasons) or "-",
        }
        for k in ("rank_ic", "hit_rate", "mae", "baseline_mae"):
            value = getattr(self, k)
            if value is not None:
                out[k] = round(value, 6)
        if self.model_version is not None:
            out["model_version"] = self.model_version
        if self.window_start is not None and self.window_end is not None:
            out["window"] = f"{self.window_start.isoformat()} .. {self.window_end.isoformat()}"
        return out


def skill_lost(
    errors: pl.DataFrame,
    min_rows: int = MIN_ROWS,
    *,
    window_minutes: int | None = None,
    model_version: str | None = None,
    min_rank_ic: float = MIN_RANK_IC,
    min_hit_rate: float = MIN_HIT_RATE,
) -> SkillVerdict:
    """Lost when rank IC <= min_rank_ic or hit rate <= min_hit_rate over the recent window."""
    if model_version is not None:
        errors = errors.filter(pl.col("model_version") == model_version)
    versions = errors["model_version"].unique().to_list() if errors.height else []
    if len(versions) > 1:
        raise ValueError(f"skill_lost: errors of model versions {sorted(versions)}; pass model_version=")
    if window_minutes is not None and errors.height:
        end = errors["ts"].max()
        errors = errors.filter(pl.col("ts") > end - timedelta(minutes=window_minutes))
    n = errors.height
    if n == 0:
        return SkillVerdict(
            False, None, None, 0, ("no matured predictions",), sufficient=False, model_version=model_version
        )
    agg = errors.select(skill_aggregates()).row(0, named=True)
    rank_ic, hit_rate = _finite(agg["rank_ic"]), _finite(agg["hit_rate"])
    common = {
        "mae": _finite(agg["mae"]),
        "baseline_mae": _finite(agg["baseline_mae"]),
        "model_version": versions[0] if versions else model_version,
        "window_start": errors["ts"].min(),
        "window_end": errors["ts"].max(),
    }
    if n < min_rows:
        return SkillVerdict(
            False,
            rank_ic,
            hit_rate,
            n,
            (f"only {n} matured predictions (< {min_rows})",),
            sufficient=False,
            **common,
        )
    reasons = []
    if rank_ic is None:
        reasons.append("rank IC undefined (constant predictions or returns)")
    elif rank_ic <= min_rank_ic:
        reasons.append(f"rank IC {rank_ic:.4f} <= {min_rank_ic}")
    if hit_rate is None:
        reasons.append("hit rate undefined (no non-zero prediction / return pair)")
    elif hit_rate <= min_hit_rate:
        reasons.append(f"hit rate {hit_rate:.4f} <= {min_hit_rate}")
    return SkillVerdict(bool(reasons), rank_ic, hit_rate, n, tuple(reasons), **common)


def _finite(value: float | None) -> float | None:
    if value is None or value != value or value in (float("inf"), float("-inf")):
        return None
    return float(value)
