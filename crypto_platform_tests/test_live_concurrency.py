"""The per-exchange run limit of dagster.yaml, applied by Dagster's own queued run coordinator."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import yaml
from dagster._core.remote_origin import RegisteredCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon

from crypto_platform.automation.live import EXCHANGE_TAG, LIVE_TAG
from crypto_platform_tests.paths import PROJECT_DIR

S = dg.DagsterRunStatus
# where a queued run says its job comes from (the dequeue decision reads only the location name)
ORIGIN = RemoteJobOrigin(
    RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("crypto_platform"), "__repository__"), "__ASSET_JOB"
)


def _dequeued(instance: dg.DagsterInstance) -> list[str]:
    """The queued runs the coordinator daemon would launch now (its dequeue decision, not the launch)."""
    daemon = QueuedRunCoordinatorDaemon(interval_seconds=1)
    return [r.run_id for r in daemon._get_runs_to_dequeue(instance, instance.get_concurrency_config(), None)]


def _queued(instance: dg.DagsterInstance, exchange: str | None) -> str:
    tags = {LIVE_TAG: "true", EXCHANGE_TAG: exchange} if exchange else {}
    return instance.add_run(
        dg.DagsterRun(job_name="__ASSET_JOB", status=S.QUEUED, tags=tags, remote_job_origin=ORIGIN)
    ).run_id


def _set(instance: dg.DagsterInstance, run_id: str, status: dg.DagsterRunStatus) -> None:
    run = instance.get_run_by_id(run_id)
    instance.delete_run(run_id)
    instance.add_run(run.with_status(status))


def test_runs_of_one_exchange_wait_for_each_other_and_not_for_other_exchanges(tmp_path: Path) -> None:
    committed = yaml.safe_load((PROJECT_DIR / "dagster.yaml").read_text())["run_coordinator"]
    with dg.instance_for_test(temp_dir=str(tmp_path), overrides={"run_coordinator": committed}) as instance:
        a1, b1, a2, b2, a3 = (_queued(instance, x) for x in ("a", "b", "a", "b", "a"))
        other = _queued(instance, None)  # e.g. a backfill run: not an exchange's live run
        first = _dequeued(instance)
        assert sorted(first) == sorted([a1, b1, other])  # one per exchange; the untagged one too
        for run_id in first:
            _set(instance, run_id, S.STARTED)
        assert _dequeued(instance) == []  # a and b each have a run in progress
        _set(instance, a1, S.SUCCESS)
        assert _dequeued(instance) == [a2]  # a's next; b still waits for b1
        _set(instance, a2, S.STARTED)
        _set(instance, b1, S.FAILURE)
        assert _dequeued(instance) == [b2]
        assert instance.get_run_by_id(a3).status == S.QUEUED


def test_sharded_runs_of_one_exchange_run_one_per_slot(tmp_path: Path) -> None:
    """CRYPTO_LIVE_SHARDS=2 tags runs sim#0 / sim#1: the committed limit runs one of each slot at once,
    so at most two of the exchange's runs (each at half its request rate) run together."""
    committed = yaml.safe_load((PROJECT_DIR / "dagster.yaml").read_text())["run_coordinator"]
    with dg.instance_for_test(temp_dir=str(tmp_path), overrides={"run_coordinator": committed}) as instance:
        a0, a1, a0_next, b = (_queued(instance, x) for x in ("sim#0", "sim#1", "sim#0", "b"))
        first = _dequeued(instance)
        assert sorted(first) == sorted([a0, a1, b])
        for run_id in first:
            _set(instance, run_id, S.STARTED)
        assert _dequeued(instance) == []  # both slots of sim are busy
        _set(instance, a1, S.SUCCESS)
        assert _dequeued(instance) == []  # slot 1 is free, but the queued run is slot 0's
        _set(instance, a0, S.SUCCESS)
        assert _dequeued(instance) == [a0_next]


def read(rel: str) -> dict:
    return yaml.safe_load((PROJECT_DIR / rel).read_text())


def test_every_deployment_profile_limits_runs_per_exchange() -> None:
    """The cluster, ECS and Helm profiles carry the embedded profile's per-exchange limit."""
    limit = read("dagster.yaml")["run_coordinator"]["config"]["tag_concurrency_limits"]
    assert limit == [{"key": EXCHANGE_TAG, "value": {"applyLimitPerUniqueValue": True}, "limit": 1}]
    for rel in ("deploy/cluster/dagster.yaml", "deploy/ecs/dagster.yaml"):
        assert read(rel)["run_coordinator"]["config"]["tag_concurrency_limits"] == limit, rel
    helm = read("deploy/k8s/values.yaml")["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    assert helm["tagConcurrencyLimits"] == limit
