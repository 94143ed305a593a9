"""The whole asset graph at a glance: a change to keys, deps, partitions, groups or policies shows here.

And the settings: one object, read once when the code location loads, reaching every sensor, schedule,
check and resource, and shown in the UI (what Dagster serves the UI: the repository snapshot).
"""

import gc
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.remote_representation.external_data import RepositorySnap, ResourceConfigEnvVarSnap

from crypto_platform import tables
from crypto_platform.definitions import build_definitions, defs
from crypto_platform.partitions import trade_partitions
from crypto_platform.platform_settings import GC_YOUNG_THRESHOLD, PlatformSettings
from crypto_platform.resources.lake import LakeResource

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
    "gold/rolling_evaluation": ("gold", True, ["gold/features", "gold/labels", "gold/model"]),
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


WEBHOOK = "https://hooks.example/services/WEBHOOK-TOKEN"
MLFLOW_URI = "http://user:MLFLOW-PASSWORD@mlflow.internal:5000"


@pytest.fixture
def loaded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[PlatformSettings, dg.Definitions]:
    """Definitions built from an environment with every kind of setting (secrets included)."""
    monkeypatch.setenv("CRYPTO_WEBHOOK_URL", WEBHOOK)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", MLFLOW_URI)
    env = {
        **os.environ,
        "CRYPTO_LAKE_ROOT": str(tmp_path / "lake"),
        "CRYPTO_LIVE_SENSOR": "running",
        "CRYPTO_LIVE_INTERVAL_SECONDS": "30",
        "CRYPTO_AUTOMATION": "running",
        "CRYPTO_RETRAIN_COOLDOWN_HOURS": "2",
        "CRYPTO_FRESHNESS_MAX_LAG_SECONDS": "90",
    }
    settings = PlatformSettings.from_env(env)
    return settings, build_definitions(settings)


def test_sensors_schedules_checks_and_resources_take_the_loaded_settings(
    loaded, monkeypatch, tmp_path
) -> None:
    _, built = loaded
    repo = built.get_repository_def()
    live = repo.get_sensor_def("live_sensor")
    assert live.minimum_interval_seconds == 30 and live.default_status == dg.DefaultSensorStatus.RUNNING
    assert repo.get_sensor_def("live_freshness_sensor").default_status == dg.DefaultSensorStatus.RUNNING
    retraining = repo.get_sensor_def("retraining_sensor")
    assert retraining.default_status == dg.DefaultSensorStatus.RUNNING
    assert "at most once per 2 h" in (retraining.description or "")
    assert {s.default_status for s in repo.schedule_defs} == {dg.DefaultScheduleStatus.RUNNING}
    assert (built.resources or {})["lake"].root == str(tmp_path / "lake")
    graph = built.resolve_asset_graph()
    for asset in (["silver", "candles_1m"], ["gold", "predictions"]):
        check = graph.get(dg.AssetCheckKey(dg.AssetKey(asset), "live_data_lag"))
        assert "fails above 90 s (CRYPTO_FRESHNESS_MAX_LAG_SECONDS)" in (check.description or "")

    # read once: what the environment says after the load does not reach a tick
    monkeypatch.setenv("CRYPTO_FRESHNESS_MAX_LAG_SECONDS", "not a number")
    sensor = repo.get_sensor_def("live_freshness_sensor")
    with dg.DagsterInstance.ephemeral() as instance:
        ctx = dg.build_sensor_context(
            instance=instance,
            definitions=built,
            resources={"lake": LakeResource(root=str(tmp_path / "lake"))},
        )
        result = sensor(ctx)
    assert isinstance(result, dg.SensorResult) and result.asset_events
    for event in result.asset_events:
        assert event.metadata["max_lag_seconds"].value == 90.0
        assert not event.passed  # an empty lake: no live data at all


def test_the_ui_shows_every_setting_and_no_secret(loaded) -> None:
    settings, built = loaded
    snap = RepositorySnap.from_def(built.get_repository_def())  # what the UI is served
    resources = {r.name: r for r in snap.resources}
    shown = resources["settings"]
    assert set(shown.configured_values) == {spec.name for spec in PlatformSettings.specs()}
    assert shown.configured_values["live_interval_seconds"] == "30"
    assert shown.configured_values["lake_root"] == f'"{settings.lake_root}"'
    assert shown.configured_values["automation"] == "true"
    descriptions = {f.name: f.description for f in shown.config_field_snaps}
    for spec in PlatformSettings.specs():
        assert descriptions[spec.name] == f"{spec.env}: {spec.doc}"
    # secrets: the UI sees the variable's name, never its value
    assert shown.configured_values["webhook_url"] == ResourceConfigEnvVarSnap(name="CRYPTO_WEBHOOK_URL")
    assert shown.configured_values["mlflow_tracking_uri"] == ResourceConfigEnvVarSnap(
        name="MLFLOW_TRACKING_URI"
    )
    assert resources["webhook"].configured_values["url"] == ResourceConfigEnvVarSnap(
        name="CRYPTO_WEBHOOK_URL"
    )
    assert resources["mlflow_registry"].configured_values["tracking_uri"] == ResourceConfigEnvVarSnap(
        name="MLFLOW_TRACKING_URI"
    )
    served = dg.serialize_value(snap)
    assert "WEBHOOK-TOKEN" not in served and "MLFLOW-PASSWORD" not in served


HEAVY_MODULES = (
    "scipy",
    "great_expectations",
    "mlflow",
    "optuna",
    "lightgbm",
    "sklearn",
    "ccxt",
    "pandas",
    "boto3",
)


def _load_code_location(extra_env: dict[str, str]) -> subprocess.CompletedProcess:
    """A fresh process that loads the code location, then prints the heavy libraries the load imported
    (first line), the default statuses of its schedules (second line) and its garbage collector's young
    threshold (third line)."""
    code = (
        "import gc, sys; from crypto_platform.definitions import defs; "
        f"print(','.join(m for m in {HEAVY_MODULES!r} if m in sys.modules)); "
        "print(sorted({s.default_status.value for s in defs.get_repository_def().schedule_defs})); "
        "print(gc.get_threshold()[0])"
    )
    env = {**os.environ, "PYTHONWARNINGS": "default", **extra_env}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def old_name_load() -> subprocess.CompletedProcess:
    """One fresh load of the code location with a deprecated variable set (CRYPTO_PLATFORM_AUTOMATION) and
    the collector's threshold at CPython's own, shared by the tests that read what a process start does
    (a load costs a few CPU seconds)."""
    return _load_code_location({"CRYPTO_PLATFORM_AUTOMATION": "running", "CRYPTO_GC_YOUNG_THRESHOLD": "700"})


@pytest.mark.slow
def test_loading_the_code_location_validates_the_settings_once(
    old_name_load: subprocess.CompletedProcess,
) -> None:
    bad = _load_code_location({"CRYPTO_LIVE_CHECKS": "some"})
    assert bad.returncode != 0
    assert "SettingsError: CRYPTO_LIVE_CHECKS='some': expected one of blocking, all, none" in bad.stderr
    old = old_name_load
    assert old.returncode == 0, old.stderr
    assert old.stdout.splitlines()[1] == "['RUNNING']"  # every schedule
    # read once per process (the universe, the partitions and the definitions share it): one warning
    assert old.stderr.count("CRYPTO_PLATFORM_AUTOMATION is deprecated: rename it to CRYPTO_AUTOMATION") == 1


@pytest.mark.slow
def test_loading_the_code_location_imports_no_heavy_library(
    old_name_load: subprocess.CompletedProcess,
) -> None:
    # Every run worker, code server and test subprocess loads the code location: the heavy libraries are
    # imported by the functions that use them (the GX suites, MLflow, training, drift, ccxt fetches).
    # (The probe runs in the fresh process right after `import crypto_platform.definitions`.)
    assert old_name_load.returncode == 0, old_name_load.stderr
    imported = old_name_load.stdout.splitlines()[0]
    assert imported == "", f"imported when the code location loads: {imported}"


@pytest.mark.slow
def test_loading_the_code_location_sets_the_collectors_young_threshold(
    old_name_load: subprocess.CompletedProcess,
) -> None:
    # The default: this test process runs with it (conftest sets it before collection, the code location
    # when it loads). The fresh process was given CPython's own, and its load applied that (gc_tuning.py).
    assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD == PlatformSettings().gc_young_threshold == 10_000
    assert old_name_load.returncode == 0, old_name_load.stderr
    assert old_name_load.stdout.splitlines()[2] == "700"
