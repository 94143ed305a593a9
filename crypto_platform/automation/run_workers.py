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

Only for single-host instances (the embedded SQLite default): a pid means nothing on another host. A
deployment on K8s/ECS uses that platform's launcher and its own worker health checks (docs/deploy.md).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dagster import DagsterEventType, DagsterInstance, DagsterRun, DefaultRunLauncher
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus

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


class LocalProcessRunLauncher(DefaultRunLauncher):
    """DefaultRunLauncher that tells run monitoring when a run's process (any launcher, CLI too) is gone."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        """Alive or gone, from the pid of the run's RUN_START event on this host."""
        return run_worker_health(self._instance, run)
