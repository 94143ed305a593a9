"""The scale-out profile's configuration files are valid for the tools that read them (issue 13).

- deploy/cluster/dagster.yaml and deploy/ecs/dagster.yaml: Dagster's own instance schema, then every
  pluggable block (storage, compute logs, run coordinator, run launcher, artifact storage) against its
  class's config schema, as Dagster does when it instantiates the instance.
- deploy/k8s/values.yaml: the official Dagster Helm chart's values.schema.json (a committed copy).
- deploy/cluster/cluster.env.example: lists every variable the instance file reads, holds no secret.
- A real PostgreSQL 15 server: the cluster instance stores a real run of raw/trades in it (slow).

Each schema check is shown to fail on a misspelt key, so a typo in a deploy file fails here.
"""

from __future__ import annotations

import copy
import json
import shutil
import uuid
import warnings
from collections.abc import Iterator, Mapping
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import dagster as dg
import duckdb
import jsonschema
import pytest
import yaml
from dagster._config import process_config
from dagster._core.errors import DagsterInvalidConfigError
from dagster._core.instance.config import dagster_instance_config
from dagster._serdes import class_from_code_pointer, deserialize_value

from crypto_platform import tables
from crypto_platform.assets import ingest
from crypto_platform.partitions import DayPartition
from crypto_platform.platform_settings import PlatformSettings
from crypto_platform.resources.lake import LakeResource
from crypto_platform.resources.sources import TradeSourcesResource
from crypto_platform.resources.warehouse import WarehouseResource
from crypto_platform.settings import load_universe
from crypto_platform_tests.fixtures import env_template
from crypto_platform_tests.paths import PROJECT_DIR
from crypto_platform_tests.postgres_server import PostgresServer

DEPLOY = PROJECT_DIR / "deploy"
CLUSTER_YAML = DEPLOY / "cluster" / "dagster.yaml"
ECS_YAML = DEPLOY / "ecs" / "dagster.yaml"
ENV_TEMPLATE = DEPLOY / "cluster" / "cluster.env.example"
HELM_VALUES = DEPLOY / "k8s" / "values.yaml"
HELM_SCHEMA = DEPLOY / "k8s" / "values.schema.json"
# The instance's pluggable blocks ({module, class, config}); Dagster validates their config only when
# it instantiates the class, so these are checked one by one against the class's schema.
CLASS_BLOCKS = ("local_artifact_storage", "compute_logs", "run_coordinator", "run_launcher")


def env_refs(node: Any) -> Iterator[str]:
    """Every variable a Dagster config reads through `{env: NAME}`."""
    if isinstance(node, Mapping):
        if set(node) == {"env"}:
            yield node["env"]
        for value in node.values():
            yield from env_refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from env_refs(value)


def filled_env(tmp: Path) -> dict[str, str]:
    """The template's variables, the empty ones filled (as a user must), paths under `tmp`."""
    env = env_template()
    env |= {
        "DAGSTER_PG_PASSWORD": "not-a-secret",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
    }
    env |= {
        "DAGSTER_LOCAL_ARTIFACT_DIR": str(tmp / "artifacts"),
        "DAGSTER_COMPUTE_LOG_LOCAL_DIR": str(tmp / "logs"),
    }
    return env


def check_instance_config(config: dict, home: Path) -> dict[str, Any]:
    """Validate an instance config as Dagster loads it; returns each class block's processed config.

    Raises DagsterInvalidConfigError naming the block and the key on any error. Env vars are resolved
    from this process's environment (as Dagster does).
    """
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    validated, _ = dagster_instance_config(str(home))  # top level, storage (postgres) included
    processed = {}
    for key in CLASS_BLOCKS:
        block = validated.get(key)
        if block is None:
            continue
        klass = class_from_code_pointer(block["module"], block["class"])
        result = process_config(klass.config_type(), block.get("config") or {})
        if not result.success:
            raise DagsterInvalidConfigError(
                f"{key}: {block['class']} config is invalid", result.errors, block
            )
        processed[key] = result.value
    return processed


@pytest.fixture
def cluster_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = filled_env(tmp_path)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def test_cluster_instance_config_is_valid_and_reads_its_settings_from_the_env(
    tmp_path: Path, cluster_env: dict[str, str]
) -> None:
    processed = check_instance_config(load(CLUSTER_YAML), tmp_path / "home")
    logs = processed["compute_logs"]
    assert (logs["bucket"], logs["prefix"], logs["endpoint_url"]) == (
        "crypto-platform",
        "dagster/compute-logs",
        "http://127.0.0.1:9000",
    )
    assert processed["run_coordinator"]["max_concurrent_runs"] == 4
    storage = load(CLUSTER_YAML)["storage"]["postgres"]["postgres_db"]
    assert storage["scheme"] == "postgresql+psycopg2"  # SQLAlchemy 2.1 + psycopg2 (docs/deploy.md)


def test_cluster_instance_loads_its_compute_log_manager_and_run_monitoring(
    tmp_path: Path, cluster_env: dict[str, str]
) -> None:
    """Instantiating everything but the storage (that needs a server: the slow test below)."""
    from dagster_aws.s3.compute_log_manager import S3ComputeLogManager

    from crypto_platform.automation.run_workers import LocalProcessRunLauncher

    config = load(CLUSTER_YAML)
    config["storage"] = {"sqlite": {"base_dir": str(tmp_path / "sqlite")}}
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        manager = instance.compute_log_manager
        assert isinstance(manager, S3ComputeLogManager)
        assert manager._s3_session.meta.endpoint_url == "http://127.0.0.1:9000"
        assert isinstance(instance.run_launcher, LocalProcessRunLauncher)
        assert isinstance(instance.run_coordinator, dg.QueuedRunCoordinator)
        assert instance.run_monitoring_enabled and instance.run_monitoring_poll_interval_seconds == 30
    finally:
        instance.dispose()


@pytest.mark.parametrize(
    ("path", "value", "named"),
    [
        (["run_monitoring", "poll_interval_second"], 30, "poll_interval_second"),
        (["compute_logs", "config", "endpoint_uri"], {"env": "DAGSTER_S3_ENDPOINT_URL"}, "endpoint_uri"),
        (["storage", "postgres", "postgres_db", "hostnam"], "db", "hostnam"),
        (["run_coordinator", "config", "max_concurent_runs"], 4, "max_concurent_runs"),
    ],
)
def test_a_misspelt_key_in_the_cluster_instance_fails(
    tmp_path: Path, cluster_env: dict[str, str], path: list[str], value: object, named: str
) -> None:
    config = load(CLUSTER_YAML)
    node = config
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(DagsterInvalidConfigError) as error:
        check_instance_config(config, tmp_path / "home")
    assert named in str(error.value) + "".join(str(e) for e in error.value.errors)


def test_an_unset_variable_is_named(tmp_path: Path, cluster_env: dict[str, str], monkeypatch) -> None:
    monkeypatch.delenv("DAGSTER_COMPUTE_LOG_BUCKET")
    with pytest.raises(DagsterInvalidConfigError, match="DAGSTER_COMPUTE_LOG_BUCKET"):
        check_instance_config(load(CLUSTER_YAML), tmp_path / "home")


def test_ecs_instance_is_the_cluster_instance_with_the_ecs_run_launcher(
    tmp_path: Path, cluster_env: dict[str, str]
) -> None:
    ecs, cluster = load(ECS_YAML), load(CLUSTER_YAML)
    assert {k: v for k, v in ecs.items() if k != "run_launcher"} == {
        k: v for k, v in cluster.items() if k != "run_launcher"
    }
    processed = check_instance_config(ecs, tmp_path / "home")
    launcher = processed["run_launcher"]
    assert ecs["run_launcher"]["class"] == "EcsRunLauncher"
    assert launcher["use_current_ecs_task_config"] is True
    # every variable the instance reads reaches the run tasks (the password as an ECS secret)
    passed = set(launcher["env_vars"]) | {s["name"] for s in launcher["secrets"]}
    assert set(env_refs(cluster)) <= passed


def test_a_misspelt_key_in_the_ecs_run_launcher_fails(tmp_path: Path, cluster_env: dict[str, str]) -> None:
    ecs = load(ECS_YAML)
    ecs["run_launcher"]["config"]["container_nam"] = ecs["run_launcher"]["config"].pop("container_name")
    with pytest.raises(DagsterInvalidConfigError) as error:
        check_instance_config(ecs, tmp_path / "home")
    assert "container_nam" in "".join(str(e) for e in error.value.errors)


def test_env_template_lists_every_variable_and_holds_no_secret() -> None:
    env = env_template()
    assert set(env_refs(load(CLUSTER_YAML))) <= set(env)
    for secret in ("DAGSTER_PG_PASSWORD", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[secret] == "", f"{secret} must stay empty in the committed template"
    # the stand-in's own servers on loopback: URLs that carry no credentials
    for url in ("MLFLOW_TRACKING_URI", "CRYPTO_CELERY_BROKER_URL"):
        parts = urlsplit(env[url])
        assert (parts.hostname, parts.username, parts.password) == ("127.0.0.1", None, None), url
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an unknown or deprecated CRYPTO_* name fails
        PlatformSettings.from_env({k: v for k, v in env.items() if k.startswith("CRYPTO_")})


# --- Helm values against the official chart's schema ---


def helm_validator() -> jsonschema.Draft7Validator:
    """The chart's schema as a validator of a values override file.

    Helm validates the override merged over the chart's own values.yaml (not copied here), so the
    schema's `required` lists are dropped: they are met by the chart's defaults; those inside an
    `if`/`then` are kept (the config a chosen `type` needs, e.g. S3ComputeLogManager needs
    s3ComputeLogManager). The Kubernetes object schemas (remote `$ref`s) are not available offline:
    those objects are checked only as far as the chart's own schema types them. Top-level names are
    closed (the chart's schema leaves them open), so a misspelt section fails here instead of being
    silently ignored by Helm.
    """

    def relax(node: Any, keep_required: bool = False) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            return {
                k: relax(v, keep_required or k == "then")
                for k, v in node.items()
                if (k != "required" or keep_required) and not (k == "$ref" and not ref.startswith("#"))
            }
        if isinstance(node, list):
            return [relax(v, keep_required) for v in node]
        return node

    schema = relax(json.loads(HELM_SCHEMA.read_text()))
    schema["additionalProperties"] = False
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def helm_errors(values: dict) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in helm_validator().iter_errors(values)
    ]


def test_helm_values_follow_the_official_chart_schema() -> None:
    values = load(HELM_VALUES)
    assert helm_errors(values) == []
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["postgresql"]["postgresqlScheme"] == "postgresql+psycopg2"
    assert values["computeLogManager"]["type"] == "S3ComputeLogManager"
    assert values["dagster-user-deployments"]["deployments"][0]["dagsterApiGrpcArgs"] == [
        "-m",
        "crypto_platform.definitions",
    ]


@pytest.mark.parametrize(
    ("mutate", "named"),
    [
        (lambda v: v.__setitem__("computeLogManger", v.pop("computeLogManager")), "computeLogManger"),
        (lambda v: v["dagsterDaemon"].__setitem__("runCordinator", {}), "runCordinator"),
        (
            lambda v: v["runLauncher"]["config"]["k8sRunLauncher"].__setitem__("envConfigMap", []),
            "envConfigMap",
        ),
        (lambda v: v["computeLogManager"].__setitem__("type", "S3LogManager"), "S3LogManager"),
        (lambda v: v["postgresql"]["service"].__setitem__("port", "5432"), "'5432'"),
        (
            lambda v: v["computeLogManager"]["config"].__setitem__(
                "gcsComputeLogManager", v["computeLogManager"]["config"].pop("s3ComputeLogManager")
            ),
            "'s3ComputeLogManager' is a required property",
        ),
    ],
)
def test_a_wrong_helm_value_fails(mutate, named: str) -> None:
    values = copy.deepcopy(load(HELM_VALUES))
    mutate(values)
    errors = helm_errors(values)
    assert errors and any(named in e for e in errors), errors


# --- a real PostgreSQL server ---


@pytest.mark.slow
def test_cluster_instance_stores_a_real_run_in_postgres_and_its_logs_in_s3(
    tmp_path: Path,
    cluster_env: dict,
    monkeypatch: pytest.MonkeyPatch,
    postgres_db: PostgresServer,
    s3_endpoint: str,
) -> None:
    """deploy/cluster/dagster.yaml, unmodified, on a real PostgreSQL server and an S3-compatible server
    (moto): raw/trades of one synthetic partition; the run, its materialization and its compute logs
    are where the file says."""
    from dagster_aws.s3.compute_log_manager import S3ComputeLogManager
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

    part = DayPartition(load_universe().instrument("sim.BTC-USDT"), date(2024, 3, 4))
    lake = LakeResource(root=str(tmp_path / "lake"))
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(CLUSTER_YAML, home / "dagster.yaml")

    # the session's servers: a database and a compute-log bucket of this test's own
    pg, endpoint = postgres_db, s3_endpoint
    bucket = f"compute-logs-{uuid.uuid4().hex[:12]}"
    for name, value in {
        "DAGSTER_PG_HOST": pg.host,
        "DAGSTER_PG_PORT": str(pg.port),
        "DAGSTER_PG_USERNAME": pg.user,
        "DAGSTER_PG_DB": pg.db,
        "DAGSTER_S3_ENDPOINT_URL": endpoint,
        "DAGSTER_COMPUTE_LOG_BUCKET": bucket,
    }.items():
        monkeypatch.setenv(name, value)
    s3 = boto3.client("s3", endpoint_url=endpoint)
    s3.create_bucket(Bucket=bucket)
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        assert isinstance(instance.compute_log_manager, S3ComputeLogManager)
        result = dg.materialize(
            [ingest.raw_trades],
            partition_key=part.key,
            instance=instance,
            resources={
                "lake": lake,
                "warehouse": WarehouseResource(path=str(tmp_path / "warehouse.duckdb")),
                "trade_sources": TradeSourcesResource(now=(part.start + timedelta(hours=2)).isoformat()),
            },
        )
        assert result.success
    finally:
        instance.dispose()

    with pg.connect() as conn, conn.cursor() as cur:
        cur.execute("select run_id, status from runs")
        assert cur.fetchall() == [(result.run_id, "SUCCESS")]
        cur.execute(
            "select asset_key, partition, event from event_logs"
            " where run_id = %s and dagster_event_type = 'ASSET_MATERIALIZATION'",
            (result.run_id,),
        )
        [(asset_key, partition, event)] = cur.fetchall()
    conn.close()

    prefix = f"{cluster_env['DAGSTER_COMPUTE_LOG_PREFIX']}/storage/{result.run_id}/"
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
    logs = {
        o["Key"]: s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
        for o in listed.get("Contents", [])
    }

    assert dg.AssetKey.from_db_string(asset_key) == tables.RAW_TRADES.key
    assert partition == part.key
    stored_rows = deserialize_value(event).asset_materialization.metadata["rows"].value
    folder = lake.partition_path(tables.RAW_TRADES, part)
    [(lake_rows,)] = duckdb.sql(f"select count(*) from read_parquet('{folder}/*.parquet')").fetchall()
    assert stored_rows == lake_rows > 0
    # the step's log lines (raw/trades logs the partition it committed) were uploaded to the bucket
    assert any(key.endswith(".err") and f"raw {part}".encode() in body for key, body in logs.items()), {
        key: body[:300] for key, body in logs.items()
    }
