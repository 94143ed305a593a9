"""gold/model and gold/model_evaluations: LightGBM tuned with Optuna, evaluated against baselines and
the current champion, registered in MLflow; promoted to 'champion' only through the skill gate.

The work is in `ml/` (training, evaluation, calibration, registry); this module wires it. The
model's LightGBM thread count is `ModelConfig.num_threads` (default 1).
"""

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import dagster as dg
import polars as pl
from pydantic import Field

from crypto_platform import tables
from crypto_platform.metadata import frame_markdown
from crypto_platform.resources.lake import LakeResource
from crypto_platform.resources.mlflow import MlflowResource
from crypto_platform.resources.warehouse import WarehouseResource
from crypto_platform.transforms.features import FEATURE_COLUMNS, INDEX_COLUMNS

if TYPE_CHECKING:  # ml.training / registry import LightGBM and MLflow: loaded when the asset runs
    from crypto_platform.ml.evaluation import GateDecision
    from crypto_platform.ml.registry import ChampionComparison, ModelVersionInfo
    from crypto_platform.ml.training import TrainResult


class ModelConfig(dg.Config):
    n_trials: int = Field(default=20, ge=1, description="Optuna trials (seeded TPE sampler, median pruning).")
    seed: int = Field(default=42, description="Seed of the sampler and of LightGBM.")
    n_folds: int = Field(default=4, description="Walk-forward CV folds (purged by the label horizon).")
    holdout_fraction: float = Field(default=0.2, description="Final share of time held out for evaluation.")
    primary_metric: str = Field(
        default="rank_ic",
        description="Metric the challenger must beat the champion on: rank_ic | hit_rate | mae | rmse.",
    )
    eval_from: str = Field(
        default="",
        description=(
            "Start of a date-based evaluation window (YYYY-MM-DD or ISO datetime, UTC; inclusive). Set: "
            "the model is tuned and fitted on the training set's bars before it (minus the label horizon) "
            "and evaluated on [eval_from, eval_to); holdout_fraction is then unused. Empty: the final "
            "holdout_fraction of time."
        ),
    )
    eval_to: str = Field(
        default="",
        description="End of the evaluation window (exclusive; empty: the newest bar). Needs eval_from.",
    )
    timeout_s: float = Field(default=900.0, description="Upper bound on the Optuna study's wall time.")
    replace_incomparable_champion: bool = Field(
        default=False,
        description=(
            "When the current champion cannot be scored on the new evaluation window (another horizon, "
            "features missing), let a version that passes the other checks replace it. Off: it stays "
            "champion and the new version is registered as challenger (the reason is in 'gate')."
        ),
    )
    num_threads: int = Field(
        default=1,
        ge=0,
        description=(
            "LightGBM threads per fit (0: all cores). 1 by default: the study fits many small models, "
            "and on a shared 2-core host 2 OpenMP threads were ~25% faster when idle but stalled up to "
            "~100x when another process (a concurrent run, the UI) held a core."
        ),
    )


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            tables.MODEL.key,
            deps=[tables.TRAINING_SET.key],
            description=(
                "LightGBM return model tuned with Optuna on purged walk-forward CV, evaluated on a "
                "held-out final window against zero, momentum, short-term reversal and ridge baselines, "
                "logged and registered in MLflow. Promoted to alias 'champion' only if it shows skill, "
                "beats the best baseline significantly (HAC test) and beats the champion."
            ),
            kinds={"lightgbm", "optuna", "mlflow"},
        ),
        dg.AssetSpec(
            tables.MODEL_EVALUATIONS.key,
            deps=[tables.TRAINING_SET.key],
            description=(
                "Per model version and forecast (model, zero, momentum, reversal, ridge, champion re-scored "
                "on the same window): its metrics, the model's advantage over each baseline with its HAC "
                "p-value, the gate's reasons and the champion version compared with."
            ),
            kinds={"parquet"},
        ),
    ],
    group_name="gold",
    can_subset=False,
)
def gold_model(
    context: dg.AssetExecutionContext,
    config: ModelConfig,
    lake: LakeResource,
    warehouse: WarehouseResource,
    mlflow_registry: MlflowResource,
) -> Iterator[dg.MaterializeResult]:
    from crypto_platform.ml import registry
    from crypto_platform.ml.calibration import calibration_png, rank_bins
    from crypto_platform.ml.evaluation import evaluation_rows, forecast_table

    df, horizon = _training_set(lake, config)
    context.log.info(
        f"training on {df.height} rows, horizon {horizon} min, {config.n_trials} Optuna trials, "
        f"{config.num_threads} LightGBM thread(s)"
    )
    result = _train(df, horizon, config)
    if result.dropped_features:
        context.log.warning(f"features not learned from (unusable in training): {result.dropped_features}")
    window = df.filter((pl.col("ts") >= result.holdout_start) & (pl.col("ts") <= result.holdout_end))
    current = registry.compare_champion(
        mlflow_registry.uri, mlflow_registry.model_name, window, horizon=horizon
    )
    for note in [*current.notes, *([current.incomparable] if current.incomparable else [])]:
        context.log.warning(f"champion: {note}")
    decision = _gate(result, current, config)
    bins = rank_bins(result.holdout, overlap=horizon)
    title = f"{mlflow_registry.model_name}: {horizon}-minute forecast, holdout"
    png = calibration_png(result.holdout, bins, title=title)
    info = _register(result, df, decision, png, mlflow_registry, config.seed)
    table = forecast_table(result.evaluation, current.metrics, config.primary_metric)
    evals = evaluation_rows(
        table,
        info,
        decision,
        champion_version=current.info.version if current.info else None,
        window=(result.holdout_start, result.holdout_end),
        trained_at=datetime.now(UTC),
    )
    lake.write_table(evals, tables.MODEL_EVALUATIONS, name=f"v{int(info.version):05d}")
    warehouse.refresh_views(lake, [tables.MODEL_EVALUATIONS])
    meta = _model_metadata(result, info, decision, current, table, bins, png)
    context.log.info(f"model {info.name} v{info.version}: {meta['decision']}")
    yield dg.MaterializeResult(asset_key=tables.MODEL.key, metadata=meta)
    yield dg.MaterializeResult(
        asset_key=tables.MODEL_EVALUATIONS.key,
        metadata={"rows": evals.height, "model_version": int(info.version)},
    )


def _training_set(lake: LakeResource, config: ModelConfig) -> tuple[pl.DataFrame, int]:
    """The stored training set and its one label horizon (a clear failure when it cannot be used)."""
    from crypto_platform.ml.evaluation import HIGHER_IS_BETTER

    if config.primary_metric not in HIGHER_IS_BETTER:
        raise dg.Failure(f"primary_metric {config.primary_metric!r} is not one of {sorted(HIGHER_IS_BETTER)}")
    df = lake.read_table(tables.TRAINING_SET)
    if df is None or df.is_empty():
        raise dg.Failure("gold/training_set is empty or missing; materialize it first")
    horizons = df["horizon"].unique().to_list()
    if len(horizons) != 1:
        raise dg.Failure(f"gold/training_set mixes label horizons {sorted(horizons)}; rebuild it")
    return df, int(horizons[0])


def _train(df: pl.DataFrame, horizon: int, config: ModelConfig) -> "TrainResult":
    """`ml.training.train` with the asset's config; bad data or fractions fail the run with the reason."""
    from crypto_platform.ml.training import train

    try:
        return train(
            df,
            FEATURE_COLUMNS,
            horizon=horizon,
            n_trials=config.n_trials,
            seed=config.seed,
            n_folds=config.n_folds,
            holdout_fraction=config.holdout_fraction,
            timeout_s=config.timeout_s,
            num_threads=config.num_threads,
            eval_from=config.eval_from or None,
            eval_to=config.eval_to or None,
        )
    except ValueError as exc:  # too little data, bad fractions or eval dates: say so, no traceback hunt
        raise dg.Failure(f"training failed: {exc}") from exc


def _gate(result: "TrainResult", current: "ChampionComparison", config: ModelConfig) -> "GateDecision":
    """The skill gate on the holdout against the best baseline and the champion re-scored on the same window;
    the comparison's notes (why it favours the champion) are added to the reasons."""
    from crypto_platform.ml.evaluation import skill_gate, with_champion_notes

    decision = skill_gate(
        result.evaluation.model,
        result.evaluation.momentum,
        current.metrics,
        config.primary_metric,  # type: ignore[arg-type]
        incomparable_champion=current.incomparable,
        replace_incomparable=config.replace_incomparable_champion,
        baselines=result.evaluation.best_baseline(config.primary_metric),
    )
    return with_champion_notes(decision, current.notes)


def _register(
    result: "TrainResult",
    df: pl.DataFrame,
    decision: "GateDecision",
    png: bytes | None,
    res: MlflowResource,
    seed: int,
) -> "ModelVersionInfo":
    """Log the run (with a drift reference sample and the calibration PNG) and register the version;
    the gate's decision sets its alias."""
    from crypto_platform.ml import registry
    from crypto_platform.ml.calibration import CALIBRATION_PNG

    return registry.log_and_register(
        result,
        tracking_uri=res.uri,
        model_name=res.model_name,
        feature_cols=FEATURE_COLUMNS,
        reference_features=df.select(*INDEX_COLUMNS, *FEATURE_COLUMNS).sample(
            n=min(50_000, df.height), seed=seed
        ),
        input_example=df.head(5),
        decision=decision,
        artifact_location=res.artifacts,
        extra_artifacts={CALIBRATION_PNG: png} if png is not None else None,
    )


def _model_metadata(
    result: "TrainResult",
    info: "ModelVersionInfo",
    decision: "GateDecision",
    current: "ChampionComparison",
    table: pl.DataFrame,
    bins: pl.DataFrame,
    png: bytes | None,
) -> dict[str, Any]:
    """gold/model's materialization metadata: the version, the gate's verdict and reasons, holdout
    metrics, the evaluation table, importance, calibration, the Optuna study and the champion compared."""
    from crypto_platform.ml.calibration import calibration_markdown
    from crypto_platform.ml.evaluation import champion_markdown
    from crypto_platform.ml.reporting import estimate_markdown, features_markdown

    m = result.evaluation.model
    return {
        "model_uri": info.model_uri,
        "version": int(info.version),
        "alias": str(info.alias),
        "decision": "promoted to champion" if decision.promote else "registered as challenger (not promoted)",
        "gate": dg.MetadataValue.md("\n".join(f"- {r}" for r in decision.reasons)),
        "rank_ic": m.rank_ic,
        "hit_rate": m.hit_rate,
        "hit_p_value": m.hit_p_value,
        "mae": m.mae,
        "rmse": m.rmse,
        "evaluation": dg.MetadataValue.md(frame_markdown(table)),
        "importance_gain_top15": dg.MetadataValue.md(frame_markdown(result.evaluation.importance.head(15))),
        "predicted_vs_realized": dg.MetadataValue.md(calibration_markdown(bins, png, info.run_id)),
        "cv_rank_ic": result.best_value,
        "optimism": result.optimism,
        "estimate": dg.MetadataValue.md(estimate_markdown(result)),
        "features": dg.MetadataValue.md(features_markdown(result)),
        "optuna": dg.MetadataValue.json(
            {
                "best_trial": result.best_trial,
                "best_cv_rank_ic": result.best_value,
                "n_trials": result.n_trials,
                "n_pruned": result.n_pruned,
                "cv_scores": result.cv_scores,
            }
        ),
        "champion_compared": dg.MetadataValue.md(champion_markdown(current)),
        "eval_window": f"{result.holdout_start} .. {result.holdout_end}",
        "rows_train": result.n_train,
        "rows_holdout": result.n_holdout,
    }
