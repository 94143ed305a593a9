"""measure(): for each partitions-per-run setting, a fresh platform backfilled raw -> predictions by the
real daemon, timed per phase, with memory and CPU sampled from /proc, then checked."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from bench.backfill.checks import Coverage, RowCheck, RunFigures, coverage, rows, run_figures
from bench.backfill.platform import FEATURES_AND_LABELS, PREDICTIONS, Platform, day_range, write_universe
from bench.backfill.procs import Sampler, Usage
from bench.freshness.harness import log
from bench.report import LoadAvg, Machine

# trades a minute: two busy pairs, a middle tier and a tail of quiet ones, ~60 a minute in all (the
# simulator's intraday curve varies it); kept small so that 30 x 10 finishes on the shared 2-core machine
DEFAULT_RATES = (20.0, 10.0, 6.0, 4.0, 4.0, 4.0, 3.0, 3.0, 3.0, 3.0)
# a model refused by the promotion gate is served anyway (as `challenger`, rows flagged qualified = false)
UNQUALIFIED = {"ops": {"gold__predictions": {"config": {"allow_unqualified_model": True}}}}


@dataclass(frozen=True)
class Options:
    """The CLI flags of `python -m bench.backfill`."""

    days: int = 30
    instruments: int = 10
    per_run: tuple[int, ...] = (10,)  # one full measurement per setting, each on a fresh platform
    rates: tuple[float, ...] = DEFAULT_RATES  # trades/min per instrument (cycled when there are more)
    train_days: int = 7  # the model is tuned and fitted on the first days, evaluated on the rest
    trials: int = 3
    tape_sample: int = 20  # partitions compared with the simulator's tape (0: all)
    last_day: date | None = None  # default: yesterday (UTC)
    phase_timeout: float = 3600.0
    keep: bool = False
    # seconds between backfill daemon iterations; None: Dagster's own (30 s, what a user gets). Set
    # only by the tiny end-to-end test, where waiting for the next iteration is most of the time.
    backfill_interval_s: float | None = None
    # seconds between the daemon's workspace reloads (each starts a new code server process); None:
    # Dagster's own (60 s). Set only by the tiny end-to-end test: one code server serves all of it.
    workspace_reload_s: float | None = None

    def instrument_rates(self) -> list[float]:
        """The trade rate of each of the `instruments` instruments."""
        return [self.rates[k % len(self.rates)] for k in range(self.instruments)]

    def days_measured(self) -> list[date]:
        """The UTC days of the backfill."""
        return day_range(self.days, self.last_day or (datetime.now(UTC).date() - timedelta(days=1)))


@dataclass(frozen=True)
class Phase:
    """One phase of a measurement: wall and CPU seconds, peaks, and the backfill's runs (if it is one)."""

    name: str
    wall_s: float
    cpu_s: float
    peak_tree_rss: int  # bytes: summed RSS of every process of the tree at one sample
    peak_worker_rss: int  # bytes: the largest RSS of one run process (`dagster api execute_run`)
    peak_any_rss: int  # bytes: the largest RSS of any one process (CLI runs, code server, daemon too)
    max_workers: int  # run processes alive at once
    load_mean: float
    load_max: float
    status: str = ""  # the backfill's final status
    runs: RunFigures | None = None
    coverage: Coverage | None = None


@dataclass(frozen=True)
class Setting:
    """One full measurement with CRYPTO_BACKFILL_PARTITIONS_PER_RUN = per_run."""

    per_run: int
    phases: list[Phase]
    total_wall_s: float
    total_cpu_s: float
    rows: RowCheck
    model_alias: str  # the model the predictions served: 'champion', or 'challenger' (gate refused it)
    model_version: str
    finished: bool = True  # False: written after a phase, before the setting ended (rows not checked yet)


@dataclass(frozen=True)
class Result:
    """Every setting's measurement, the inputs, the machine and the load while measuring."""

    options: Options
    instruments: list[str]
    rates: list[float]
    days: list[date]
    settings: list[Setting]
    started: datetime
    finished: datetime
    machine: Machine
    load_start: LoadAvg
    load_end: LoadAvg
    versions: dict[str, str] = field(default_factory=dict)


def _phase(name: str, t0: float, cpu0: float, sampler: Sampler, **kw: object) -> Phase:
    seen: Usage = sampler.take()
    load = seen.load or [float("nan")]
    return Phase(
        name,
        time.monotonic() - t0,
        seen.cpu_seconds() - cpu0,
        seen.peak_tree_rss,
        seen.peak_worker_rss,
        seen.peak_any_rss,
        seen.max_workers,
        sum(load) / len(load),
        max(load),
        **kw,  # type: ignore[arg-type]
    )


def _backfill(
    p: Platform,
    name: str,
    selection: str,
    rng: str,
    keys: list[str],
    opts: Options,
    config: dict | None = None,
) -> Phase:
    t0, cpu0 = time.monotonic(), p.sampler.cpu_now()
    backfill_id = p.submit_backfill(selection, rng, config)
    log(f"{name}: backfill {backfill_id} submitted")
    status = p.wait_backfill(backfill_id, opts.phase_timeout)
    phase = _phase(name, t0, cpu0, p.sampler, status=status)
    runs, cov = run_figures(p.home, backfill_id), coverage(p.home, backfill_id, keys)
    log(f"{name}: {status} in {phase.wall_s:.0f} s, {runs.launched} runs ({runs.failed} failed)")
    return Phase(**{**phase.__dict__, "runs": runs, "coverage": cov})


def _served_model(uri: str) -> tuple[str, str]:
    """(alias, version) the predictions will serve: the champion, else the challenger."""
    from bench.freshness.harness import _served_model as served

    version, alias = served(uri)
    return alias, version


NO_ROWS = RowCheck(0, 0, 0, 0, [], 0, [])


def measure_setting(
    opts: Options,
    per_run: int,
    root: Path,
    universe: Path,
    instruments: list[str],
    phase_done: Callable[[Setting], None] = lambda _: None,
) -> Setting:
    """One platform, backfilled raw -> features/labels, a model trained, predictions backfilled;
    `phase_done` gets the unfinished Setting after each phase."""
    from crypto_platform.partitions import multi_key

    days = opts.days_measured()
    with Sampler() as sampler:
        p = Platform.create(root, universe, instruments, per_run, sampler)
        rng = f"{multi_key(days[0], p.instruments[0])}...{multi_key(days[-1], p.instruments[-1])}"
        keys = [multi_key(d, i) for d in days for i in p.instruments]
        t_all, cpu_all = time.monotonic(), sampler.cpu_now()
        phases: list[Phase] = []
        alias = version = "-"

        def partial() -> None:
            wall, cpu = time.monotonic() - t_all, sampler.cpu_now() - cpu_all
            phase_done(Setting(per_run, list(phases), wall, cpu, NO_ROWS, alias, version, finished=False))

        p.start_daemon(opts.backfill_interval_s, opts.workspace_reload_s)
        try:
            phases.append(_backfill(p, "raw -> features, labels", FEATURES_AND_LABELS, rng, keys, opts))
            partial()
            t0, cpu0 = time.monotonic(), sampler.cpu_now()
            eval_from = days[min(opts.train_days, len(days) - 1)]
            p.train(
                opts.trials, window_days=(datetime.now(UTC).date() - days[0]).days + 1, eval_from=eval_from
            )
            phases.append(_phase("training set + model", t0, cpu0, sampler))
            alias, version = _served_model(p.env["MLFLOW_TRACKING_URI"])
            log(f"model trained in {phases[-1].wall_s:.0f} s: v{version} ({alias})")
            partial()
            config = None if alias == "champion" else UNQUALIFIED
            phases.append(_backfill(p, "predictions", PREDICTIONS, rng, keys, opts, config))
        finally:
            p.stop_daemon()
        total_wall, total_cpu = time.monotonic() - t_all, sampler.cpu_now() - cpu_all
    checked = rows(root / "lake", p.instruments, days, opts.tape_sample)
    return Setting(per_run, phases, total_wall, total_cpu, checked, alias, version)


def measure(opts: Options, progress: Callable[[Result], None] | None = None) -> Result:
    """Every partitions-per-run setting, one after the other, each on a fresh temp platform; `progress`
    gets the Result so far after each (so a report can be written before a later setting finishes)."""
    started, load_start = datetime.now(UTC), os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="crypto_backfill_"))
    universe, instruments = write_universe(work, opts.instrument_rates())
    # this process reads the same universe (partition keys, the tape): set before crypto_platform loads it
    os.environ["CRYPTO_INSTRUMENTS"] = str(universe)
    settings = []
    try:
        for n in opts.per_run:
            root = work / f"per_run_{n}"
            root.mkdir()
            log(f"--- {n} partitions per run: {root}")

            def phase_done(unfinished: Setting) -> None:
                if progress is not None:
                    progress(_result(opts, instruments, [*settings, unfinished], started, load_start))

            settings.append(measure_setting(opts, n, root, universe, instruments, phase_done))
            if not opts.keep:
                shutil.rmtree(root, ignore_errors=True)
            if progress is not None:
                progress(_result(opts, instruments, settings, started, load_start))
    finally:
        if not opts.keep:
            shutil.rmtree(work, ignore_errors=True)
    return _result(opts, instruments, settings, started, load_start)


def _result(
    opts: Options, instruments: list[str], settings: list[Setting], started: datetime, load_start: LoadAvg
) -> Result:
    import dagster
    import polars

    return Result(
        options=opts,
        instruments=instruments,
        rates=opts.instrument_rates(),
        days=opts.days_measured(),
        settings=list(settings),
        started=started,
        finished=datetime.now(UTC),
        machine=Machine.current(),
        load_start=load_start,
        load_end=os.getloadavg(),
        versions={"dagster": dagster.__version__, "polars": polars.__version__},
    )
