"""render(Result) -> the BACKFILL.md report: a side-by-side table of the settings, then each one's phases,
coverage and row checks, the method and the machine."""

from __future__ import annotations

from bench.backfill.measurement import Phase, Result, Setting
from bench.report import loads, minute, num, ratio, table

MIB = 1024**2


def _mib(x: int) -> str:
    return f"{x / MIB:,.0f}"


def _verdict(s: Setting) -> str:
    if not s.finished:
        return "not checked (unfinished)"
    complete = all(p.coverage.complete for p in s.phases if p.coverage is not None)
    return "yes" if complete and s.rows.ok else "**no**"


def _runs(p: Phase | None) -> str:
    if p is None or p.runs is None:
        return "-"
    return f"{p.runs.launched} ({p.runs.failed} failed)"


def _per_run(p: Phase | None) -> str:
    if p is None or p.runs is None:
        return "-"
    return f"{p.runs.partitions_per_run.p50:g} / {p.runs.partitions_per_run.max:g}"


def _tape(s: Setting) -> str:
    if not s.finished:
        return "not checked"
    return f"{sum(t.diff.ok for t in s.rows.tape)} of {len(s.rows.tape)}"


def _find(s: Setting, prefix: str) -> Phase | None:
    return next((p for p in s.phases if p.name.startswith(prefix)), None)


def _side_by_side(result: Result) -> str:
    ss = result.settings
    header = ["", *(f"{s.per_run} partitions/run" for s in ss)]
    both = len(ss) == 2
    if both:
        header.append(f"ratio {ss[1].per_run} / {ss[0].per_run}")

    def line(name: str, values: list[float], fmt: str = "{:,.0f}") -> list[str]:
        cells = [name, *(num(v, fmt) for v in values)]
        return [*cells, num(ratio(values[1], values[0]), "{:.2f}")] if both else cells

    def wall(prefix: str) -> list[float]:
        return [p.wall_s if (p := _find(s, prefix)) else float("nan") for s in ss]

    rows = [
        line("total wall time (s)", [s.total_wall_s for s in ss]),
        line("total CPU (s, every sampled process)", [s.total_cpu_s for s in ss]),
        line("raw -> features, labels: wall (s)", wall("raw")),
        line("training set + model: wall (s)", wall("training")),
        line("predictions: wall (s)", wall("predictions")),
        line(
            "peak RSS of one run worker (MiB)", [max(p.peak_worker_rss for p in s.phases) / MIB for s in ss]
        ),
        line("peak RSS of any one process (MiB)", [max(p.peak_any_rss for p in s.phases) / MIB for s in ss]),
        line("peak summed RSS of the tree (MiB)", [max(p.peak_tree_rss for p in s.phases) / MIB for s in ss]),
        line("run processes at once (max)", [float(max(p.max_workers for p in s.phases)) for s in ss]),
    ]
    launched = [
        "runs launched (failed)",
        *(f"{_runs(_find(s, 'raw'))} + {_runs(_find(s, 'pred'))}" for s in ss),
    ]
    partitions = ["partitions per run p50 / max", *(_per_run(_find(s, "raw")) for s in ss)]
    tape = ["bronze = simulator tape (sampled partitions)", *(_tape(s) for s in ss)]
    verdict = ["every partition of every asset; rows check", *(_verdict(s) for s in ss)]
    texts = [launched, partitions, tape, verdict]
    extra = [[*t, ""] for t in texts] if both else texts
    return table(header, [*rows, *extra], "l" + "r" * (len(header) - 1))


def _phases(s: Setting) -> str:
    header = [
        "phase",
        "wall s",
        "CPU s",
        "runs (failed)",
        "run s p50 / max",
        "partitions per run",
        "peak run RSS MiB",
        "peak tree RSS MiB",
        "run procs at once",
        "load mean / max",
        "status",
    ]
    rows = []
    for p in s.phases:
        r = p.runs
        rows.append(
            [
                p.name,
                f"{p.wall_s:,.0f}",
                f"{p.cpu_s:,.0f}",
                _runs(p) if r else "1 (CLI, in-process)",
                f"{r.durations.p50:,.0f} / {r.durations.max:,.0f}" if r else "-",
                f"{r.partitions_per_run.p50:g} (max {r.partitions_per_run.max:g})" if r else "-",
                _mib(p.peak_worker_rss) if r else f"{_mib(p.peak_any_rss)} (CLI)",
                _mib(p.peak_tree_rss),
                str(p.max_workers),
                f"{p.load_mean:.1f} / {p.load_max:.1f}",
                p.status or "-",
            ]
        )
    return table(header, rows, "lrrrrrrrrrl")


def _coverage(s: Setting) -> str:
    rows = [
        [asset, f"{n} / {p.coverage.expected}", "yes" if n == p.coverage.expected else "**no**"]
        for p in s.phases
        if p.coverage is not None
        for asset, n in p.coverage.by_asset.items()
    ]
    return table(["asset", "partitions materialized", "complete"], rows, "lrl")


def _steps(s: Setting, top: int = 6) -> str:
    """Per backfill: the steps that took the most time, summed over its runs, with their share."""
    lines = []
    for p in s.phases:
        if p.runs is None or not p.runs.step_seconds:
            continue
        total = sum(p.runs.step_seconds.values())
        shown = list(p.runs.step_seconds.items())[:top]
        cells = ", ".join(f"`{k}` {v:,.0f} s ({v / total:.0%})" for k, v in shown)
        lines.append(f"- {p.name}: steps {total:,.0f} s in all; {cells}")
    return "\n".join(lines)


def _row_checks(s: Setting) -> str:
    r = s.rows
    tape_ok = sum(t.diff.ok for t in r.tape)
    bad = ", ".join(r.mismatched[:5]) + (" ..." if len(r.mismatched) > 5 else "")
    lines = [
        f"- raw rows committed {r.raw_rows:,}; bronze {r.bronze_rows:,} + rejects {r.reject_rows:,}; "
        f"partitions where raw != bronze + rejects (or raw is empty): {len(r.mismatched)} of {r.partitions}"
        + (f" ({bad})" if bad else ""),
        f"- bronze equal to the simulator's tape (no loss, no duplicates, no changed trade): {tape_ok} of "
        f"{len(r.tape)} partitions compared ({sum(t.diff.bronze for t in r.tape):,} trades)",
        f"- prediction rows: {r.predictions_rows:,}; model served: v{s.model_version} ({s.model_alias}"
        + (")" if s.model_alias == "champion" else ": the promotion gate refused it, served unqualified)"),
    ]
    return "\n".join(lines)


def _unfinished(result: Result) -> str:
    stopped = [s for s in result.settings if not s.finished]
    if stopped:
        names = ", ".join(f"{s.per_run} (after '{s.phases[-1].name}')" for s in stopped if s.phases)
        return (
            f"**Unfinished**: the report was written after a phase, and the measurement stopped before "
            f"the next ended: {names}; the phases not listed were not measured, the row checks not run."
        )
    done = [s.per_run for s in result.settings]
    missing = [n for n in result.options.per_run if n not in done]
    if not missing:
        return f"Settings measured: {', '.join(map(str, done))} partitions per run."
    return (
        f"Settings measured: {', '.join(map(str, done)) or 'none'} partitions per run; "
        f"**not measured** (stopped before it finished): {', '.join(map(str, missing))}."
    )


def render(result: Result) -> str:
    """The report as markdown."""
    o = result.options
    per_run = ",".join(str(n) for n in o.per_run)
    rates = ", ".join(f"{k} {r:g}" for k, r in zip(result.instruments, result.rates, strict=True))
    m = result.machine
    cmd = (
        f"./run python -m bench.backfill --days {o.days} --instruments {o.instruments} --per-run {per_run} "
        f"--train-days {o.train_days} --trials {o.trials} --tape-sample {o.tape_sample}"
    )
    interval = ""  # a test setting, not a flag: said, since the times depend on it
    if o.backfill_interval_s is not None:
        interval = f" with the backfill daemon every {o.backfill_interval_s:g} s (Dagster's: 30 s)"
    if o.workspace_reload_s is not None:
        interval += (
            f"{' and' if interval else ' with'} the workspace reloaded every {o.workspace_reload_s:g} s "
            "(Dagster's: 60 s)"
        )
    parts = [
        f"# Backfill: {o.days} days x {o.instruments} instruments, raw -> predictions, by the daemon",
        "",
        f"`{cmd}`{interval} — {minute(result.started)} to {minute(result.finished)} UTC, days "
        f"{result.days[0]} to {result.days[-1]} ({len(result.days) * len(result.instruments)} partitions).",
        "",
        f"Machine: {m.cpu}, {m.nproc} cores, {m.ram_gib:.1f} GiB RAM, {m.os}, Python {m.python}; "
        + ", ".join(f"{k} {v}" for k, v in result.versions.items())
        + f". Load average (1, 5, 15 min) at the start {loads(result.load_start)}, at the end "
        f"{loads(result.load_end)}; the 1-minute load while measuring is in each phase's row. The machine "
        "was shared with other work while measuring: wall times are upper bounds, CPU seconds less so.",
        "",
        f"Instruments (synthetic, `sim`, trades a minute before the simulator's intraday activity curve, "
        f"`informed_flow: 1.0`): {rates}.",
        "",
        _unfinished(result),
        "",
        "## Side by side",
        "",
        _side_by_side(result),
    ]
    for s in result.settings:
        parts += [
            "",
            f"## {s.per_run} partitions per run",
            "",
            _phases(s),
            "",
            "Where the runs' time went (step start to end, summed over the backfill's runs):",
            "",
            _steps(s),
            "",
            _row_checks(s) if s.finished else "Row checks: not run (unfinished).",
            "",
            _coverage(s),
        ]
    parts += ["", "## Method", "", METHOD.format(train_days=o.train_days, trials=o.trials), ""]
    return "\n".join(parts)


METHOD = """\
Each setting is measured on a fresh temp platform (`bench/backfill/`): DAGSTER_HOME with the repo's
dagster.yaml (SQLite storage moved into the temp root; QueuedRunCoordinator, max_concurrent_runs 4;
the local run launcher: each run is a `dagster api execute_run` process of its own, detached into its
own session and sampled as the daemon's child), its own lake, warehouse and
MLflow store, and `CRYPTO_BACKFILL_PARTITIONS_PER_RUN=N`, so every partitioned asset has
`BackfillPolicy.multi_run(N)`. `dagster-daemon run` is started on the repo's workspace, then, as a
user would:

1. `crypto-platform backfill --select 'group:raw or group:bronze or group:silver or key:gold/features
   or key:gold/labels' --partition-range FIRST...LAST`, waited for until the backfill is no longer
   REQUESTED and none of its runs is queued or in progress;
2. `dagster asset materialize` of the training set, its summary, the model and its evaluations
   ({trials} Optuna trials; tuned and fitted on the first {train_days} days, evaluated from then on,
   `eval_from`): predictions need a model, and the model needs the features and labels;
3. `crypto-platform backfill --select key:gold/predictions` over the same range (the first
   {train_days} days are in-sample for the model). Only if the promotion gate refused the model does
   the backfill carry the run config `allow_unqualified_model: true` (`--config-json`), so that the
   challenger is served (rows flagged `qualified = false`; `CRYPTO_ALLOW_UNQUALIFIED_MODEL` is the
   live sensor's setting and does not reach a backfill's runs); the row checks name the model served.

Memory and CPU: every 0.5 s the bench reads /proc for every process of the daemon's session (daemon,
code server, run workers) and of each command's session (the CLI and its in-process run): RSS per
process (`statm`), the largest run process (a `multiprocessing` child of a code server, or a
`dagster api execute_run`), the summed RSS of
all of them at one instant (shared pages count once per process, so the sum is an upper bound), and
each process's own user + system CPU at its last sample (a process living less than 0.5 s can be
missed). Wall times run from the submission to the end of the backfill's last run.

Checks after each setting: the backfill's runs from the instance (status, start to end time, the
partitions each covered); every asset the backfill selected has every partition of the range
materialized (`get_materialized_partitions`); for every partition, the raw rows committed equal
bronze + rejects; for a random sample of partitions (`--tape-sample`, 0 = all), bronze equals the
simulator's deterministic tape over the partition's covered span (the freshness bench's check)."""
