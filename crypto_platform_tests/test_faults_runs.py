"""Fault injection for runs (issue 11): killed runs are failed and free the queue; failures of runs of
every origin reach the webhook.

Dead runs: a real `dagster asset materialize` process on a temporary DAGSTER_HOME with this project's
dagster.yaml (storage in tmp, one run slot so one dead run fills the queue) is killed with SIGKILL;
Dagster's own run monitoring iteration and queued-run daemon iteration then run against a real
workspace (a code server subprocess) and must fail the dead run and launch the queued one.

Notifications: the webhook is a real HTTP server on 127.0.0.1; the failed runs are real runs of a real
(temporary, persistent) instance: one executed in-process as the CLI does (no code location origin),
one of another code location and one of this project's. The sensor is evaluated as the daemon
evaluates it: with the code location origin of this project's location.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import pytest
from dagster._cli.job import _create_run
from dagster._core.definitions.job_base import InMemoryJob
from dagster._core.definitions.sensor_definition import SensorEvaluationContext
from dagster._core.execution.api import execute_run
from dagster._core.remote_origin import InProcessCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._core.test_utils import create_test_daemon_workspace_context
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.load_target import ModuleTarget
from dagster._daemon.monitoring.run_monitoring import execute_run_monitoring_iteration
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon

from crypto_platform.automation.notifications import WEBHOOK_ENV, WebhookResource, run_failure_notifier
from crypto_platform.automation.run_workers import LocalProcessRunLauncher, process_alive, run_process
from crypto_platform_tests.conftest import PROJECT_DIR
from crypto_platform_tests.test_notifications_wiring import Receiver

FAULT_JOBS = "crypto_platform_tests.fault_jobs"
DAGSTER_CLI = str(Path(sys.executable).parent / "dagster")
S = dg.DagsterRunStatus

REPO = "__repository__"  # the repository name of a Definitions object


def _location(name: str, module: str) -> InProcessCodeLocationOrigin:
    return InProcessCodeLocationOrigin(LoadableTargetOrigin(module_name=module), location_name=name)


HOME_LOCATION = _location("crypto_platform", "crypto_platform.definitions")


@dg.asset(key=["faults", "always_fails"])
def always_fails() -> None:
    raise ValueError("exchange answered garbage for 2024-01-01")


# ----------------------------------------------------------------------------------------------
# dead runs


def _dagster_home(tmp_path: Path) -> Path:
    """This project's dagster.yaml with storage under tmp and a single run slot."""
    home = tmp_path / "home"
    home.mkdir()
    text = (PROJECT_DIR / "dagster.yaml").read_text()
    assert "max_concurrent_runs: 4" in text
    text = text.replace("base_dir: data/", f"base_dir: {tmp_path}/data/")
    text = text.replace("max_concurrent_runs: 4", "max_concurrent_runs: 1")
    # the test's code server must be gone when the workspace closes (a timeout there fails the test)
    text += "code_servers:\n  wait_for_local_processes_on_shutdown: true\n"
    (home / "dagster.yaml").write_text(text)
    return home


def _wait_for(what: str, condition: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.2)


def _start_blocking_cli_run(home: Path, marker: Path, log: Path) -> subprocess.Popen:
    """`dagster asset materialize` of an asset that blocks until killed (started, not waited for)."""
    env = {**os.environ, "DAGSTER_HOME": str(home), "CRYPTO_FAULTS_MARKER": str(marker)}
    with log.open("wb") as out:  # a file, not a pipe: a full pipe would block the CLI's logging
        return subprocess.Popen(
            [DAGSTER_CLI, "asset", "materialize", "-m", FAULT_JOBS, "--select", "faults/blocks"],
            cwd=PROJECT_DIR,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _status(instance: dg.DagsterInstance, run_id: str) -> dg.DagsterRunStatus:
    return instance.get_run_by_id(run_id).status


@pytest.mark.slow
def test_a_killed_cli_run_is_failed_by_run_monitoring_and_frees_the_queue(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, receiver: Receiver
) -> None:
    home = _dagster_home(tmp_path)
    marker = tmp_path / "started"
    gate = tmp_path / "gate"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("CRYPTO_FAULTS_GATE", str(gate))  # inherited by the code server's run workers
    monkeypatch.delenv(WEBHOOK_ENV, raising=False)
    logger = logging.getLogger("test_faults_runs")
    target = ModuleTarget(FAULT_JOBS, None, str(PROJECT_DIR), "faults")
    # the instance (its SQLite storage) exists before the CLI opens it; the code server starts while
    # the CLI process starts up
    webhook = WebhookResource(url=receiver.url)
    with dg.DagsterInstance.get() as instance:
        cursor = _failure_tick(instance, webhook, None)
        log = tmp_path / "cli.log"
        cli = _start_blocking_cli_run(home, marker, log)
        try:
            with create_test_daemon_workspace_context(target, instance) as workspace:
                _wait_for("the CLI run to start", lambda: marker.exists() or cli.poll() is not None, 60)
                assert marker.exists(), log.read_text()[-2000:]
                os.kill(cli.pid, signal.SIGKILL)  # kill -9: no event, no cleanup
                cli.wait()
                _check_dead_run_is_failed_and_queue_freed(instance, workspace, cli.pid, gate, logger)
                # the failure monitoring reported reaches the webhook like any other
                _failure_tick(instance, webhook, cursor)
                [posted] = [b["text"] for b in receiver.bodies]
                assert "Run failed: __ASSET_JOB" in posted and f"(pid {cli.pid}) is gone" in posted
        finally:
            if cli.poll() is None:
                os.killpg(cli.pid, signal.SIGKILL)
                cli.wait()


def _check_dead_run_is_failed_and_queue_freed(
    instance: dg.DagsterInstance, workspace, pid: int, gate: Path, logger: logging.Logger
) -> None:
    assert isinstance(instance.run_launcher, LocalProcessRunLauncher)
    assert instance.run_monitoring_enabled and instance.run_monitoring_poll_interval_seconds == 30
    [dead] = instance.get_runs()
    assert dead.status == S.STARTED  # nothing reported the kill
    assert run_process(instance, dead.run_id).pid == pid

    request = workspace.create_request_context()
    location = request.get_code_location("faults")
    repo = location.get_repository("__repository__")
    queued = _create_run(  # what `dagster job launch` does: a run of the code location, submitted
        instance=instance,
        code_location=location,
        remote_repo=repo,
        remote_job=repo.get_full_job("gated_job"),
        run_config={},
        tags=None,
        op_selection=None,
        run_id=None,
    )
    instance.submit_run(queued.run_id, request)
    dequeuer = QueuedRunCoordinatorDaemon(interval_seconds=1)
    list(dequeuer.run_iteration(workspace))
    assert _status(instance, queued.run_id) == S.QUEUED  # the dead run holds the only slot

    # one monitoring iteration (the daemon runs one every poll_interval_seconds) fails it
    errors = [e for e in execute_run_monitoring_iteration(workspace, logger) if e is not None]
    assert errors == []
    assert _status(instance, dead.run_id) == S.FAILURE
    failure = instance.get_records_for_run(dead.run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records
    assert f"(pid {pid}) is gone" in failure[0].event_log_entry.message

    list(dequeuer.run_iteration(workspace))  # the slot is free: the queued run is launched
    assert _status(instance, queued.run_id) != S.QUEUED
    _wait_for("the launched run to start", lambda: _status(instance, queued.run_id) == S.STARTED, 60)
    # a live run worker (a subprocess of the code server) is left alone
    assert [e for e in execute_run_monitoring_iteration(workspace, logger) if e is not None] == []
    assert _status(instance, queued.run_id) == S.STARTED
    gate.touch()
    _wait_for("the run to finish", lambda: _status(instance, queued.run_id) in {S.SUCCESS, S.FAILURE}, 60)
    assert _status(instance, queued.run_id) == S.SUCCESS


@pytest.mark.slow  # starts a (tiny) process
def test_process_alive_tells_live_dead_zombie_and_reused_pids() -> None:
    now = time.time()
    assert process_alive(os.getpid(), now)
    # the same pid, but the process started after the run did: another process reusing the pid
    assert not process_alive(os.getpid(), now - 365 * 24 * 3600)
    child = subprocess.Popen(["sleep", "30"])
    try:
        assert process_alive(child.pid, time.time())
        os.kill(child.pid, signal.SIGKILL)
        _wait_for("the killed child to count as dead", lambda: not process_alive(child.pid, time.time()), 10)
        # not reaped yet: a zombie, which os.kill(pid, 0) would call alive
        assert Path(f"/proc/{child.pid}").exists()
    finally:
        child.kill()
        child.wait()
    assert not process_alive(child.pid, time.time())


# ----------------------------------------------------------------------------------------------
# failure notifications


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dg.DagsterInstance]:
    monkeypatch.delenv(WEBHOOK_ENV, raising=False)
    with dg.instance_for_test(temp_dir=str(tmp_path)) as inst:
        yield inst


def _failure_tick(instance: dg.DagsterInstance, webhook: WebhookResource, cursor: str | None) -> str | None:
    """One evaluation of the run-failure sensor as the daemon does it (inside this project's location)."""
    context = SensorEvaluationContext(
        instance_ref=None,
        cursor=cursor,
        repository_name=REPO,
        instance=instance,
        sensor_name=run_failure_notifier.name,
        resources={"webhook": webhook},
        code_location_origin=HOME_LOCATION,
    )
    with context:
        return run_failure_notifier.evaluate_tick(context).cursor


def _failed_run_of_location(instance: dg.DagsterInstance, location: InProcessCodeLocationOrigin) -> str:
    """A real failed run of a job of `location`, recorded with that origin as the UI, a sensor or a
    schedule records it (the run then executes in-process here instead of in a run worker)."""
    job = dg.Definitions(
        assets=[always_fails], jobs=[dg.define_asset_job("daily_job", [always_fails])]
    ).resolve_job_def("daily_job")
    origin = RemoteJobOrigin(RemoteRepositoryOrigin(location, REPO), "daily_job")
    run = instance.create_run_for_job(job, remote_job_origin=origin)
    assert not execute_run(InMemoryJob(job), run, instance).success
    return run.run_id


def test_failures_of_runs_of_every_origin_are_posted(
    instance: dg.DagsterInstance, receiver: Receiver
) -> None:
    webhook = WebhookResource(url=receiver.url)
    cursor = _failure_tick(instance, webhook, None)  # first tick: the sensor starts from now
    assert cursor is not None and receiver.bodies == []

    cli = dg.materialize([always_fails], instance=instance, raise_on_error=False)
    assert not cli.success and instance.get_run_by_id(cli.run_id).remote_job_origin is None
    other = _failed_run_of_location(instance, _location("other_location", "other.definitions"))
    home = _failed_run_of_location(instance, HOME_LOCATION)

    cursor = _failure_tick(instance, webhook, cursor)
    texts = [b["text"] for b in receiver.bodies]
    assert len(texts) == 3, texts
    posted = {run_id for run_id in (cli.run_id, other, home) for t in texts if f"run_id: {run_id}" in t}
    assert posted == {cli.run_id, other, home}
    cli_text = next(t for t in texts if cli.run_id in t)
    assert "faults/always_fails" in cli_text
    assert "ValueError: exchange answered garbage for 2024-01-01" in cli_text

    _failure_tick(instance, webhook, cursor)  # nothing new: nothing posted twice
    assert len(receiver.bodies) == 3
