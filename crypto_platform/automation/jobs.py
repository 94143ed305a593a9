"""Asset jobs: the selections users launch from the UI, the CLI, schedules and sensors."""

from __future__ import annotations

import dagster as dg

from crypto_platform.partitions import trade_partitions

INGEST = dg.AssetSelection.groups("raw", "bronze", "silver")
FEATURES = dg.AssetSelection.assets(["gold", "features"], ["gold", "labels"])
TRAINING = dg.AssetSelection.assets(
    ["gold", "training_set"], ["gold", "model"]
).required_multi_asset_neighbors()
PREDICTIONS = dg.AssetSelection.assets(["gold", "predictions"])

ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=INGEST,
    partitions_def=trade_partitions,
    description="raw -> bronze -> silver for one (day x instrument) partition or a range of them.",
)
features_job = dg.define_asset_job(
    "features_job",
    selection=FEATURES,
    partitions_def=trade_partitions,
    description="gold features and labels from the silver candles.",
)
training_job = dg.define_asset_job(
    "training_job",
    selection=TRAINING,
    description="Build the rolling training set, train, evaluate, register; the promotion gate decides.",
)
predictions_job = dg.define_asset_job(
    "predictions_job",
    selection=PREDICTIONS,
    partitions_def=trade_partitions,
    description="Batch predictions with the MLflow champion.",
)

JOBS = [ingest_job, features_job, training_job, predictions_job]
