"""Asset jobs: the selections users launch from the UI, the CLI, schedules and sensors."""

from __future__ import annotations

import dagster as dg

from crypto_platform import tables
from crypto_platform.checks.quality import CANDLES_SUITE_CHECK

INGEST = dg.AssetSelection.groups("raw", "bronze", "silver")
# Blocking checks only stop downstream steps in the same run, so the features job re-runs the silver
# candle suite on its partitions first: features are never built from a partition that fails it.
FEATURES = dg.AssetSelection.assets(tables.FEATURES.key, tables.LABELS.key) | dg.AssetSelection.checks(
    dg.AssetCheckKey(tables.CANDLES_1M.key, CANDLES_SUITE_CHECK)
)
TRAINING = dg.AssetSelection.assets(
    tables.TRAINING_SET.key, tables.MODEL.key
).required_multi_asset_neighbors()
PREDICTIONS = dg.AssetSelection.assets(tables.PREDICTIONS.key)

ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=INGEST,
    description="raw -> bronze -> silver for one (day x instrument) partition or a range of them.",
)
features_job = dg.define_asset_job(
    "features_job",
    selection=FEATURES,
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
    description="Batch predictions with the MLflow champion.",
)

# Every asset check and no asset: `dagster job execute -m crypto_platform.definitions -j checks_job` runs
# the checks against what is stored (no partition: each check judges the newest data, the quality suites
# the latest materialization) without re-materializing anything; `-o <check op>` narrows it to one check,
# `--tags '{"dagster/partition": "<day>|<instrument>"}'` to one partition (docs/gold.md, "Checks only").
CHECKS_ONLY = dg.AssetSelection.all_asset_checks()
checks_job = dg.define_asset_job(
    "checks_job",
    selection=CHECKS_ONLY,
    description="Every asset check, against the data already stored: no asset is materialized.",
)

JOBS = [ingest_job, features_job, training_job, predictions_job, checks_job]
