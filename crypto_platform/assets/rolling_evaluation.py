"""gold/rolling_evaluation: the served model and every baseline scored out of sample on each matured day,
and the `model_skill` check that judges it.

Per (day x instrument) partition, once the day's labels have matured (`label_available_at` passed),
the model behind `model_alias` (default: the champion) and the gate's baselines (zero, momentum,
reversal, ridge: fitted on the model's own training window, read from the lake) are scored on the
day's labelled rows (`ml.rolling_evaluation`): rank IC, hit rate with its p-value, MAE, n, and the
model's advantage over each baseline with its HAC p-value. One row per forecast, in the lake and the
warehouse view `gold.rolling_evaluation`; the run's table is the materialization metadata.

`model_skill` (ERROR, watched by the retraining sensor) fails when the model lost its skill over the
newest scored day: row-weighted mean rank IC <= 0 or pooled hit rate <= 0.5 on >= 500 rows.
"""

from datetime import UTC, datetime

import dagster as dg
import polars as pl
from pydantic import Field

from crypto_platform import tables
from crypto_platform.metadata import ABOUT_LATEST_DATA, md_table
from crypto_platform.ml.dataset import training_frame
from crypto_platform.ml.rolling_evaluation import FittedBaselines, PooledSkill, pooled_skill
from crypto_platform.monitoring import performance as perf
from crypto_platform.partitions import DayPartition, partitions_of, run_partitions, single_run
from crypto_platform.resources.lake import LakeResource
from crypto_platform.resources.mlflow import MlflowResource
from crypto_platform.resources.warehouse import WarehouseResource
from crypto_platform.settings import load_universe

ROLLING_EVALUATION = tables.ROLLING_EVALUATION.key
MODEL_SKILL_CHECK = "model_skill"


class RollingEvaluationConfig(dg.Config):
    """Run config of gold/rolling_evaluation."""

    model_alias: str = Field(default="champion", description="Registry alias of the model scored.")


@dg.asset(
    key=ROLLING_EVALUATION,
    deps=[tables.FEATURES.key, tables.LABELS.key, tables.MODEL.key],
    partitions_def=tables.ROLLING_EVALUATION.partitions_def,
    backfill_policy=single_run,
    group_name="gold",
    kinds={"parquet", "duckdb"},
    description=(
        "Out-of-sample score of the champion and every baseline (zero, momentum, reversal, ridge fitted "
        "on the champion's training window) on each day once its labels matured: rank IC, hit rate with "
        "p-value, MAE, n, the model's advantage over each baseline with its HAC p-value."
    ),
)
def gold_rolling_evaluation(
    context: dg.AssetExecutionContext,
    config: RollingEvaluationConfig,
    lake: LakeResource,
    warehouse: WarehouseResource,
    mlflow_registry: MlflowResource,
) -> dg.MaterializeResult:
    from crypto_platform.ml import registry

    model = registry.load_alias(mlflow_registry.uri, mlflow_registry.model_name, config.model_alias)
    info, now = model.info, datetime.now(UTC)
    baselines = _fit_baselines(lake, mlflow_registry, info)
    scored, stats = [], []
    for part in partitions_of(context):
        rows, stat = _score_part(lake, part, model, baselines, now)
        stats.append(stat)
        if rows is not None:
            lake.write_partition(rows, tables.ROLLING_EVALUATION, part)
            scored.append(rows)
    warehouse.refresh_views(lake, [tables.ROLLING_EVALUATION])
    context.log.info(
        f"rolling evaluation of {info.name} v{info.version}: {len(scored)} of {len(stats)} cells scored"
    )
    return dg.MaterializeResult(metadata=_metadata(scored, stats, info, baselines))


def _score_part(
    lake: LakeResource, part: DayPartition, model, baselines: FittedBaselines, now: datetime
) -> tuple[pl.DataFrame | None, dict]:
    """One cell's rows (None when its labels have not matured) and its line of the run's table."""
    from crypto_platform.ml.rolling_evaluation import cell_rows, score_cell

    info = model.info
    frame = _matured_rows(lake, part, info.horizon, now)
    if frame.height < 3:
        return None, {"partition": part.key, "rows": frame.height, "note": "labels not matured"}
    trained_to = _tag_time(info.tags.get("train_window_end"))
    in_sample = trained_to is not None and part.start <= trained_to
    rows = cell_rows(
        score_cell(frame, model.predict(frame), baselines, horizon=info.horizon),
        exchange=part.instrument.exchange,
        symbol=part.instrument.symbol,
        day=part.day,
        model_name=info.name,
        model_version=info.version,
        horizon=info.horizon,
        in_sample=in_sample,
        scored_at=now,
    )
    return rows, {"partition": part.key, "rows": frame.height, "note": "in sample" if in_sample else "-"}


def _matured_rows(lake: LakeResource, part: DayPartition, horizon: int, now: datetime) -> pl.DataFrame:
    """The cell's features joined to its `horizon` labels known at `now` (empty when none)."""
    feats = lake.read_partition(tables.FEATURES, part)
    if feats is None:
        raise dg.Failure(f"gold/features {part} is not materialized yet; materialize it first")
    labels = lake.read_partition(tables.LABELS, part)
    if labels is None or labels.is_empty():
        return feats.head(0)
    return training_frame(feats, labels, now, horizon=horizon)


def _fit_baselines(lake: LakeResource, mlflow_registry: MlflowResource, info) -> FittedBaselines:
    """Reversal and ridge fitted on the model's training window (its instruments, read from the lake)."""
    from crypto_platform.ml import model_cache
    from crypto_platform.ml.rolling_evaluation import fit_baselines

    start, end = (_tag_time(info.tags.get(k)) for k in ("train_window_start", "train_window_end"))
    if start is None or end is None:
        return FittedBaselines(
            None, None, "the model records no training window: reversal and ridge not fitted"
        )
    reference = model_cache.load_reference(mlflow_registry.uri, info)
    keys = (
        set(reference.select("exchange", "symbol").unique().iter_rows())
        if "symbol" in reference.columns
        else None
    )
    frames = []
    for inst in load_universe().instruments:
        if keys is not None and (inst.exchange, inst.symbol) not in keys:
            continue
        days = [d for d in lake.stored_days(tables.LABELS, inst) if start.date() <= d <= end.date()]
        parts = [DayPartition(inst, d) for d in days]
        feats, labels = (
            lake.read_partitions(tables.FEATURES, parts),
            lake.read_partitions(tables.LABELS, parts),
        )
        if feats is not None and labels is not None:
            frames.append(training_frame(feats, labels, horizon=info.horizon))
    rows = pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()
    if rows.height:
        rows = rows.filter((pl.col("ts") >= start) & (pl.col("ts") <= end))
    return fit_baselines(rows, info.feature_cols)


def _tag_time(value: str | None) -> datetime | None:
    if not value:
        return None
    t = datetime.fromisoformat(value)
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _metadata(scored: list[pl.DataFrame], stats: list[dict], info, baselines: FittedBaselines) -> dict:
    """The run's scores (one row per cell and forecast), pooled figures and what was not scored."""
    meta: dict[str, object] = {
        "model": f"{info.name} v{info.version}",
        "alias": str(info.alias),
        "horizon": info.horizon,
        "cells": len(stats),
        "cells_scored": len(scored),
        "per_cell": dg.MetadataValue.md(md_table(stats)),
    }
    if baselines.note:
        meta["baselines_note"] = baselines.note
    if not scored:
        return meta
    rows = pl.concat(scored, how="vertical")
    shown = rows.select(
        "day", "symbol", "forecast", "n", "rank_ic", "hit_rate", "hit_p_value", "mae", "model_advantage",
        "model_advantage_p", "in_sample",
    ).with_columns(pl.col(pl.Float64).round(5))  # fmt: skip
    meta["scores"] = dg.MetadataValue.md(md_table(shown.to_dicts(), limit=200))
    meta["pooled"] = dg.MetadataValue.md(md_table([p.__dict__ for p in pooled_skill(rows)]))
    return meta


# ---------------------------------------------------------------------------------------- model_skill


class ModelSkillConfig(dg.Config):
    """Run config of the model_skill check."""

    min_rows: int = Field(default=perf.MIN_ROWS, description="Fewer scored rows: passes as not judged.")
    min_rank_ic: float = Field(default=perf.MIN_RANK_IC, description="Skill is lost at rank IC <= this.")
    min_hit_rate: float = Field(default=perf.MIN_HIT_RATE, description="Skill is lost at hit rate <= this.")


@dg.asset_check(
    asset=ROLLING_EVALUATION,
    name=MODEL_SKILL_CHECK,
    description=(
        "Loss of skill of the scored model on the newest day of the rolling out-of-sample evaluation (the "
        "run's cells, or each instrument's newest scored day): fails (ERROR) when the mean rank IC <= 0 or "
        "the hit rate <= 0.5 on at least 500 rows; every baseline's figures as metadata."
    ),
)
def model_skill(
    context: dg.AssetCheckExecutionContext, config: ModelSkillConfig, lake: LakeResource
) -> dg.AssetCheckResult:
    """Fail when the model lost its skill on the newest out-of-sample day (rank IC <= 0 or hit <= 50%)."""
    parts = run_partitions(context)
    if parts is None:
        parts = [
            p
            for inst in load_universe().instruments
            for p in lake.newest_parts(tables.ROLLING_EVALUATION, inst, 1)
        ]
    frames = [df for p in parts if (df := lake.read_partition(tables.ROLLING_EVALUATION, p)) is not None]
    about_latest = lake.includes_newest(tables.ROLLING_EVALUATION, parts) if parts else True
    if not frames:
        return dg.AssetCheckResult(
            passed=True,
            description="no scored day yet (labels not matured): skill not judged",
            metadata={"sufficient": False, "n": 0, ABOUT_LATEST_DATA: about_latest},
        )
    rows = pl.concat(frames, how="vertical")
    version = max(rows["model_version"].unique().to_list(), key=lambda v: (int(v) if v.isdigit() else -1, v))
    rows = rows.filter(pl.col("model_version") == version)
    pooled = {p.forecast: p for p in pooled_skill(rows)}
    model = pooled["model"]
    meta: dict[str, object] = {
        "model_version": version,
        "days": ", ".join(sorted({str(d) for d in rows["day"].to_list()})),
        "in_sample": bool(rows["in_sample"].any()),
        "n": model.n,
        "rank_ic": _num(model.rank_ic),
        "hit_rate": _num(model.hit_rate),
        "thresholds": f"rank IC <= {config.min_rank_ic} or hit rate <= {config.min_hit_rate}",
        "forecasts": dg.MetadataValue.md(md_table([p.__dict__ for p in pooled.values()])),
        ABOUT_LATEST_DATA: about_latest,
    }
    best = _best_baseline(pooled)
    if best is not None:
        meta["best_baseline"] = f"{best.forecast} (rank IC {best.rank_ic:.4f})"
    if model.n < config.min_rows:
        meta["sufficient"] = False
        return dg.AssetCheckResult(
            passed=True,
            metadata=meta,
            description=f"skill not judged: only {model.n} rows (< {config.min_rows})",
        )
    reasons = _lost(model, config)
    meta.update({"sufficient": True, "lost": bool(reasons), "reasons": "; ".join(reasons) or "-"})
    if reasons:
        return dg.AssetCheckResult(
            passed=False,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata=meta,
            description=f"model v{version} lost its skill: {'; '.join(reasons)}",
        )
    return dg.AssetCheckResult(
        passed=True,
        metadata=meta,
        description=(
            f"model v{version} keeps its skill: rank IC {model.rank_ic:.4f}, hit rate {model.hit_rate:.4f}"
        ),
    )


def _lost(model: PooledSkill, config: ModelSkillConfig) -> list[str]:
    reasons = []
    if model.rank_ic is None:
        reasons.append("rank IC undefined (constant forecasts or returns)")
    elif model.rank_ic <= config.min_rank_ic:
        reasons.append(f"rank IC {model.rank_ic:.4f} <= {config.min_rank_ic}")
    if model.hit_rate is None:
        reasons.append("hit rate undefined (no non-zero forecast / return pair)")
    elif model.hit_rate <= config.min_hit_rate:
        reasons.append(f"hit rate {model.hit_rate:.4f} <= {config.min_hit_rate}")
    return reasons


def _best_baseline(pooled: dict[str, PooledSkill]) -> PooledSkill | None:
    others = [p for k, p in pooled.items() if k != "model" and p.rank_ic is not None]
    return max(others, key=lambda p: p.rank_ic or 0.0, default=None)


def _num(v: float | None) -> object:
    return dg.MetadataValue.null() if v is None else round(v, 6)


ROLLING_EVALUATION_CHECKS: list[dg.AssetChecksDefinition] = [model_skill]
