"""gold layer: causal features, point-in-time labels, training set, model (MLflow) and predictions.

Features and predictions are partitioned like the silver candles and computed by the same function
(`transforms.features.build_features`) for training and serving, so there is no training-serving skew.
"""


import math
from datetime import UTC, datetime, timedelta

import dagster as dg
import polars as pl
from pydantic import Field

from crypto_platform.assets._meta import summarize
from crypto_platform.assets.silver import CANDLES_1M
from crypto_platform.partitions import DayPartition, partitions_of, single_run, trade_partitions
from crypto_platform.resources.lake import LakeResource
from crypto_platform.resources.mlflow import MlflowResource
from crypto_platform.resources.warehouse import View, WarehouseResource
from crypto_platform.settings import load_universe
from crypto_platform.transforms.features import FEATURE_COLUMNS, INDEX_COLUMNS, LOOKBACK_MINUTES, build_features
from crypto_platform.transforms.labels import forward_return_labels
from crypto_platform.transforms.ohlcv_import import fill_missing_bars

FEATURES = dg.AssetKey(["gold", "features"])
LABELS = dg.AssetKey(["gold", "labels"])
TRAINING_SET = dg.AssetKey(["gold", "training_set"])
TRAINING_SUMMARY = dg.AssetKey(["gold", "training_set_summary"])
MODEL = dg.AssetKey(["gold", "model"])
MODEL_EVALUATIONS = dg.AssetKey(["gold", "model_evaluations"])
PREDICTIONS = dg.AssetKey(["gold", "predictions"])
HISTORY_DAYS = math.ceil(LOOKBACK_MINUTES / (24 * 60))  # earlier days a feature day needs
DEFAULT_HORIZON = 5


def _candles(lake: LakeResource, part: DayPartition, days: range) -> pl.DataFrame | None:
    """1-minute candles of the partition's instrument over days relative to it, on a gap-free grid."""
    parts = [DayPartition(part.instrument, part.day + timedelta(days=d)) for d in days]
    df = lake.read_partitions("silver", "candles_1m", parts)
    if df is None or df.is_empty():
        return None
    return fill_missing_bars(df.sort("ts"))


def _day(df: pl.DataFrame, part: DayPartition) -> pl.DataFrame:
    return df.filter(
        (pl.col("exchange") == part.instrument.exchange)
        & (pl.col("symbol") == part.instrument.symbol)
        & (pl.col("ts") >= part.start)
        & (pl.col("ts") < part.end)
    )


def features_for(lake: LakeResource, part: DayPartition) -> pl.DataFrame:
    """Features of one (instrument, day): its candles plus same-exchange peers for cross-symbol features."""
    own = _candles(lake, part, range(-HISTORY_DAYS, 1))
    if own is None or _day(own, part).is_empty():
        raise dg.Failure(f"silver/candles_1m {part} has no candles; materialize the silver layer first")
    peers = [
        c
        for inst in load_universe().instruments
        if inst.exchange == part.instrument.exchange and inst != part.instrument
        if (c := _candles(lake, DayPartition(inst, part.day), range(-HISTORY_DAYS, 1))) is not None
    ]
    candles = pl.concat([own, *peers], how="vertical").filter(pl.col("close").is_not_null())
    return _day(build_features(candles), part)


@dg.asset(
    key=FEATURES,
    deps=[CANDLES_1M],
    partitions_def=trade_partitions,
    backfill_policy=single_run,
    group_name="gold",
    kinds={"parquet", "polars"},
    description=(
        f"{len(FEATURE_COLUMNS)} causal features per instrument and minute (returns, volatility, RSI, "
        "MACD, Bollinger %b, ATR, volume z-score, order-flow imbalance, VWAP distance, trade intensity, "
        "calendar encodings, cross-symbol returns). A feature at minute t uses only candles <= t."
    ),
)
def gold_features(
    context: dg.AssetExecutionContext, lake: LakeResource, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    stats = []
    for part in partitions_of(context):
        df = features_for(lake, part)
        info = lake.write_partition(df, "gold", "features", part)
        nulls = df.select(pl.col(FEATURE_COLUMNS).null_count()).sum_horizontal().item() if df.height else 0
        stats.append({"partition": part.key, "rows": info.rows, "null_values": nulls, "bytes": info.bytes,
                      "from": df["ts"].min(), "to": df["ts"].max()})
    warehouse.refresh_views(lake, [View("gold", "features")])
    meta = summarize(stats, sums=("rows", "null_values", "bytes"))
    meta["feature_columns"] = dg.MetadataValue.json(FEATURE_COLUMNS)
    return dg.MaterializeResult(metadata=meta)


class LabelConfig(dg.Config):
    horizon_minutes: int = Field(default=DEFAULT_HORIZON, description="Forward-return horizon in minutes.")


@dg.asset(
    key=LABELS,
    deps=[CANDLES_1M],
    partitions_def=trade_partitions,
    backfill_policy=single_run,
    group_name="gold",
    kinds={"parquet", "polars"},
    description=(
        "Forward log return over the horizon (default 5 minutes) per instrument and minute, present "
        "only when the horizon is complete, with the time the label became known (label_available_at)."
    ),
)
def gold_labels(
    context: dg.AssetExecutionContext, config: LabelConfig, lake: LakeResource, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    stats = []
    for part in partitions_of(context):
        candles = _candles(lake, part, range(0, 2))  # the next day completes the last horizons
        if candles is None or _day(candles, part).is_empty():
            raise dg.Failure(f"silver/candles_1m {part} has no candles; materialize the silver layer first")
        priced = candles.filter(pl.col("close").is_not_null())
        df = _day(forward_return_labels(priced, config.horizon_minutes), part)
        info = lake.write_partition(df, "gold", "labels", part)
        stats.append({"partition": part.key, "rows": info.rows, "bytes": info.bytes})
    warehouse.refresh_views(lake, [View("gold", "labels")])
    return dg.MaterializeResult(metadata=summarize(stats))


class TrainingSetConfig(dg.Config):
    window_days: float = Field(default=30.0, description="Rolling window: days of labelled minutes to train on.")
    horizon_minutes: int = Field(default=DEFAULT_HORIZON, description="Label horizon in minutes.")


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            TRAINING_SET,
            deps=[FEATURES, LABELS],
            description="Features joined point-in-time to the labels known now, over a rolling window.",
            kinds={"parquet", "polars"},
        ),
        dg.AssetSpec(
            TRAINING_SUMMARY,
            deps=[FEATURES, LABELS],
            description="Per instrument: rows, time span and label statistics of the training set.",
            kinds={"parquet", "duckdb"},
        ),
    ],
    group_name="gold",
    can_subset=False,
)
def gold_training_set(
    context: dg.AssetExecutionContext, config: TrainingSetConfig, lake: LakeResource, warehouse: WarehouseResource
):
    from crypto_platform.ml.dataset import rolling_window, training_frame

    features, labels = lake.scan_table("gold", "features"), lake.scan_table("gold", "labels")
    if features is None or labels is None:
        raise dg.Failure("gold/features and gold/labels have no partitions yet; materialize them first")
    as_of = datetime.now(UTC)
    labels_df = labels.filter(pl.col("horizon") == config.horizon_minutes).collect()
    if labels_df.is_empty():
        raise dg.Failure(f"gold/labels holds no label of horizon {config.horizon_minutes} minutes yet")
    end = labels_df["ts"].max() + timedelta(minutes=1)
    start = end - timedelta(days=config.window_days)
    feats = features.filter((pl.col("ts") >= start) & (pl.col("ts") < end)).collect()
    df = rolling_window(training_frame(feats, labels_df, as_of, horizon=config.horizon_minutes), end,
                        config.window_days)
    if df.is_empty():
        raise dg.Failure("the training window holds no labelled feature rows")
    summary = df.group_by("exchange", "symbol").agg(
        pl.len().alias("rows"), pl.col("ts").min().alias("from"), pl.col("ts").max().alias("to"),
        pl.col("label").mean().alias("label_mean"), pl.col("label").std().alias("label_std"),
        (pl.col("label") > 0).mean().alias("share_up"),
    ).sort("exchange", "symbol").with_columns(pl.lit(as_of).alias("as_of"))
    info = lake.write_table(df, "gold", "training_set")
    lake.write_table(summary, "gold", "training_set_summary")
    warehouse.refresh_views(
        lake, [View("gold", "training_set", partitioned=False), View("gold", "training_set_summary", partitioned=False)]
    )
    context.log.info(f"training set: {df.height} rows {df['ts'].min()} .. {df['ts'].max()}")
    yield dg.MaterializeResult(
        asset_key=TRAINING_SET,
        metadata={
            "rows": dg.MetadataValue.int(df.height),
            "bytes": dg.MetadataValue.int(info.bytes),
            "time_from": str(df["ts"].min()),
            "time_to": str(df["ts"].max()),
            "as_of": str(as_of),
            "horizon_minutes": config.horizon_minutes,
            "window_days": config.window_days,
        },
    )
    yield dg.MaterializeResult(
        asset_key=TRAINING_SUMMARY,
        metadata={"summary": dg.MetadataValue.md(_markdown(summary))},
    )


def _markdown(df: pl.DataFrame, floats: str = "{:.6g}") -> str:
    """A small frame as a markdown table for the UI."""
    cols = df.columns
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in df.iter_rows():
        lines.append("| " + " | ".join(floats.format(v) if isinstance(v, float) else str(v) for v in row) + " |")
    return "\n".join(lines)


class ModelConfig(dg.Config):
    n_trials: int = Field(default=20, description="Optuna trials (seeded TPE sampler, median pruning).")
    seed: int = Field(default=42, description="Seed of the sampler and of LightGBM.")
    n_folds: int = Field(default=4, description="Walk-forward CV folds (purged by the label horizon).")
    holdout_fraction: float = Field(default=0.2, description="Final share of time held out for evaluation.")
    primary_metric: str = Field(default="rank_ic", description="Metric the challenger must beat the champion on.")
    timeout_s: float = Field(default=900.0, description="Upper bound on the Optuna study's wall time.")


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            MODEL,
            deps=[TRAINING_SET],
            description=(
                "LightGBM return model tuned with Optuna on purged walk-forward CV, evaluated on a "
                "held-out final window against zero and momentum baselines, logged and registered in "
                "MLflow. Promoted to alias 'champion' only if it shows skill and beats the champion."
            ),
            kinds={"lightgbm", "optuna", "mlflow"},
        ),
        dg.AssetSpec(
            MODEL_EVALUATIONS,
            deps=[TRAINING_SET],
            description="One row per model version and forecast (model, zero, momentum, champion): all metrics.",
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
):
    from crypto_platform.ml import registry
    from crypto_platform.ml.evaluation import skill_gate
    from crypto_platform.ml.training import train

    df = lake.read_table("gold", "training_set")
    if df is None or df.is_empty():
        raise dg.Failure("gold/training_set is empty or missing; materialize it first")
    horizon = int(df["horizon"][0])
    context.log.info(f"training on {df.height} rows, {config.n_trials} Optuna trials")
    result = train(df, FEATURE_COLUMNS, horizon=horizon, n_trials=config.n_trials, seed=config.seed,
                   n_folds=config.n_folds, holdout_fraction=config.holdout_fraction, timeout_s=config.timeout_s)
    window = df.filter((pl.col("ts") >= result.holdout_start) & (pl.col("ts") <= result.holdout_end))
    champion = registry.champion_metrics(mlflow_registry.uri, mlflow_registry.model_name, window)
    decision = skill_gate(result.evaluation.model, result.evaluation.momentum, champion, config.primary_metric)  # type: ignore[arg-type]
    reference = df.select(*INDEX_COLUMNS, *FEATURE_COLUMNS).sample(n=min(50_000, df.height), seed=config.seed)
    info = registry.log_and_register(
        result, tracking_uri=mlflow_registry.uri, model_name=mlflow_registry.model_name,
        feature_cols=FEATURE_COLUMNS, reference_features=reference, input_example=df.head(5),
        decision=decision, artifact_location=mlflow_registry.artifacts,
    )
    table = result.evaluation.table()
    if champion is not None:
        table = pl.concat([table, pl.DataFrame([{"forecast": "champion", **champion.as_dict()}])], how="diagonal")
    evals = table.with_columns(
        pl.lit(info.name).alias("model_name"), pl.lit(int(info.version)).alias("model_version"),
        pl.lit(info.alias).alias("alias"), pl.lit(decision.promote).alias("promoted"),
        pl.lit(result.holdout_start).alias("eval_window_start"), pl.lit(result.holdout_end).alias("eval_window_end"),
        pl.lit(datetime.now(UTC)).alias("trained_at"),
    )
    lake.write_table(evals, "gold", "model_evaluations", name=f"v{int(info.version):05d}")
    warehouse.refresh_views(lake, [View("gold", "model_evaluations", partitioned=False)])
    verdict = "promoted to champion" if decision.promote else "registered as challenger (not promoted)"
    context.log.info(f"model {info.name} v{info.version}: {verdict}")
    m = result.evaluation.model
    yield dg.MaterializeResult(
        asset_key=MODEL,
        metadata={
            "model_uri": info.model_uri,
            "version": int(info.version),
            "alias": str(info.alias),
            "decision": verdict,
            "gate": dg.MetadataValue.md("\n".join(f"- {r}" for r in decision.reasons)),
            "rank_ic": m.rank_ic,
            "hit_rate": m.hit_rate,
            "hit_p_value": m.hit_p_value,
            "mae": m.mae,
            "rmse": m.rmse,
            "evaluation": dg.MetadataValue.md(_markdown(table)),
            "importance_gain_top15": dg.MetadataValue.md(_markdown(result.evaluation.importance.head(15))),
            "predicted_vs_realized": dg.MetadataValue.md(_calibration_plot(result.holdout)),
            "optuna": dg.MetadataValue.json(
                {"best_trial": result.best_trial, "best_cv_rank_ic": result.best_value,
                 "n_trials": result.n_trials, "n_pruned": result.n_pruned, "cv_scores": result.cv_scores}
            ),
            "eval_window": f"{result.holdout_start} .. {result.holdout_end}",
            "rows_train": result.n_train,
            "rows_holdout": result.n_holdout,
        },
    )
    yield dg.MaterializeResult(asset_key=MODEL_EVALUATIONS, metadata={"rows": evals.height,
                                                                      "model_version": int(info.version)})


def _calibration_plot(holdout: pl.DataFrame, bins: int = 10) -> str:
    """Predicted vs realized returns by prediction decile, as a markdown bar chart (bp = 1e-4)."""
    if holdout.height < bins:
        return "too few holdout rows for a plot"
    df = holdout.with_columns(pl.col("prediction").qcut(bins, labels=[f"q{i + 1:02d}" for i in range(bins)],
                                                        allow_duplicates=True).alias("decile"))
    agg = df.group_by("decile").agg(
        pl.len().alias("n"), (pl.col("prediction").mean() * 1e4).alias("pred_bp"),
        (pl.col("label").mean() * 1e4).alias("realized_bp"),
    ).sort("decile")
    scale = max(1e-9, float(agg["realized_bp"].abs().max()))
    lines = ["| decile | n | mean predicted (bp) | mean realized (bp) | realized |", "|---|---|---|---|---|"]
    for dec, n, p, r in agg.iter_rows():
        bar = ("█" * round(10 * abs(r) / scale)) or "·"
        lines.append(f"| {dec} | {n} | {p:+.2f} | {r:+.2f} | {'-' if r < 0 else '+'}{bar} |")
    return "\n".join(lines)


class PredictionConfig(dg.Config):
    allow_unqualified_model: bool = Field(
        default=False,
        description=(
            "Serve the latest 'challenger' when no version qualifies as 'champion'. Off by default: a "
            "model without skill is never served unless you ask for it (the embedded demo does, and says so)."
        ),
    )


@dg.asset(
    key=PREDICTIONS,
    deps=[FEATURES, MODEL],
    partitions_def=trade_partitions,
    backfill_policy=single_run,
    group_name="gold",
    kinds={"parquet", "mlflow"},
    description=(
        "Batch predictions of the forward return per instrument and minute by the MLflow 'champion' "
        "model (loaded by alias), with the implied price and the model name and version."
    ),
)
def gold_predictions(
    context: dg.AssetExecutionContext,
    config: PredictionConfig,
    lake: LakeResource,
    warehouse: WarehouseResource,
    mlflow_registry: MlflowResource,
) -> dg.MaterializeResult:
    model, qualified = _serving_model(mlflow_registry, config.allow_unqualified_model)
    if not qualified:
        context.log.warning(
            f"serving UNQUALIFIED model {model.info.name} v{model.info.version} ('challenger'): "
            "allow_unqualified_model is set"
        )
    stats = []
    for part in partitions_of(context):
        feats = lake.read_partition("gold", "features", part)
        candles = lake.read_partition("silver", "candles_1m", part)
        if feats is None or candles is None:
            raise dg.Failure(f"gold/features {part} is not materialized yet; materialize it first")
        df = prediction_rows(feats, candles, model.predict(feats), model.info, qualified)
        info = lake.write_partition(df, "gold", "predictions", part)
        stats.append({"partition": part.key, "rows": info.rows, "bytes": info.bytes,
                      "from": df["ts"].min(), "to": df["ts"].max()})
    warehouse.refresh_views(lake, [View("gold", "predictions")])
    meta = summarize(stats)
    meta.update({"model": f"{model.info.name} v{model.info.version}", "alias": str(model.info.alias),
                 "qualified": qualified})
    return dg.MaterializeResult(metadata=meta)


def prediction_rows(feats: pl.DataFrame, candles: pl.DataFrame, pred, info, qualified: bool) -> pl.DataFrame:
    """Prediction table rows: forecast, implied price from the minute's close, model identity."""
    close = candles.select(*INDEX_COLUMNS, "close")
    return (
        feats.select(INDEX_COLUMNS)
        .with_columns(
            pl.lit(int(info.horizon), pl.Int32).alias("horizon"),
            pl.Series("predicted_return", pred, dtype=pl.Float64),
        )
        .join(close, on=INDEX_COLUMNS, how="left")
        .with_columns(
            (pl.col("close") * pl.col("predicted_return").exp()).alias("implied_price"),
            (pl.col("ts") + pl.duration(minutes=pl.col("horizon"))).alias("target_ts"),  # bar whose close is forecast
            pl.lit(info.name).alias("model_name"),
            pl.lit(int(info.version)).alias("model_version"),
            pl.lit(qualified).alias("qualified"),
            pl.lit(datetime.now(UTC)).alias("predicted_at"),
        )
    )


def _serving_model(res: MlflowResource, allow_unqualified: bool):
    """The champion; the latest challenger only when explicitly allowed; otherwise a named failure."""
    from crypto_platform.ml import registry

    try:
        return registry.load_champion(res.uri, res.model_name), True
    except registry.NoChampionError as exc:
        if not allow_unqualified:
            raise dg.Failure(
                description=(
                    f"NoChampionError: registered model {res.model_name!r} has no 'champion' version at "
                    f"{res.uri}: no trained model has passed the promotion gate (skill vs baselines), so "
                    "nothing is served. Materialize gold/model (see its 'gate' metadata for why a version "
                    "was not promoted), or set allow_unqualified_model: true to serve the challenger."
                ),
                metadata={"model_name": res.model_name, "tracking_uri": res.uri},
            ) from exc
        return registry.load_alias(res.uri, res.model_name, registry.CHALLENGER), False
