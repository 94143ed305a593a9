"""Big backfills as a daemon asset backfill, cut into runs by the assets' backfill policy.

`dagster asset materialize --partition-range` executes one run in the calling process and refuses
any policy but single_run; `dagster job backfill` launches one run per partition and ignores the
policy. What honours `BackfillPolicy.multi_run(N)` is an *asset backfill*: the same object the UI's
"Materialize" on a selection of partitions and GraphQL `launchPartitionBackfill` create. This module
creates one in the instance (`crypto-platform backfill ...`); the backfill daemon (`dagster dev`,
`dagster-daemon run`) then launches runs of at most N partitions each (CRYPTO_BACKFILL_PARTITIONS_PER_RUN),
in dependency order, through the instance's run coordinator and launcher (e.g. one ECS task or K8s
job per run), and the UI shows its progress under Overview > Backfills.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import dagster as dg
from dagster._core.execution.backfill import PartitionBackfill
from dagster._core.utils import make_new_backfill_id

from crypto_platform.partitions import trade_partitions


def partition_keys(partition_range: str) -> list[str]:
    """The keys of 'FIRST...LAST' (every day from the first to the last x every instrument between the
    two in the instruments file's order: the rectangle `asset materialize --partition-range` covers)."""
    first, sep, last = partition_range.partition("...")
    if not sep or not first or not last:
        raise ValueError(f"partition range {partition_range!r}: expected 'FIRST...LAST' partition keys")
    for key in (first, last):
        if not trade_partitions.has_partition_key(key):
            raise ValueError(f"partition range {partition_range!r}: {key!r} is not a partition key")
    keys = list(trade_partitions.get_partition_keys_in_range(dg.PartitionKeyRange(first, last)))
    if not keys:
        raise ValueError(f"partition range {partition_range!r} is empty (is the first key after the last?)")
    return keys


def submit_backfill(
    instance: dg.DagsterInstance,
    defs: dg.Definitions,
    selection: str,
    partition_range: str,
    *,
    tags: Mapping[str, str] | None = None,
    title: str | None = None,
    run_config: Mapping[str, object] | None = None,
) -> tuple[str, int, list[dg.AssetKey]]:
    """Add an asset backfill of `selection` (Dagster selection syntax) over the range to the instance;
    returns (backfill id, partitions, asset keys). The daemon launches and tracks its runs, each with
    `run_config` (e.g. an asset's config, as `asset materialize --config-json` takes it)."""
    graph = defs.resolve_asset_graph()
    keys = sorted(dg.AssetSelection.from_string(selection).resolve(graph))
    unpartitioned = [k.to_user_string() for k in keys if not graph.get(k).is_partitioned]
    if not keys or unpartitioned:
        why = f"it selects unpartitioned assets {unpartitioned}" if unpartitioned else "it selects nothing"
        raise ValueError(f"selection {selection!r}: {why}; a backfill covers partitioned assets only")
    parts = partition_keys(partition_range)
    backfill = PartitionBackfill.from_asset_partitions(
        backfill_id=make_new_backfill_id(),
        asset_graph=graph,
        partition_names=parts,
        asset_selection=keys,
        backfill_timestamp=time.time(),
        tags=dict(tags or {}),
        dynamic_partitions_store=instance,
        all_partitions=False,
        title=title or f"{len(keys)} assets, {parts[0]} to {parts[-1]}",
        description=f"crypto-platform backfill: {selection} over {partition_range}",
        run_config=dict(run_config) if run_config else None,
    )
    instance.add_backfill(backfill)
    return backfill.backfill_id, len(parts), keys
