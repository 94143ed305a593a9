"""Monitoring assets: matured prediction errors of the served predictions and their rolling skill.

`gold/prediction_errors` is an unpartitioned asset over a partitioned lake table: each run (hourly by
the monitoring schedule) re-joins the newest `lookback_days` of each instrument's predictions to the
realised prices (`monitoring.performance.prediction_errors`: a forecast made at bar ts for h minutes
matures when the bar ts + h exists) and rewrites those (instrument, day) partitions whole, so forecasts
that matured since the last run appear and re-runs are idempotent; older days are left as they are,
so the table keeps the full history. Anchored on the newest stored predictions, not the wall clock,
so replayed or backfilled history is monitored the same way as live data.

`gold/prediction_skill` holds rolling windows (default 24 h every hour, per model version, pooled over
instruments) of MAE against the zero-return baseline, Spearman rank IC and hit rate; the newest window
is also materialization metadata, which the UI plots over time.

Loss of skill is judged by the `model_skill` check on the out-of-sample `gold/rolling_evaluation`
(assets/rolling_evaluation.py), which scores the model against every baseline per matured day.
"""

import math
from datetime import datetime, timedelta

import dagster as dg
import polars as pl
from pydantic import Field

from crypto_platform import tables
from crypto_platform.metadata import md_table
from crypto_platform.monitoring import performance as perf
from crypto_platform.partitions import DayPartition
from crypto_platform.resources.lake import LakeResource
from crypto_platform.resources.warehouse import WarehouseResource
from crypto_platform.schemas import UTC_TS
from crypto_platform.settings import Instrument, load_universe

PREDICTION_ERRORS = tables.PREDICTION_ERRORS.key
PREDICTION_SKILL = tables.PREDICTION_SKILL.key
_PREDICTION_COLUMNS = ["exchange", "symbol", "ts", "horizon", "predicted_return", "model_version"]


class PredictionErrorsConfig(dg.Config):
    """Run config of gold/prediction_errors."""

    lookback_days: int = Field(
        default=2,
        description="Days per instrument, counted back from its newest predictions, (re)joined each run.",
    )
    rolling_window_minutes: int = Field(default=24 * 60, description="Length of the rolling skill windows.")
    rolling_every_minutes: int = Field(
        default=60, description="A rolling window ends every this many minutes."
    )


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            PREDICTION_ERRORS,
            deps=[tables.PREDICTIONS.key, tables.CANDLES_1M.key],
            description=(
                "Matured predictions joined to the realised forward log return: error, absolute error, "
                "the zero-return baseline's absolute error and the directional hit, per instrument and "
                "minute (partitioned in the lake by instrument and day)."
            ),
            kinds={"parquet", "polars"},
        ),
        dg.AssetSpec(
            PREDICTION_SKILL,
            deps=[PREDICTION_ERRORS],
            description=(
                "Rolling prediction skill per model version: MAE vs the zero-return baseline (mae_skill), "
                "Spearman rank IC and hit rate over trailing windows."
            ),
            kinds={"parquet", "duckdb"},
        ),
    ],
    group_name="monitoring",
    can_subset=False,
)
def gold_prediction_errors(
    context: dg.AssetExecutionContext,
    config: PredictionErrorsConfig,
    lake: LakeResource,
    warehouse: WarehouseResource,
):
    """Join matured predictions to realised prices, per minute and model version."""
    if config.lookback_days < 1:
        raise dg.Failure(f"lookback_days must be >= 1, got {config.lookback_days}")
    stats, fresh, rewritten_from, n_predictions = [], [], None, 0
    for inst in load_universe().instruments:
        if (done := _rewrite_errors(lake, inst, config.lookback_days)) is None:
            continue
        errors, rows, n, start = done
        stats += rows
        fresh.append(errors)
        n_predictions += n
        rewritten_from = start if rewritten_from is None else min(rewritten_from, start)
    if rewritten_from is None:
        note = "no predictions in the lake yet: nothing to monitor"
        context.log.warning(note)
        yield dg.MaterializeResult(asset_key=PREDICTION_ERRORS, metadata={"rows": 0, "note": note})
        yield dg.MaterializeResult(asset_key=PREDICTION_SKILL, metadata={"rows": 0, "note": note})
        return
    errors = pl.concat(fresh, how="vertical")
    skill = _update_rolling_skill(lake, rewritten_from, config)
    warehouse.refresh_views(lake, [tables.PREDICTION_ERRORS, tables.PREDICTION_SKILL])
    meta = _errors_metadata(errors, stats, n_predictions, rewritten_from)
    context.log.info(
        f"prediction errors: {meta['rows'].value} matured of {n_predictions} predictions, "
        f"{len(stats)} partitions"
    )
    yield dg.MaterializeResult(asset_key=PREDICTION_ERRORS, metadata=meta)
    yield dg.MaterializeResult(asset_key=PREDICTION_SKILL, metadata=_skill_metadata(skill, config))


def _rewrite_errors(
    lake: LakeResource, inst: Instrument, lookback_days: int
) -> tuple[pl.DataFrame, list[dict], int, datetime] | None:
    """Re-join one instrument's newest `lookback_days` of predictions and write their error partitions;
    (errors, per-partition rows, predictions read, start of the first rewritten day), or None."""
    days = lake.stored_days(tables.PREDICTIONS, inst)
    if not days:
        return None
    days = [d for d in days if d > days[-1] - timedelta(days=lookback_days)]
    parts = [DayPartition(inst, d) for d in days]
    preds = lake.read_partitions(tables.PREDICTIONS, parts)
    if preds is None:
        return None
    next_days = {d + timedelta(days=1) for d in days} - set(days)  # completes the last horizons of a day
    candles = lake.read_partitions(
        tables.CANDLES_1M, parts + [DayPartition(inst, d) for d in sorted(next_days)]
    )
    errors = matured_errors(preds, candles)
    rows = []
    for part in parts:
        info = lake.write_partition(
            errors.filter(pl.col("ts").dt.date() == part.day), tables.PREDICTION_ERRORS, part
        )
        preds_day = preds.filter(pl.col("ts").dt.date() == part.day).height
        rows.append(
            {"partition": part.key, "predictions": preds_day, "matured": info.rows, "bytes": info.bytes}
        )
    return errors, rows, preds.height, parts[0].start


def _errors_metadata(errors: pl.DataFrame, stats: list[dict], n_predictions: int, rewritten_from) -> dict:
    """gold/prediction_errors metadata: matured share, per partition, skill of the newest version."""
    matured = sum(s["matured"] for s in stats)
    meta: dict[str, object] = {
        "rows": dg.MetadataValue.int(matured),
        "predictions": n_predictions,
        "matured_share": round(matured / n_predictions, 4) if n_predictions else 0.0,
        "partitions": len(stats),
        "rewritten_from": str(rewritten_from),
        "per_partition": dg.MetadataValue.md(md_table(stats)),
    }
    latest = _latest_version(errors)
    if latest is not None:
        newest = errors.filter(pl.col("model_version") == latest)
        agg = newest.select(perf.skill_aggregates()).row(0, named=True)
        meta["model_version"] = latest
        meta.update({f"lookback_{k}": _num(v) for k, v in agg.items()})
        by_inst = (
            newest.group_by("exchange", "symbol").agg(perf.skill_aggregates()).sort("exchange", "symbol")
        )
        meta["per_instrument"] = dg.MetadataValue.md(md_table(by_inst.to_dicts()))
    return meta


def _skill_metadata(skill: pl.DataFrame, config: PredictionErrorsConfig) -> dict:
    """gold/prediction_skill metadata: the newest rolling window's figures and the last 24 windows."""
    meta: dict[str, object] = {
        "rows": dg.MetadataValue.int(skill.height),
        "window_minutes": config.rolling_window_minutes,
    }
    if skill.height:
        newest = skill.sort("window_end").row(-1, named=True)
        meta["window_end"] = str(newest["window_end"])
        meta["model_version"] = newest["model_version"]
        meta.update(
            {k: _num(newest[k]) for k in ("n", "mae", "baseline_mae", "mae_skill", "rank_ic", "hit_rate")}
        )
        meta["newest_windows"] = dg.MetadataValue.md(md_table(skill.sort("window_end").tail(24).to_dicts()))
    return meta


def matured_errors(preds: pl.DataFrame, candles: pl.DataFrame | None) -> pl.DataFrame:
    """Errors of every matured forecast in `preds` (all horizons), with the exchange column."""
    empty = pl.DataFrame(schema={"exchange": pl.String(), **perf.ERRORS})
    if candles is None or preds.is_empty():
        return empty
    p = preds.select(_PREDICTION_COLUMNS)
    bars = candles.filter(pl.col("close").is_not_null()).select("exchange", "symbol", "ts", "close")
    frames = [perf.prediction_errors(p, bars, int(h)) for h in p["horizon"].unique().sort().to_list()]
    frames = [f for f in frames if f.height]
    return pl.concat(frames, how="vertical").sort("exchange", "symbol", "ts") if frames else empty


def _update_rolling_skill(lake: LakeResource, rewritten_from, config: PredictionErrorsConfig) -> pl.DataFrame:
    """Recompute the rolling windows that end after the first rewritten day; keep the older ones."""
    window = timedelta(minutes=config.rolling_window_minutes)
    first_day = (rewritten_from - window).date()
    frames = []
    for inst in load_universe().instruments:
        parts = [
            DayPartition(inst, d) for d in lake.stored_days(tables.PREDICTION_ERRORS, inst) if d >= first_day
        ]
        if (df := lake.read_partitions(tables.PREDICTION_ERRORS, parts)) is not None and df.height:
            frames.append(df)
    errors = (
        pl.concat(frames, how="vertical")
        if frames
        else pl.DataFrame(schema={"exchange": pl.String(), **perf.ERRORS})
    )
    new = perf.rolling_skill(
        errors, config.rolling_window_minutes, every_minutes=config.rolling_every_minutes
    )
    new = new.filter(pl.col("window_end") > rewritten_from).with_columns(
        pl.lit(config.rolling_window_minutes, pl.Int64).alias("window_minutes")
    )
    old = lake.read_table(tables.PREDICTION_SKILL)
    if old is not None and old.height:
        old = old.filter(pl.col("window_end") <= rewritten_from)
        new = (
            pl.concat([old, new.select(old.columns)], how="vertical_relaxed")
            if set(old.columns) == set(new.columns)
            else new
        )
    skill = new.with_columns(pl.col("window_end").cast(UTC_TS)).sort("model_version", "window_end")
    lake.write_table(skill, tables.PREDICTION_SKILL)
    return skill


def _latest_version(errors: pl.DataFrame) -> str | None:
    """The model version of the newest matured forecast (highest version on a tie)."""
    if errors.is_empty():
        return None
    newest = errors.filter(pl.col("ts") == pl.col("ts").max())
    versions = newest["model_version"].unique().to_list()
    return max(versions, key=lambda v: (int(v) if str(v).isdigit() else -1, str(v)))


def _num(v):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return dg.MetadataValue.null()
    return round(float(v), 6) if isinstance(v, float) else int(v)


MONITORING_CHECKS: list[dg.AssetChecksDefinition] = []  # model_skill judges gold/rolling_evaluation
