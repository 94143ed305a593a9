"""gold layer: causal features, point-in-time labels, training set, model (MLflow) and predictions.

Features and predictions are partitioned like the silver candles and computed by the same function
(`transforms.features.build_features`) for training and serving, so there is no training-serving skew.

Silver is read as it is: a minute absent from silver (a day not materialized, a recording that
ended, an import that stopped) is unknown time, and gold never fills it. Feature windows restart
after such a gap and labels are only made where bar t+h exists. Leading empty minutes that silver
could not price (no earlier close when it built them) take the close of the minute before when
that minute is known, else they are dropped (`priced_candles`).

Labels are written for every model horizon (1, 5, 15, 60 minutes); the training set picks one
(`horizon_minutes`), the model records it and predictions forecast that horizon, so the horizon is
configured once. The model's LightGBM thread count is `ModelConfig.num_threads` (default 1).
"""

import base64
import dataclasses
import math
from datetime import UTC, datetime, timedelta

import dagster as dg
import polars as pl
from pydantic import Field

from crypto_platform import tables
from crypto_platform.metadata import summarize
from crypto_platform.ml.calibration import PNG_EMBED_LIMIT, bins_markdown, calibration_png, rank_bins
from crypto_platform.partitions import DayPartition, partitions_of, single_run
from crypto_platform.resources.lake import LakeResource
from crypto_platform.resources.mlflow import MlflowResource
from crypto_platform.resources.warehouse import WarehouseResource
from crypto_platform.settings import Instrument, load_universe
from crypto_platform.transforms.candles import candle_violations, describe_violations
from crypto_platform.transforms.features import (
    FEATURE_COLUMNS,
    FEATURES_SCHEMA,
    INDEX_COLUMNS,
    KEYS,
    LOOKBACK_MINUTES,
    RETURN_HORIZONS,
    segmented_features,
)
from crypto_platform.transforms.gold_candles import MINUTE, priced_candles
from crypto_platform.transforms.labels import LABEL_COLUMNS, forward_return_labels

CALIBRATION_PNG = "plots/predicted_vs_realized.png"  # artifact of each model's MLflow run
HISTORY_DAYS = math.ceil(LOOKBACK_MINUTES / (24 * 60))  # earlier days a feature day needs
DEFAULT_HORIZON = 5
# Labels are written for every horizon the model can be trained on (the momentum baseline of a
# horizon h is the feature ret_h), so the training set's horizon can never disagree with the labels.
LABEL_HORIZONS: tuple[int, ...] = RETURN_HORIZONS


# ----------------------------------------------------------------------------------------------
# silver candles as gold reads them


def _silver(lake: LakeResource, inst: Instrument, day, offsets: range) -> pl.DataFrame | None:
    """Priced 1-minute candles of one instrument over days relative to `day` (None: none written)."""
    parts = [DayPartition(inst, day + timedelta(days=d)) for d in offsets]
    df = lake.read_partitions(tables.CANDLES_1M, parts)
    if df is not None and (bad := candle_violations(df)).height:  # even when candles_1m_suite did not run
        part = DayPartition(inst, bad["ts"].min().date())
        raise dg.Failure(
            f"silver/candles_1m {part} is corrupted, refusing to build gold from it: "
            f"{describe_violations(bad.filter(pl.col('ts').dt.date() == part.day))}. Re-materialize or "
            "re-import that partition (the candles_1m_suite check reports every expectation)."
        )
    return None if df is None else priced_candles(df)


def _day(df: pl.DataFrame, part: DayPartition) -> pl.DataFrame:
    return df.filter(
        (pl.col("exchange") == part.instrument.exchange)
        & (pl.col("symbol") == part.instrument.symbol)
        & (pl.col("ts") >= part.start)
        & (pl.col("ts") < part.end)
    )


def _require_silver(lake: LakeResource, part: DayPartition) -> None:
    if not lake.has_partition(tables.CANDLES_1M, part):
        raise dg.Failure(
            f"silver/candles_1m {part} is not materialized; materialize the silver layer (or import its "
            "OHLCV history with import_candles_job) first"
        )


def features_for(lake: LakeResource, part: DayPartition) -> pl.DataFrame:
    """Features of one (instrument, day): its candles plus same-exchange peers for cross-symbol features."""
    _require_silver(lake, part)
    own = _silver(lake, part.instrument, part.day, range(-HISTORY_DAYS, 1))
    if own is None or _day(own, part).is_empty():
        return pl.DataFrame(schema=FEATURES_SCHEMA)  # no priced minute that day (see priced_candles)
    peers = [
        c
        for inst in load_universe().instruments
        if inst.exchange == part.instrument.exchange and inst != part.instrument
        if (c := _silver(lake, inst, part.day, range(-HISTORY_DAYS, 1))) is not None and c.height
    ]
    candles = pl.concat([own, *peers], how="vertical")
    return _day(segmented_features(candles), part)


def labels_for(lake: LakeResource, part: DayPartition, horizons: list[int]) -> pl.DataFrame:
    """Labels of one (instrument, day) for each horizon; the next day's candles complete the last ones."""
    _require_silver(lake, part)
    candles = _silver(lake, part.instrument, part.day, range(-1, 2))  # day before: prices of leading empties
    if candles is None or _day(candles, part).is_empty():
        return pl.DataFrame(schema=tables.LABELS.schema)
    frames = [_day(forward_return_labels(candles, h), part) for h in horizons]
    return pl.concat(frames, how="vertical").select(LABEL_COLUMNS).sort("horizon", *INDEX_COLUMNS)


@dg.asset(
    key=tables.FEATURES.key,
    deps=[tables.CANDLES_1M.key],
    partitions_def=tables.FEATURES.partitions_def,
    backfill_policy=single_run,
    group_name="gold",
    kinds={"parquet", "polars"},
    description=(
        f"{len(FEATURE_COLUMNS)} causal features per instrument and minute (returns, volatility, RSI, "
        "MACD, Bollinger %b, ATR, volume z-score, order-flow imbalance, VWAP distance, trade intensity, "
        "calendar encodings, cross-symbol returns). A feature at minute t uses only candles <= t; "
        "windows never span minutes absent from silver (they restart after a gap)."
    ),
)
def gold_features(
    context: dg.AssetExecutionContext, lake: LakeResource, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    stats = []
    for part in partitions_of(context):
        df = features_for(lake, part)
        if df.is_empty():
            context.log.warning(f"features {part}: no priced candle that day; wrote an empty partition")
        info = lake.write_partition(df, tables.FEATURES, part)
        nulls = df.select(pl.col(FEATURE_COLUMNS).null_count()).sum_horizontal().item() if df.height else 0
        stats.append(
            {
                "partition": part.key,
                "rows": info.rows,
                "null_values": nulls,
                "bytes": info.bytes,
                "from": df["ts"].min(),
                "to": df["ts"].max(),
            }
        )
    views = warehouse.refresh_views(lake, [tables.FEATURES])
    meta = {**summarize(stats, sums=("rows", "null_values", "bytes")), **views.metadata}
    meta["feature_columns"] = dg.MetadataValue.json(FEATURE_COLUMNS)
    return dg.MaterializeResult(metadata=meta)


class LabelConfig(dg.Config):
    horizons: list[int] = Field(
        default=list(LABEL_HORIZONS),
        description="Forward-return horizons in minutes; one label row per (instrument, minute, horizon).",
    )


@dg.asset(
    key=tables.LABELS.key,
    deps=[tables.CANDLES_1M.key],
    partitions_def=tables.LABELS.partitions_def,
    backfill_policy=single_run,
    group_name="gold",
    kinds={"parquet", "polars"},
    description=(
        f"Forward log returns over {', '.join(map(str, LABEL_HORIZONS))} minutes (column horizon) per "
        "instrument and minute, present only when bar t+h exists in silver (never across a gap), with "
        "the time the label became known (label_available_at)."
    ),
)
def gold_labels(
    context: dg.AssetExecutionContext, config: LabelConfig, lake: LakeResource, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    horizons = sorted(set(config.horizons))
    if not horizons or min(horizons) < 1:
        raise dg.Failure(f"labels: horizons must be positive minutes, got {config.horizons}")
    stats = []
    for part in partitions_of(context):
        df = labels_for(lake, part, horizons)
        info = lake.write_partition(df, tables.LABELS, part)
        per_h = dict(df.group_by("horizon").len().rows()) if df.height else {}
        stats.append(
            {
                "partition": part.key,
                "rows": info.rows,
                "bytes": info.bytes,
                **{f"h{h}": per_h.get(h, 0) for h in horizons},
            }
        )
    views = warehouse.refresh_views(lake, [tables.LABELS])
    meta = {**summarize(stats), **views.metadata}
    meta["horizons"] = dg.MetadataValue.json(horizons)
    return dg.MaterializeResult(metadata=meta)


class TrainingSetConfig(dg.Config):
    window_days: float = Field(
        default=30.0, description="Rolling window: days of labelled minutes to train on."
    )
    horizon_minutes: int = Field(
        default=DEFAULT_HORIZON,
        description=f"Label horizon in minutes, one of {', '.join(map(str, LABEL_HORIZONS))} (its momentum "
        "baseline is the feature ret_<h>); the model and its predictions take it over.",
    )
    instruments: list[str] = Field(
        default=[], description="Instrument keys to train on (e.g. ['ftx.BTC-USD-USD']); empty: all."
    )


def _instrument_filter(keys: list[str]) -> pl.Expr | None:
    """Row filter on (exchange, symbol) for instrument keys (unknown keys: a clear failure)."""
    if not keys:
        return None
    from crypto_platform.settings import SettingsError

    try:
        insts = [load_universe().instrument(k) for k in keys]
    except SettingsError as exc:
        raise dg.Failure(f"training set: {exc}") from exc
    return pl.any_horizontal(
        [(pl.col("exchange") == i.exchange) & (pl.col("symbol") == i.symbol) for i in insts]
    )


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            tables.TRAINING_SET.key,
            deps=[tables.FEATURES.key, tables.LABELS.key],
            description="Features joined point-in-time to the labels known now, over a rolling window.",
            kinds={"parquet", "polars"},
        ),
        dg.AssetSpec(
            tables.TRAINING_SUMMARY.key,
            deps=[tables.FEATURES.key, tables.LABELS.key],
            description="Per instrument: rows, labelled share, time span and label statistics of the set.",
            kinds={"parquet", "duckdb"},
        ),
    ],
    group_name="gold",
    can_subset=False,
)
def gold_training_set(
    context: dg.AssetExecutionContext,
    config: TrainingSetConfig,
    lake: LakeResource,
    warehouse: WarehouseResource,
):
    from crypto_platform.ml.dataset import rolling_window, training_frame

    h = config.horizon_minutes
    if h not in LABEL_HORIZONS:
        raise dg.Failure(
            f"training set: horizon_minutes {h} is not one of {list(LABEL_HORIZONS)} (the labels' horizons; "
            f"the momentum baseline of horizon h is the feature ret_h)"
        )
    if config.window_days <= 0:
        raise dg.Failure(f"training set: window_days must be > 0, got {config.window_days}")
    features, labels = lake.scan_table(tables.FEATURES), lake.scan_table(tables.LABELS)
    if features is None or labels is None:
        raise dg.Failure("gold/features and gold/labels have no partitions yet; materialize them first")
    chosen = _instrument_filter(config.instruments)
    if chosen is not None:
        features, labels = features.filter(chosen), labels.filter(chosen)
    as_of = datetime.now(UTC)
    labels_df = labels.filter((pl.col("horizon") == h) & (pl.col("label_available_at") <= as_of)).collect()
    if labels_df.is_empty():
        present = sorted(labels.select(pl.col("horizon").unique()).collect()["horizon"].to_list())
        raise dg.Failure(
            f"gold/labels holds no {h}-minute label known at {as_of:%Y-%m-%d %H:%M} UTC"
            f"{' for ' + ', '.join(config.instruments) if config.instruments else ''} (horizons present: "
            f"{present}); materialize gold/labels with {h} among its horizons"
        )
    end = labels_df["ts"].max() + MINUTE
    start = end - timedelta(days=config.window_days)
    feats = features.filter((pl.col("ts") >= start) & (pl.col("ts") < end)).collect()
    df = rolling_window(training_frame(feats, labels_df, as_of, horizon=h), end, config.window_days)
    if df.is_empty():
        raise dg.Failure(f"the training window [{start}, {end}) holds no labelled feature rows")
    # Feature days without a label of this horizon: labels not (re)materialized for them.
    day = pl.col("ts").dt.date().alias("day")
    unlabelled = (
        feats.select(*KEYS, day)
        .unique()
        .join(labels_df.select(*KEYS, day).unique(), on=[*KEYS, "day"], how="anti")
        .sort(*KEYS, "day")
    )
    if unlabelled.height:
        context.log.warning(
            f"{unlabelled.height} feature partitions in the window have no {h}-minute labels: "
            f"{unlabelled.head(10).rows()}; materialize gold/labels for them"
        )
    feature_rows = feats.group_by(KEYS).len("feature_rows")
    summary = (
        df.group_by(KEYS)
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
            pl.lit(h, pl.Int32).alias("horizon"),
            pl.lit(as_of).alias("as_of"),
        )
        .sort(KEYS)
    )
    info = lake.write_table(df, tables.TRAINING_SET)
    lake.write_table(summary, tables.TRAINING_SUMMARY)
    warehouse.refresh_views(
        lake,
        [
            tables.TRAINING_SET,
            tables.TRAINING_SUMMARY,
        ],
    )
    context.log.info(f"training set: {df.height} rows {df['ts'].min()} .. {df['ts'].max()}, horizon {h} min")
    yield dg.MaterializeResult(
        asset_key=tables.TRAINING_SET.key,
        metadata={
            "rows": dg.MetadataValue.int(df.height),
            "bytes": dg.MetadataValue.int(info.bytes),
            "time_from": str(df["ts"].min()),
            "time_to": str(df["ts"].max()),
            "as_of": str(as_of),
            "horizon_minutes": h,
            "window_days": config.window_days,
            "instruments": dg.MetadataValue.json(
                sorted(f"{e} {s}" for e, s in df.select(KEYS).unique().rows())
            ),
            "unlabelled_feature_partitions": unlabelled.height,
        },
    )
    yield dg.MaterializeResult(
        asset_key=tables.TRAINING_SUMMARY.key,
        metadata={"rows": summary.height, "summary": dg.MetadataValue.md(_markdown(summary))},
    )


def _markdown(df: pl.DataFrame, floats: str = "{:.6g}") -> str:
    """A small frame as a markdown table for the UI."""
    cols = df.columns
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in df.iter_rows():
        lines.append(
            "| " + " | ".join(floats.format(v) if isinstance(v, float) else str(v) for v in row) + " |"
        )
    return "\n".join(lines)


class ModelConfig(dg.Config):
    n_trials: int = Field(default=20, ge=1, description="Optuna trials (seeded TPE sampler, median pruning).")
    seed: int = Field(default=42, description="Seed of the sampler and of LightGBM.")
    n_folds: int = Field(default=4, description="Walk-forward CV folds (purged by the label horizon).")
    holdout_fraction: float = Field(default=0.2, description="Final share of time held out for evaluation.")
    primary_metric: str = Field(
        default="rank_ic",
        description="Metric the challenger must beat the champion on: rank_ic | hit_rate | mae | rmse.",
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
):
    from crypto_platform.ml import registry
    from crypto_platform.ml.evaluation import HIGHER_IS_BETTER, skill_gate
    from crypto_platform.ml.training import train

    if config.primary_metric not in HIGHER_IS_BETTER:
        raise dg.Failure(f"primary_metric {config.primary_metric!r} is not one of {sorted(HIGHER_IS_BETTER)}")
    df = lake.read_table(tables.TRAINING_SET)
    if df is None or df.is_empty():
        raise dg.Failure("gold/training_set is empty or missing; materialize it first")
    horizons = df["horizon"].unique().to_list()
    if len(horizons) != 1:
        raise dg.Failure(f"gold/training_set mixes label horizons {sorted(horizons)}; rebuild it")
    horizon = int(horizons[0])
    context.log.info(
        f"training on {df.height} rows, horizon {horizon} min, {config.n_trials} Optuna trials, "
        f"{config.num_threads} LightGBM thread(s)"
    )
    try:
        result = train(
            df,
            FEATURE_COLUMNS,
            horizon=horizon,
            n_trials=config.n_trials,
            seed=config.seed,
            n_folds=config.n_folds,
            holdout_fraction=config.holdout_fraction,
            timeout_s=config.timeout_s,
            num_threads=config.num_threads,
        )
    except ValueError as exc:  # too little data for the folds, bad fractions: say so, no traceback hunt
        raise dg.Failure(f"training failed: {exc}") from exc
    window = df.filter((pl.col("ts") >= result.holdout_start) & (pl.col("ts") <= result.holdout_end))
    current = registry.compare_champion(
        mlflow_registry.uri, mlflow_registry.model_name, window, horizon=horizon
    )
    champion = current.metrics
    decision = skill_gate(
        result.evaluation.model,
        result.evaluation.momentum,
        champion,
        config.primary_metric,  # type: ignore[arg-type]
        incomparable_champion=current.incomparable,
        replace_incomparable=config.replace_incomparable_champion,
        baselines=result.evaluation.best_baseline(config.primary_metric),
    )
    if current.notes:  # compared, but the comparison favours the champion: say so with the reasons
        decision = dataclasses.replace(decision, reasons=[*decision.reasons, *current.notes])
    for note in [*current.notes, *([current.incomparable] if current.incomparable else [])]:
        context.log.warning(f"champion: {note}")
    bins = rank_bins(result.holdout, overlap=horizon)
    png = calibration_png(
        result.holdout, bins, title=f"{mlflow_registry.model_name}: {horizon}-minute forecast, holdout"
    )
    reference = df.select(*INDEX_COLUMNS, *FEATURE_COLUMNS).sample(n=min(50_000, df.height), seed=config.seed)
    info = registry.log_and_register(
        result,
        tracking_uri=mlflow_registry.uri,
        model_name=mlflow_registry.model_name,
        feature_cols=FEATURE_COLUMNS,
        reference_features=reference,
        input_example=df.head(5),
        decision=decision,
        artifact_location=mlflow_registry.artifacts,
        extra_artifacts={CALIBRATION_PNG: png} if png is not None else None,
    )
    table = result.evaluation.table(config.primary_metric)
    if champion is not None:
        table = pl.concat(
            [table, pl.DataFrame([{"forecast": "champion", **champion.as_dict()}])], how="diagonal"
        )
    evals = table.with_columns(
        pl.lit(info.name).alias("model_name"),
        pl.lit(int(info.version)).alias("model_version"),
        pl.lit(info.alias).alias("alias"),
        pl.lit(decision.promote).alias("promoted"),
        pl.lit("\n".join(decision.reasons)).alias("gate_reasons"),
        pl.lit(current.info.version if current.info else None, pl.String).alias("champion_version"),
        pl.lit(result.holdout_start).alias("eval_window_start"),
        pl.lit(result.holdout_end).alias("eval_window_end"),
        pl.lit(datetime.now(UTC)).alias("trained_at"),
    )
    lake.write_table(evals, tables.MODEL_EVALUATIONS, name=f"v{int(info.version):05d}")
    warehouse.refresh_views(lake, [tables.MODEL_EVALUATIONS])
    verdict = "promoted to champion" if decision.promote else "registered as challenger (not promoted)"
    context.log.info(f"model {info.name} v{info.version}: {verdict}")
    m = result.evaluation.model
    yield dg.MaterializeResult(
        asset_key=tables.MODEL.key,
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
            "predicted_vs_realized": dg.MetadataValue.md(_calibration_md(bins, png, info.run_id)),
            "optuna": dg.MetadataValue.json(
                {
                    "best_trial": result.best_trial,
                    "best_cv_rank_ic": result.best_value,
                    "n_trials": result.n_trials,
                    "n_pruned": result.n_pruned,
                    "cv_scores": result.cv_scores,
                }
            ),
            "champion_compared": dg.MetadataValue.md(_champion_md(current)),
            "eval_window": f"{result.holdout_start} .. {result.holdout_end}",
            "rows_train": result.n_train,
            "rows_holdout": result.n_holdout,
        },
    )
    yield dg.MaterializeResult(
        asset_key=tables.MODEL_EVALUATIONS.key,
        metadata={"rows": evals.height, "model_version": int(info.version)},
    )


def _champion_md(current) -> str:
    """What the gate compared the new version with (champion version and its score, or why not)."""
    if current.info is None:
        return "no champion: nothing to beat"
    who = f"champion v{current.info.version}"
    if current.metrics is None:
        return f"{who} NOT compared: {current.incomparable}"
    m = current.metrics
    text = f"{who} re-scored on this evaluation window: rank IC {m.rank_ic:.4g}, hit rate {m.hit_rate:.4g}"
    return "\n\n".join([text, *current.notes])


def _calibration_md(bins: pl.DataFrame, png: bytes | None, run_id: str) -> str:
    """Predicted vs realized by forecast-rank decile (equal counts), with the PNG when there is one."""
    parts = [bins_markdown(bins, label="decile")]
    if png is None:
        parts.append("(no PNG: matplotlib is not importable in this environment)")
    else:
        parts.append(f"PNG: `runs:/{run_id}/{CALIBRATION_PNG}` ({len(png) / 1e3:.0f} kB)")
        if len(png) < PNG_EMBED_LIMIT:
            parts.append(f"![predicted vs realized](data:image/png;base64,{base64.b64encode(png).decode()})")
    return "\n\n".join(parts)


class PredictionConfig(dg.Config):
    allow_unqualified_model: bool = Field(
        default=False,
        description=(
            "Serve the latest 'challenger' when no version qualifies as 'champion'. Off by default: a "
            "model without skill is never served unless you ask for it (the embedded demo does, and says so)."
        ),
    )


@dg.asset(
    key=tables.PREDICTIONS.key,
    deps=[tables.FEATURES.key, tables.MODEL.key],
    partitions_def=tables.PREDICTIONS.partitions_def,
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
        feats = lake.read_partition(tables.FEATURES, part)
        if feats is None:
            raise dg.Failure(f"gold/features {part} is not materialized yet; materialize it first")
        _require_silver(lake, part)
        # the closes the features saw (leading empty minutes priced from the day before)
        candles = _day(_silver(lake, part.instrument, part.day, range(-1, 1)), part)
        pred = model.predict(feats) if feats.height else []
        df = prediction_rows(feats, candles, pred, model.info, qualified)
        info = lake.write_partition(df, tables.PREDICTIONS, part)
        stats.append(
            {
                "partition": part.key,
                "rows": info.rows,
                "bytes": info.bytes,
                "from": df["ts"].min(),
                "to": df["ts"].max(),
            }
        )
    warehouse.refresh_views(lake, [tables.PREDICTIONS])
    meta = summarize(stats)
    meta.update(
        {
            "model": f"{model.info.name} v{model.info.version}",
            "alias": str(model.info.alias),
            "qualified": qualified,
        }
    )
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
            (pl.col("ts") + pl.duration(minutes=pl.col("horizon"))).alias(
                "target_ts"
            ),  # bar whose close is forecast
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
        try:
            return registry.load_alias(res.uri, res.model_name, registry.CHALLENGER), False
        except registry.NoAliasError as exc2:
            raise dg.Failure(
                description=(
                    f"NoChampionError: registered model {res.model_name!r} has neither a 'champion' nor a "
                    f"'challenger' version at {res.uri}: nothing to serve; materialize gold/model first."
                ),
                metadata={"model_name": res.model_name, "tracking_uri": res.uri},
            ) from exc2
