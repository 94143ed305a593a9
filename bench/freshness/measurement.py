"""measure(): prepare the platform, run it live under `dagster dev`, poll DuckDB, restart once, check."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bench.freshness.checks import (
    RunStats,
    TapeCheck,
    check_closes,
    live_runs_in_progress,
    poll,
    run_stats,
    verify_tape,
)
from bench.freshness.harness import (
    Prepared,
    base_env,
    free_port,
    log,
    make_home,
    prepare,
    start_dev,
    stop_dev,
    write_universe,
    write_workspace,
)
from bench.freshness.timeline import Timeline, gather
from bench.report import LoadAvg, Machine, Summary

IN_FLIGHT_WAIT_S = 90  # at the restart point, wait up to this long for a live run to be executing
DETACHED_WAIT_S = 180  # after the final stop, wait up to this long for detached runs to finish


@dataclass(frozen=True)
class Options:
    """The CLI flags of `python -m bench.freshness`."""

    minutes: float = 10.0
    trials: int = 5
    restart_at: float = 0.5
    downtime: float = 20.0
    grace: float = 240.0
    keep: bool = False
    instruments: int = 0  # 0: the embedded universe; else n synthetic instruments (write_universe)
    base_rate: float = 60.0  # trades/min of the slow instruments
    fast_rate: float = 1000.0  # trades/min of the fast third
    warm_limit: float = 300.0  # seconds dagster dev may take to the first prediction
    prep_cache: str = ""  # folder: history + model prepared once, shared by several measurements


@dataclass
class Usage:
    """CPU seconds used by dagster dev's process group (and its reaped run workers) and the 1-min
    load average, sampled while measuring."""

    cpu_at: list[tuple[float, float]] = field(default_factory=list)  # (wall, cpu s) samples
    load: list[float] = field(default_factory=list)

    def cpu_per_minute(self) -> float:
        """CPU seconds per wall minute between the first and last sample of one dagster dev session."""
        if len(self.cpu_at) < 2 or self.cpu_at[-1][0] <= self.cpu_at[0][0]:
            return float("nan")
        (t0, c0), (t1, c1) = self.cpu_at[0], self.cpu_at[-1]
        return (c1 - c0) / (t1 - t0) * 60


def session_cpu(sid: int) -> float:
    """CPU seconds (user + system, own + waited-for children) of every process in session `sid`."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[3]) == sid:  # fields after the command: state ppid pgrp session ...
            total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return total / tick


@dataclass
class Restart:
    """The mid-run restart of dagster dev (epoch seconds)."""

    in_flight: int
    down: float
    stop_s: float
    start_at: float
    up: float | None = None
    back: float | None = None  # first new prediction row readable after `up`


@dataclass
class Seen:
    """First sighting of every prediction row (symbol, minute ms) -> (epoch s seen, close)."""

    rows: dict[tuple[str, int], tuple[float, float]] = field(default_factory=dict)
    warm: float | None = None  # the first time any row was readable
    stop_at: float | None = None
    restart_at: float | None = None

    def add(self, polled: list[tuple[str, int, float]], t_seen: float, opts: Options) -> None:
        """Record a poll; the first readable row starts the measured window."""
        for sym, ts_ms, close in polled:
            self.rows.setdefault((sym, ts_ms), (t_seen, close))
        if self.warm is None and polled:
            self.warm = t_seen
            self.stop_at = t_seen + opts.minutes * 60
            self.restart_at = t_seen + opts.restart_at * opts.minutes * 60

    def pending(self) -> list[tuple[str, int]]:
        """(symbol, close) of measured minutes not readable yet."""
        assert self.warm is not None and self.stop_at is not None
        syms = {sym for sym, _ in self.rows}
        return [
            (sym, c)
            for c in window(self.warm, self.stop_at)
            for sym in syms
            if (sym, (c - 60) * 1000) not in self.rows
        ]


def window(warm: float, stop_at: float) -> list[int]:
    """Closes (epoch s) of the measured minutes: those closing in (warm, stop_at]."""
    return [c for c in range(int(warm // 60) * 60, int(stop_at // 60) * 60 + 60, 60) if warm < c <= stop_at]


@dataclass(frozen=True)
class Delays:
    """Delays from each measured minute's close to its prediction row being readable."""

    rows: list[dict]  # symbol, close (epoch s), delay (s), close_px
    missing: list[tuple[str, int]]  # (symbol, close) never readable
    affected: tuple[float, float]  # closes in (lo, hi] count as affected by the restart
    every: Summary
    steady: Summary
    per_minute: Summary  # max over instruments, minutes where all are readable


def assess(
    seen: dict[tuple[str, int], tuple[float, float]], closes: list[int], restart: Restart | None
) -> Delays:
    """Delays of every (instrument, measured minute); the restart's affected span is left out of 'steady'."""
    symbols = sorted({s for s, _ in seen})
    rows, missing = [], []
    for c in closes:
        for s in symbols:
            hit = seen.get((s, (c - 60) * 1000))
            if hit is None:
                missing.append((s, c))
            else:
                rows.append({"symbol": s, "close": c, "delay": hit[0] - c, "close_px": hit[1]})
    affected = (0.0, 0.0)
    if restart:
        # affected: closed between (down - 60 s) and the first new row after up
        up = restart.up if restart.up is not None else 1e18
        restart.back = min((t for (t, _) in seen.values() if t > up), default=None)
        affected = (restart.down - 60, restart.back or restart.up or 0.0)
    steady = [r["delay"] for r in rows if not (affected[0] < r["close"] <= affected[1])]
    per_minute = []
    for c in closes:
        ds = [r["delay"] for r in rows if r["close"] == c]
        if len(ds) == len(symbols):
            per_minute.append(max(ds))
    every = Summary.of([r["delay"] for r in rows])
    return Delays(rows, missing, affected, every, Summary.of(steady), Summary.of(per_minute))


@dataclass(frozen=True)
class Result:
    """Everything FRESHNESS.md reports."""

    options: Options
    began: float  # epoch s
    t_dev: float  # dagster dev started
    warm: float  # first prediction readable: the measured window is (warm, stop_at]
    stop_at: float
    t_end: float
    prep: Prepared
    allow_unqualified: bool
    delays: Delays
    restart: Restart | None
    tape: list[TapeCheck]
    closes_checked: int
    closes_equal: int
    stats: RunStats
    load_before: LoadAvg
    load_after: LoadAvg
    machine: Machine
    usage: Usage | None = None
    timeline: Timeline | None = None  # the restart, start command -> first new row


@dataclass
class Live:
    """The running platform: environment, instance home, workspace and the `dagster dev` process."""

    root: Path
    env: dict[str, str]
    home: Path
    workspace: Path
    port: int
    proc: subprocess.Popen | None = None

    @property
    def devlog(self) -> Path:
        """dagster dev's output (both starts)."""
        return self.root / "dagster_dev.log"

    @property
    def warehouse(self) -> Path:
        """The DuckDB file the bench polls."""
        return self.root / "warehouse.duckdb"

    def start(self) -> float:
        """Start dagster dev; returns the start time."""
        self.proc = start_dev(self.env, self.workspace, self.port, self.devlog)
        return time.time()

    def stop(self) -> float:
        """Stop dagster dev (if running); returns how long that took."""
        took = stop_dev(self.proc) if self.proc is not None else 0.0
        self.proc = None
        return took


def _maybe_restart(
    live: Live, seen: Seen, restart: Restart | None, now: float, opts: Options
) -> Restart | None:
    """Stop dagster dev at the restart point (while a live run executes), start it after the downtime."""
    due = seen.restart_at is not None and restart is None and now >= seen.restart_at
    if due:
        # stop dagster dev while a live run is executing (up to 90 s of waiting for one), so the
        # restart proves that a run cut off mid-write loses and duplicates nothing
        in_flight = live_runs_in_progress(live.home)
        if in_flight or now >= seen.restart_at + IN_FLIGHT_WAIT_S:
            log(
                f"stopping dagster dev (SIGTERM to its process group) with {in_flight} live run(s) "
                "executing; polling goes on ..."
            )
            down = time.time()
            stop_s = live.stop()
            return Restart(in_flight, down, stop_s, time.time() + opts.downtime)
    if restart is not None and restart.up is None and now >= restart.start_at:
        restart.up = live.start()
        log(f"dagster dev stopped in {restart.stop_s:.1f} s; started again after {opts.downtime:g} s")
    return restart


def watch(live: Live, t_dev: float, opts: Options, usage: Usage) -> tuple[Seen, Restart | None, float]:
    """Poll gold.predictions every second until the window's rows are in (or the grace ran out); CPU
    of dagster dev is sampled over the measured minutes before the restart."""
    since_ms = int((t_dev - 120) * 1000) // 60_000 * 60_000
    seen, restart = Seen(), None
    try:
        while True:
            now = time.time()
            if seen.warm is not None and restart is None and live.proc is not None:
                usage.cpu_at.append((now, session_cpu(live.proc.pid)))
                usage.load.append(os.getloadavg()[0])
            elif seen.warm is not None and now <= (seen.stop_at or now):
                usage.load.append(os.getloadavg()[0])
            polled = poll(live.warehouse, since_ms)
            first = seen.warm is None
            seen.add(polled, time.time(), opts)
            if first and seen.warm is not None:
                log(
                    f"first prediction readable {seen.warm - t_dev:.0f} s after dagster dev started; "
                    f"measuring {opts.minutes:g} min"
                )
            if seen.warm is None and now - t_dev > opts.warm_limit:
                sys.exit(f"bench: no prediction after {opts.warm_limit:g} s; see {live.devlog}")
            restart = _maybe_restart(live, seen, restart, now, opts)
            if (
                seen.stop_at
                and now >= seen.stop_at
                and (not seen.pending() or now >= seen.stop_at + opts.grace)
            ):
                break
            time.sleep(max(0.0, 1.0 - (time.time() - now)))
    finally:
        t_final_stop = time.time()
        live.stop()
        log("dagster dev stopped")
    return seen, restart, t_final_stop


def _await_detached_runs(home: Path, timeout_s: float = DETACHED_WAIT_S) -> None:
    """Wait for the live runs still executing after the final stop: detached run workers (dagster.yaml
    `detach: true`) outlive dagster dev and finish their run; the checks read what they wrote."""
    deadline = time.time() + timeout_s
    while (n := live_runs_in_progress(home)) and time.time() < deadline:
        time.sleep(1.0)
    if n:
        log(f"{n} live run(s) still executing {timeout_s:g} s after dagster dev stopped")


def _setup(root: Path, opts: Options) -> Live:
    """The temp DAGSTER_HOME and environment; this process reads the same lake, warehouse and MLflow
    (and instruments file: run before anything loads the universe)."""
    home = make_home(root)
    env = base_env(root, home)
    keys: tuple[str, ...] = ("CRYPTO_LAKE_ROOT", "CRYPTO_WAREHOUSE_PATH", "MLFLOW_TRACKING_URI")
    keys += ("MLFLOW_DISABLE_TELEMETRY",)
    if opts.prep_cache:  # the model registry is shared (read-only for the live runs)
        (Path(opts.prep_cache) / "mlflow").mkdir(parents=True, exist_ok=True)
        env["MLFLOW_TRACKING_URI"] = f"sqlite:///{Path(opts.prep_cache) / 'mlflow' / 'mlflow.db'}"
    if opts.instruments:
        universe = write_universe(root, opts.instruments, opts.base_rate, opts.fast_rate)
        env["CRYPTO_INSTRUMENTS"] = str(universe)
        keys += ("CRYPTO_INSTRUMENTS",)
    os.environ.update({k: env[k] for k in keys})
    return Live(root, env, home, write_workspace(root), free_port())


def measure(opts: Options) -> Result:
    """Prepare history + model, go live for `opts.minutes` with one restart, then check and summarise."""
    root = Path(tempfile.mkdtemp(prefix="crypto_freshness_"))
    log(f"temp root {root}")
    result = _measure_in(root, opts)  # on failure the root stays: the error names its logs
    if opts.keep:
        log(f"kept {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    return result


def _prepared(live: Live, root: Path, opts: Options) -> Prepared:
    """History and model: prepared here, or copied from `opts.prep_cache` (the same first instruments
    and yesterday in every generated universe) when an earlier measurement prepared them."""
    if not opts.prep_cache:
        return prepare(live.env, root, opts.trials)
    cache = Path(opts.prep_cache)
    done = cache / "prepared.json"
    if done.exists():
        from crypto_platform.settings import load_universe

        shutil.copytree(cache / "lake", root / "lake")
        saved = json.loads(done.read_text())
        live_keys = [i.key for i in load_universe().instruments if i.is_live]
        log(f"history and model v{saved['model_version']} taken from {cache}")
        return Prepared(**{**saved, "instruments": live_keys})
    prep = prepare(live.env, root, opts.trials)
    shutil.copytree(root / "lake", cache / "lake")
    done.write_text(json.dumps(prep.__dict__))
    return prep


def _measure_in(root: Path, opts: Options) -> Result:
    live = _setup(root, opts)
    load0, t0 = os.getloadavg(), time.time()
    prep = _prepared(live, root, opts)
    allow = not prep.qualified
    live.env.update(CRYPTO_LIVE_SENSOR="running", CRYPTO_ALLOW_UNQUALIFIED_MODEL="true" if allow else "false")
    t_dev = live.start()
    log(
        f"dagster dev started (pid {live.proc.pid}, port {live.port}); live sensor RUNNING, "
        f"allow_unqualified_model={allow}"
    )
    usage = Usage()
    seen, restart, t_final_stop = watch(live, t_dev, opts, usage)
    _await_detached_runs(live.home)
    t_end = time.time()
    assert seen.warm is not None and seen.stop_at is not None
    delays = assess(seen.rows, window(seen.warm, seen.stop_at), restart)
    # the first row seen for each minute is the complete minute: its close equals the tape's
    checked, equal = check_closes(delays.rows, prep.instruments)
    days = sorted({datetime.fromtimestamp(t, UTC).date() for t in (t_dev, t_end)})
    tape = verify_tape(root / "lake", prep.instruments, days)
    stats = run_stats(live.home, [t for t in (restart.down if restart else None, t_final_stop) if t])
    timeline = None
    if restart is not None and restart.up is not None:
        timeline = gather(live.home, live.devlog, restart.down, restart.up, restart.back)
    return Result(
        options=opts,
        began=t0,
        t_dev=t_dev,
        warm=seen.warm,
        stop_at=seen.stop_at,
        t_end=t_end,
        prep=prep,
        allow_unqualified=allow,
        delays=delays,
        restart=restart,
        tape=tape,
        closes_checked=checked,
        closes_equal=equal,
        stats=stats,
        load_before=load0,
        load_after=os.getloadavg(),
        machine=Machine.current(),
        usage=usage,
        timeline=timeline,
    )
