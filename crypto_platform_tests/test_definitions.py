"""The whole asset graph at a glance: a change to keys, deps, partitions, groups or policies shows here."""

import dagster as dg

from crypto_platform import tables
from crypto_platform.definitions import defs
from crypto_platform.partitions import trade_partitions

EXPECTED = {
    "raw/trades": ("raw", True, []),
    "bronze/trades": ("bronze", True, ["raw/trades"]),
    "bronze/trade_rejects": ("bronze", True, ["raw/trades"]),
    "silver/candles_1m": ("silver", True, ["bronze/trades"]),
    "silver/candles_5m": ("silver", True, ["silver/candles_1m"]),
    "silver/candles_1h": ("silver", True, ["silver/candles_1m"]),
    "gold/features": ("gold", True, ["silver/candles_1m"]),
    "gold/labels": ("gold", True, ["silver/candles_1m"]),
    "gold/training_set": ("gold", False, ["gold/features", "gold/labels"]),
    "gold/training_set_summary": ("gold", False, ["gold/features", "gold/labels"]),
    "gold/model": ("gold", False, ["gold/training_set"]),
    "gold/model_evaluations": ("gold", False, ["gold/training_set"]),
    "gold/predictions": ("gold", True, ["gold/features", "gold/model"]),
    "gold/prediction_errors": ("monitoring", False, ["gold/predictions", "silver/candles_1m"]),
    "gold/prediction_skill": ("monitoring", False, ["gold/prediction_errors"]),
}


def test_asset_graph_snapshot() -> None:
    graph = defs.resolve_asset_graph()
    got = {}
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        got[key.to_user_string()] = (
            node.group_name,
            node.partitions_def is not None,
            sorted(k.to_user_string() for k in node.parent_keys),
        )
        if node.partitions_def is not None:
            assert node.partitions_def == trade_partitions, key
            assert node.backfill_policy == dg.BackfillPolicy.single_run(), key
        assert node.description, f"{key} has no description"
    assert got == EXPECTED


def test_definitions_load_with_resources_and_jobs() -> None:
    repo = defs.get_repository_def()
    assert {"ingest_job", "features_job", "training_job", "predictions_job", "import_candles_job"} <= {
        j.name for j in repo.get_all_jobs()
    }
    assert {"lake", "warehouse", "trade_sources", "mlflow_registry"} <= set(repo.get_top_level_resources())


def test_every_asset_is_a_table_of_the_one_tables_module() -> None:
    graph = defs.resolve_asset_graph()
    keys = set(graph.get_all_asset_keys())
    assert keys == {t.key for t in tables.ALL_TABLES}
    for key in keys:
        table = tables.by_key(key)
        if graph.get(key).partitions_def is not None:  # partitioned assets are partitioned lake tables
            assert table.partitioned and table.partitions_def == graph.get(key).partitions_def, key
    views = [t.view for t in tables.ALL_TABLES if t.view]
    assert len(views) == len(set(views)) == len(tables.ALL_TABLES) - 1  # gold/model lives in MLflow
    assert tables.by_key(dg.AssetKey(["silver", "candles_1m"])) is tables.CANDLES_1M
