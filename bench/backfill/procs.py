"""Memory and CPU of a process tree, sampled from /proc: peak RSS of any one run worker, peak summed RSS
of the whole tree (daemon + code server + run workers + CLI runs), CPU seconds, load average."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

_PROC = Path("/proc")
_PAGE = os.sysconf("SC_PAGE_SIZE")
_TICK = os.sysconf("SC_CLK_TCK")
RUN_WORKER_MARK = "execute_run"  # `dagster api execute_run ...`: a run launched as a command
CODE_SERVER_MARK = "api grpc"  # `dagster api grpc`: the code server; the default launcher runs each run in
SPAWN_MARK = "multiprocessing.spawn"  # a `multiprocessing` spawned child of it


def run_workers(procs: list[Proc]) -> list[Proc]:
    """The run processes among `procs`: `dagster api execute_run`, or a spawned child of a code server
    (how the local launcher of dagster-daemon / dagster dev executes a run)."""
    servers = {p.pid for p in procs if CODE_SERVER_MARK in p.cmdline}
    return [
        p
        for p in procs
        if RUN_WORKER_MARK in p.cmdline
        or (SPAWN_MARK in p.cmdline and "spawn_main" in p.cmdline and p.ppid in servers)
    ]


@dataclass(frozen=True)
class Proc:
    """One process as /proc shows it at one instant."""

    pid: int
    ppid: int
    session: int
    rss: int  # bytes
    cpu: float  # own user + system seconds so far
    cmdline: str


def read_proc(pid: int) -> Proc | None:
    """The process `pid` from /proc (None when it is gone or unreadable)."""
    base = _PROC / str(pid)
    try:
        fields = (base / "stat").read_text().rsplit(")", 1)[1].split()
        rss_pages = int((base / "statm").read_text().split()[1])
        cmd = (base / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except (OSError, IndexError, ValueError):
        return None
    # after the command: state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
    return Proc(
        pid=pid,
        ppid=int(fields[1]),
        session=int(fields[3]),
        rss=rss_pages * _PAGE,
        cpu=(int(fields[11]) + int(fields[12])) / _TICK,
        cmdline=cmd,
    )


def _parent_and_session(pid: int) -> tuple[int, int] | None:
    """(ppid, session) of `pid` from its stat line alone (None when it is gone)."""
    try:
        fields = (_PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[1]), int(fields[3])
    except (OSError, IndexError, ValueError):
        return None


def tree(sessions: set[int]) -> list[Proc]:
    """Every live process whose session id is in `sessions` (each watched command starts its own), and
    their descendants in other sessions (detached run workers: children of the daemon in a session
    of their own, dagster.yaml `detach: true`). Only the stat line of the machine's other processes
    is read: the sampler runs all through a measurement, on a machine that may run hundreds."""
    links = {
        pid: ps
        for e in _PROC.iterdir()
        if e.name.isdigit() and (ps := _parent_and_session(pid := int(e.name))) is not None
    }
    pids = {pid for pid, (_, session) in links.items() if session in sessions}
    rest = {pid: ppid for pid, (ppid, _) in links.items() if pid not in pids}
    while grown := {pid for pid, ppid in rest.items() if ppid in pids}:
        pids |= grown
        rest = {pid: ppid for pid, ppid in rest.items() if pid not in grown}
    return [p for pid in sorted(pids) if (p := read_proc(pid)) is not None]


@dataclass
class Usage:
    """What the sampler saw: peaks and CPU per process (pid -> last own CPU seconds)."""

    peak_tree_rss: int = 0
    peak_worker_rss: int = 0
    peak_worker_cmd: str = ""
    peak_any_rss: int = 0
    max_processes: int = 0
    max_workers: int = 0
    cpu_by_pid: dict[int, float] = field(default_factory=dict)
    load: list[float] = field(default_factory=list)  # 1-minute load average, one per sample
    samples: int = 0

    def cpu_seconds(self) -> float:
        """User + system seconds of every process seen (its last sample)."""
        return sum(self.cpu_by_pid.values())

    def add(self, procs: list[Proc], load1: float) -> None:
        """Fold one sample into the peaks."""
        self.samples += 1
        self.load.append(load1)
        workers = run_workers(procs)
        self.peak_tree_rss = max(self.peak_tree_rss, sum(p.rss for p in procs))
        self.max_processes = max(self.max_processes, len(procs))
        self.max_workers = max(self.max_workers, len(workers))
        for p in procs:
            self.cpu_by_pid[p.pid] = max(self.cpu_by_pid.get(p.pid, 0.0), p.cpu)
            self.peak_any_rss = max(self.peak_any_rss, p.rss)
        for w in workers:
            if w.rss > self.peak_worker_rss:
                self.peak_worker_rss, self.peak_worker_cmd = w.rss, w.cmdline


class Sampler:
    """Samples the process trees of the watched sessions every `interval` seconds in a thread."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.sessions: set[int] = set()
        self.usage = Usage()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="proc-sampler", daemon=True)

    def watch(self, session: int) -> None:
        """Also sample the processes of session `session` (a command started with start_new_session)."""
        with self._lock:
            self.sessions.add(session)

    def sample(self) -> None:
        """Take one sample now."""
        with self._lock:
            sessions = set(self.sessions)
            self.usage.add(tree(sessions), os.getloadavg()[0])

    def cpu_now(self) -> float:
        """CPU seconds so far (after a fresh sample)."""
        self.sample()
        with self._lock:
            return self.usage.cpu_seconds()

    def take(self) -> Usage:
        """What was seen since the last `take` (after a fresh sample); the peaks start again from zero,
        the CPU per process is kept (CPU of a phase = the difference of `cpu_seconds`)."""
        self.sample()
        with self._lock:
            seen, self.usage = self.usage, Usage(cpu_by_pid=dict(self.usage.cpu_by_pid))
            return seen

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def wait_gone(session: int, timeout: float) -> bool:
    """Wait until no process of `session` is left; True when none is."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not tree({session}):
            return True
        time.sleep(0.5)
    return not tree({session})
