"""Detached run workers (dagster.yaml `run_launcher: LocalProcessRunLauncher {detach: true}`): each run
is its own `dagster api execute_run` process in a session of its own, so a signal to the launcher's
process group (stopping `dagster dev`) does not reach it; Terminate still stops it."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.definitions.reconstruct import ReconstructableRepository

from crypto_platform.automation.run_workers import LocalProcessRunLauncher, process_alive, run_process
from crypto_platform_tests.paths import PROJECT_DIR

FAULT_JOBS = "crypto_platform_tests.fault_jobs"
S = dg.DagsterRunStatus


def _home(tmp_path: Path) -> Path:
    """This project's dagster.yaml with its storage under tmp."""
    home = tmp_path / "home"
    home.mkdir()
    text = (
        (PROJECT_DIR / "dagster.yaml").read_text().replace("base_dir: data/", f"base_dir: {tmp_path}/data/")
    )
    (home / "dagster.yaml").write_text(text)
    return home


def _wait_for(what: str, condition: Callable[[], bool], timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.2)


def _started(instance: dg.DagsterInstance, run_id: str) -> bool:
    """The run's worker recorded RUN_START (its pid) and the run's status says STARTED (a moment later)."""
    return run_process(instance, run_id) is not None and instance.get_run_by_id(run_id).status == S.STARTED


def _step_started(instance: dg.DagsterInstance, run_id: str) -> bool:
    """The gated step started: its compute-log capture (Dagster's `tail -F` and the watcher that stops
    it when the worker dies) is in place."""
    return bool(instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_START))


def _processes_under(folder: Path) -> list[str]:
    """Command lines of live processes naming `folder` (a run's log tails, its worker)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(folder) in cmd:
            found.append(cmd)
    return found


def _launch_gated_run(instance: dg.DagsterInstance) -> str:
    """Create and launch (as the queue daemon does) a run of fault_jobs' gated_job; returns its id."""
    recon = ReconstructableRepository.for_module(FAULT_JOBS, "defs", str(PROJECT_DIR))
    job = recon.get_definition().get_job("gated_job")
    origin = recon.get_reconstructable_job("gated_job").get_python_origin()
    run = instance.create_run_for_job(job_def=job, job_code_origin=origin, status=S.NOT_STARTED)
    instance.launch_run(run.run_id, workspace=None)  # type: ignore[arg-type]  # detached: no workspace
    return run.run_id


@pytest.mark.slow
def test_a_detached_run_worker_has_its_own_session_finishes_and_terminate_cancels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = tmp_path / "gate"
    monkeypatch.setenv("DAGSTER_HOME", str(_home(tmp_path)))
    monkeypatch.setenv("CRYPTO_FAULTS_GATE", str(gate))  # inherited by the run workers
    with dg.DagsterInstance.get() as instance:
        launcher = instance.run_launcher
        assert isinstance(launcher, LocalProcessRunLauncher) and launcher.detach  # the repo's dagster.yaml
        kept, stopped = _launch_gated_run(instance), _launch_gated_run(instance)
        _wait_for("both runs to start", lambda: all(_started(instance, r) for r in (kept, stopped)))
        for run_id in (kept, stopped):
            pid = run_process(instance, run_id).pid
            # its own session and process group: SIGTERM/Ctrl-C to the launcher's group cannot reach it
            assert os.getsid(pid) == pid != os.getsid(0)
            assert os.getpgid(pid) != os.getpgid(0)
            assert instance.get_run_by_id(run_id).status == S.STARTED

        victim = run_process(instance, stopped)
        assert launcher.terminate(stopped) is True
        _wait_for("the terminated run to finish", lambda: instance.get_run_by_id(stopped).is_finished)
        assert instance.get_run_by_id(stopped).status == S.CANCELED
        _wait_for("its worker to exit", lambda: not process_alive(victim.pid, victim.started_at), 30)

        assert instance.get_run_by_id(kept).status == S.STARTED  # the other run was not touched
        gate.touch()
        _wait_for("the kept run to finish", lambda: instance.get_run_by_id(kept).is_finished)
        assert instance.get_run_by_id(kept).status == S.SUCCESS
        assert launcher.terminate(kept) is False  # finished: nothing to stop


@pytest.mark.slow
def test_terminate_before_the_worker_starts_cancels_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(_home(tmp_path)))
    with dg.DagsterInstance.get() as instance:
        recon = ReconstructableRepository.for_module(FAULT_JOBS, "defs", str(PROJECT_DIR))
        job = recon.get_definition().get_job("gated_job")
        origin = recon.get_reconstructable_job("gated_job").get_python_origin()
        run = instance.create_run_for_job(job_def=job, job_code_origin=origin, status=S.STARTING)
        assert instance.run_launcher.terminate(run.run_id) is True
        assert instance.get_run_by_id(run.run_id).status == S.CANCELED


@pytest.mark.slow
def test_a_killed_worker_fails_its_run_when_it_exits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """kill -9 (or the OOM killer): the launcher that reaps the worker fails its run at once, without
    waiting for run monitoring's next poll."""
    monkeypatch.setenv("DAGSTER_HOME", str(_home(tmp_path)))
    monkeypatch.setenv("CRYPTO_FAULTS_GATE", str(tmp_path / "never"))
    with dg.DagsterInstance.get() as instance:
        run_id = _launch_gated_run(instance)
        _wait_for(
            "the run's step to start", lambda: _started(instance, run_id) and _step_started(instance, run_id)
        )
        os.kill(run_process(instance, run_id).pid, signal.SIGKILL)
        _wait_for("the run to be failed", lambda: instance.get_run_by_id(run_id).is_finished, 30)
        assert instance.get_run_by_id(run_id).status == S.FAILURE
        messages = [e.message for e in instance.all_logs(run_id)]
        assert any("exited (code -9) without finishing run" in m for m in messages), messages
        # nothing of the killed worker lives on (Dagster's watcher stops the step's log tail within ~1 s)
        _wait_for("the killed worker's processes to end", lambda: not _processes_under(tmp_path), 10)
