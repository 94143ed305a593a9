"""gold/features and gold/labels: per (instrument, day) partition, from silver 1-minute candles.

Features and predictions are computed by the same function (`transforms.features.build_features`)
for training and serving, so there is no training-serving skew. Labels are written for every model
horizon (`ml.dataset.LABEL_HORIZONS`); the training set picks one.
"""

import dagster as dg
import polars as pl
from pydantic import Field

from crypto_platform import tables
from crypto_platform.assets.gold.inputs import FeatureRunMemo, derive_features, labels_for
from crypto_platform.metadata import summarize
from crypto_platform.ml.dataset import LABEL_HORIZONS
from crypto_platform.partitions import partitions_of, single_run
from crypto_platform.resources.lake import LakeResource
from crypto_platform.resources.warehouse import WarehouseResource
from crypto_platform.transforms.features import FEATURE_COLUMNS

# rows_recomputed vs rows_carried: the tail a tick recomputed vs the rows kept from the stored partition
FEATURE_SUMS = ("rows", "rows_recomputed", "rows_carried", "null_values", "bytes")


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
    stats, memo = [], FeatureRunMemo()  # each candle partition read once per run, not once per peer
    for part in partitions_of(context):
        df, info, kept = derive_features(lake, part, memo)
        if df.is_empty():
            context.log.warning(f"features {part}: no priced candle that day; wrote an empty partition")
        nulls = df.select(pl.col(FEATURE_COLUMNS).null_count()).sum_horizontal().item() if df.height else 0
        stats.append(
            {
                "partition": part.key,
                "rows": info.rows,
                "rows_recomputed": info.rows - kept,
                "rows_carried": kept,
                "null_values": nulls,
                "bytes": info.bytes,
                "from": df["ts"].min(),
                "to": df["ts"].max(),
            }
        )
    views = warehouse.refresh_views(lake, [tables.FEATURES])
    meta = {
        **summarize(stats, sums=("rows", "rows_recomputed", "rows_carried", "null_values", "bytes")),
        **views.metadata,
    }
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
