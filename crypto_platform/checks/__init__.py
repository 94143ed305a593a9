"""Dagster asset checks: Great Expectations suites on bronze/silver, drift on gold features/predictions.

Why the checks are *unpartitioned* checks on partitioned assets (Dagster 1.13.27):
`@asset_check(partitions_def=...)` exists but is a preview feature, and it records a result only for
the step's single partition key: in a single-run range (this project's backfill policy), the result
is stored without a partition and the range's partitions stay "planned" in the UI. So every check here
is unpartitioned but partition-aware: it reads the partition key(s) of its run from the context
(`run_partitions`, the same range expansion as the assets), validates each (instrument, day) cell and
reports per-partition figures in its metadata. Run in the same run as the asset, a blocking check
still stops every downstream step of that run (for the whole range). Run on its own without a
partition (a check-only run from the UI, the monitoring job), a check judges the newest data.

Module layout: `quality` (GX suites, blocking), `drift` (feature and prediction drift vs the
champion's reference), `freshness` (live data lag); the prediction-skill check lives with its asset
in `assets.monitoring`. Checks take table identities from `crypto_platform.tables`, never from asset
modules, and never import `automation` (which sits above them).
"""
