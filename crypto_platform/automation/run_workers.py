"""Dead runs: a STARTED run whose process is gone (kill -9, OOM kill, host reboot) is failed, not kept.

Dagster's run monitoring (the daemon of `dagster dev` / `dagster-daemon`, `run_monitoring` in
dagster.yaml) asks the run launcher whether each STARTED run's worker is alive; the stock
DefaultRunLauncher cannot answer, so a killed run stays STARTED forever and keeps one of the
QueuedRunCoordinator's `max_concurrent_runs` slots. `LocalProcessRunLauncher` launches exactly like
DefaultRunLauncher and answers the health check from the process that started the run: the pid
Dagster records on the run's RUN_START event. That covers every run of the instance, whatever launched
it: the UI, sensors and schedules (a run worker subprocess) and the CLI (`dagster asset materialize`
executes in its own process, no launcher involved). A run whose process no longer exists, is a
zombie, or is a newer process that reuses the pid is reported FAILED, and monitoring marks the run
failed within `poll_interval_seconds`.

Detached run workers (`detach: true`, the repo's dagster.yaml). DefaultRunLauncher runs each run in a
child of the code server, in `dagster dev`'s process group: stopping `dagster dev` (Ctrl-C, SIGTERM to
the group) interrupts every run in flight, which is marked FAILURE and redone from scratch after the
restart. Detached, the launcher starts the run as its own command (`dagster api execute_run`, the
command the K8s/ECS launchers run in a pod) in a session of its own, like a pod that outlives a
restart of the daemon and webserver: the run finishes, writes its events to the instance's storage
and its data through the lake as usual, and nothing is redone. The daemon that launched it reaps it
(its CPU is counted as the daemon's children's). To stop such a run: Terminate in the UI (or run
monitoring's `dagster/max_runtime`) sends it SIGTERM; it is marked CANCELED.

Only for single-host instances (the embedded SQLite default): a pid means nothing on another host. A
deployment on K8s/ECS uses that platform's launcher and its own worker health checks (docs/deploy.md).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dagster import DagsterEventType, DagsterInstance, DagsterRun, DefaultRunLauncher, Field
from dagster._core.launcher import CheckRunHealthResult, LaunchRunContext, WorkerStatus
from dagster._serdes import ConfigurableClassData

_PROC = Path("/proc")
# A process that started more than this after the run's RUN_START event is another one reusing the
# pid. Generous: /proc start times are derived from the boot time, which moves when the wall clock is
# stepped (NTP), and a live run wrongly judged dead would be failed; a pid reused within a minute of
# the run's start is not a realistic case.
_START_SLACK_S = 60.0


@dataclass(frozen=True)
class RunProcess:
    """The process that started a run: its pid and when the run started (RUN_START event time)."""

    pid: int
    started_at: float


def run_process(instance: DagsterInstance, run_id: str) -> RunProcess | None:
    """The pid and start time recorded with the run's RUN_START event; None before the run started."""
    records = instance.get_records_for_run(
        run_id, of_type=DagsterEventType.RUN_START, limit=1, ascending=False
    ).records
    if not records or records[0].event_log_entry.dagster_event is None:
        return None
    entry = records[0].event_log_entry
    pid = entry.dagster_event.pid
    return RunProcess(pid, entry.timestamp) if pid is not None else None


def process_alive(pid: int, started_by: float, proc: Path = _PROC) -> bool:
    """Whether process `pid` exists, is not a zombie and started no later than `started_by` (epoch s).

    A process that started after `started_by` is another one reusing the pid. Without /proc (not
    Linux) only existence is checked.
    """
    stat = proc / str(pid) / "stat"
    if not proc.is_dir():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    state, start_ticks = fields[0], int(fields[19])  # fields 3 and 22 of proc(5), after the name
    if state in {"Z", "X"}:
        return False
    lines = (proc / "stat").read_text().splitlines()
    boot = next(float(line.split()[1]) for line in lines if line.startswith("btime"))
    started = boot + start_ticks / os.sysconf("SC_CLK_TCK")
    return started <= started_by + _START_SLACK_S


def run_worker_health(instance: DagsterInstance, run: DagsterRun) -> CheckRunHealthResult:
    """RUNNING while the run's process lives; FAILED (naming the pid) once it is gone."""
    proc = run_process(instance, run.run_id)
    if proc is None:  # not started yet: Dagster's start timeout judges it
        return CheckRunHealthResult(WorkerStatus.RUNNING, "no RUN_START event yet")
    if process_alive(proc.pid, proc.started_at):
        return CheckRunHealthResult(WorkerStatus.RUNNING, f"run process {proc.pid} is alive")
    return CheckRunHealthResult(
        WorkerStatus.FAILED,
        f"the process that runs {run.job_name} run {run.run_id} (pid {proc.pid}) is gone: killed or "
        "crashed without reporting (e.g. kill -9, out of memory)",
        run_worker_id=str(proc.pid),
    )


def execute_run_command(instance: DagsterInstance, run: DagsterRun) -> list[str]:
    """`dagster api execute_run <args>` for `run`: the run worker command of the K8s/ECS launchers."""
    from dagster._grpc.types import ExecuteRunArgs

    if run.job_code_origin is None:
        raise ValueError(f"run {run.run_id} has no code origin: it cannot be launched as a command")
    args = ExecuteRunArgs(job_origin=run.job_code_origin, run_id=run.run_id, instance_ref=instance.get_ref())
    return list(args.get_command_args())


def start_detached(command: list[str], on_exit: Callable[[int, int], None] | None = None) -> subprocess.Popen:
    """Start `command` in a session of its own (a signal to the launcher's process group does not reach
    it) and reap it from a thread when it exits (no zombie; its CPU is counted as the launcher's);
    `on_exit(pid, exit code)` is then called in that thread."""
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, start_new_session=True)

    def reap() -> None:
        code = proc.wait()
        if on_exit is not None:
            on_exit(proc.pid, code)

    threading.Thread(target=reap, name=f"reap-run-worker-{proc.pid}", daemon=True).start()
    return proc


def fail_if_unfinished(instance: DagsterInstance, run_id: str, pid: int, code: int) -> bool:
    """After run `run_id`'s worker exited: a run it left unfinished (it died before reporting, e.g. its
    code location failed to load) is failed now, not after run monitoring's start timeout (300 s)."""
    run = instance.get_run_by_id(run_id)
    if run is None or run.is_finished:
        return False
    instance.report_engine_event(
        f"Run worker process {pid} exited (code {code}) without finishing run {run_id}.", run
    )
    instance.report_run_failed(run)
    return True


class LocalProcessRunLauncher(DefaultRunLauncher):
    """DefaultRunLauncher that tells run monitoring when a run's process (any launcher, CLI too) is gone;
    with `detach: true` each run is its own process that outlives a restart of `dagster dev`."""

    def __init__(self, inst_data: ConfigurableClassData | None = None, detach: bool = False) -> None:
        super().__init__(inst_data=inst_data)
        self.detach = detach

    @classmethod
    def config_type(cls) -> dict[str, Field]:
        return {
            "detach": Field(
                bool,
                is_required=False,
                default_value=False,
                description="Run each run as its own `dagster api execute_run` process in its own session, "
                "so stopping dagster dev / the daemon does not interrupt it.",
            )
        }

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]
    ) -> LocalProcessRunLauncher:
        return cls(inst_data=inst_data, detach=bool(config_value.get("detach", False)))

    def launch_run(self, context: LaunchRunContext) -> None:
        """Through the code server (default), or detached: a run worker process of its own."""
        if not self.detach:
            return super().launch_run(context)
        run = context.dagster_run
        instance = self._instance
        proc = start_detached(
            execute_run_command(instance, run),
            on_exit=lambda pid, code: fail_if_unfinished(instance, run.run_id, pid, code) and None,
        )
        self._instance.report_engine_event(
            f"Run worker started as process {proc.pid} in a session of its own (detached: a restart of "
            "dagster dev does not interrupt it).",
            run,
            cls=self.__class__,
        )
        return None

    def terminate(self, run_id: str) -> bool:
        """Detached: mark the run CANCELING and send its worker SIGTERM (it reports the run CANCELED); a
        run whose worker has not started executing is marked CANCELED at once."""
        if not self.detach:
            return super().terminate(run_id)
        run = self._instance.get_run_by_id(run_id)
        if run is None or run.is_finished:
            return False
        proc = run_process(self._instance, run_id)
        if proc is None:  # not executing yet: a worker that starts later finds it CANCELED and stops
            self._instance.report_run_canceled(run, message="Canceled before its run worker started.")
            return True
        self._instance.report_run_canceling(run)
        if not process_alive(proc.pid, proc.started_at):
            return False
        os.kill(proc.pid, signal.SIGTERM)
        return True

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        """Alive or gone, from the pid of the run's RUN_START event on this host."""
        return run_worker_health(self._instance, run)
