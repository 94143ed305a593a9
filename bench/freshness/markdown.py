"""render(): bench/FRESHNESS.md from a freshness Result (delays, where the time goes, restart, tape)."""

from __future__ import annotations

from datetime import UTC, datetime

from bench.freshness.checks import RunStats, TapeCheck
from bench.freshness.measurement import Result
from bench.report import Summary, command, loads, minute, row, seconds, table

DELAY_TARGETS = {"p50": 60.0, "p95": 120.0}
SUMMARY_ALIGN = "lrrrrr"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")  # partition keys hold a '|'


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%H:%M:%S")


def _row(label: str, st: Summary) -> str:
    return row([label, *st.cells()])


def profile(stats: RunStats) -> str:
    """Where a live run spends its time, in words, from the measured stages and steps."""
    steps = sorted(stats.steps.items(), key=lambda kv: -kv[1].p50)
    top = ", ".join(f"`{k}` {seconds(v.p50)} s" for k, v in steps[:2])
    rest = sum(v.p50 for _, v in steps[2:])
    return (
        f"Profile (p50): a run executes in {seconds(stats.execute.p50)} s; the two largest steps are "
        f"{top}, the other {len(steps) - 2} steps together {seconds(rest)} s. The data work is small (one "
        "minute of trades plus the overlap; bronze, candles and features re-derive one day); the large "
        "steps are the first ones to import a heavy library in the fresh run process: Great Expectations "
        "for the bronze suite (about 4 s on an idle core; the candles suite after it is fast) and "
        "MLflow/LightGBM plus the model load for the predictions (about 5 s). Before that, "
        f"{seconds(stats.launch.p50)} s pass between the sensor creating a run and its worker starting: "
        "the queue daemon launches runs one after another through the code server, and each worker is "
        "a new process that loads the code location. This fixed cost is paid per run: three times a "
        "minute with 3 instruments sharing 2 cores (the in-process executor is already in use). The "
        "largest remaining levers: import GX / MLflow once per process instead of per run (a run "
        "launcher with warm workers does not exist in OSS Dagster; serving a native LightGBM file "
        "avoids MLflow), one run per minute for all live instruments (a partition range: a third of the "
        "fixed cost, at the price of per-instrument isolation), `dequeue_use_threads` for the queue."
    )


def targets_met(r: Result) -> bool:
    """p50 and p95 of every measured delay within the targets, and nothing missing."""
    d = r.delays
    return d.every.p50 <= DELAY_TARGETS["p50"] and d.every.p95 <= DELAY_TARGETS["p95"] and not d.missing


def _model(r: Result) -> str:
    p = r.prep
    if not r.allow_unqualified:
        return f"Model: `crypto_return_lgbm` v{p.model_version} ({p.model_alias}). " + (
            "It passed the promotion gate; no override was needed."
        )
    return f"Model: `crypto_return_lgbm` v{p.model_version} ({p.model_alias}). " + (
        "The promotion gate did not promote it (no skill on the synthetic market, as expected), so "
        "this run set **CRYPTO_ALLOW_UNQUALIFIED_MODEL=true explicitly**: the predictions come from "
        "the unqualified challenger (rows flagged `qualified = false`, runs tagged "
        "`crypto/unqualified_model=allowed`). Without the variable only a champion is served."
    )


def _result(r: Result) -> list[str]:
    d, o = r.delays, r.options
    tape_ok = bool(r.tape) and all(t.diff.ok for t in r.tape)
    missing_txt = ", ".join(f"{sym} {_iso(c)}" for sym, c in d.missing[:10])
    return [
        "## Result",
        "",
        f"Targets: p50 <= {DELAY_TARGETS['p50']:g} s and p95 <= {DELAY_TARGETS['p95']:g} s over every "
        f"measured (instrument, minute), restart included, none missing: "
        f"**{'met' if targets_met(r) else 'MISSED'}**. "
        f"No loss, no duplicates after a restart: **{'verified' if tape_ok else 'FAILED'}**.",
        "",
        "| delay (s) from the minute's close to its prediction row readable | n | p50 | p95 | max | mean |",
        "|---|---:|---:|---:|---:|---:|",
        _row("every (instrument, minute), restart included", d.every),
        _row("steady state (minutes not affected by the restart)", d.steady),
        _row("per minute: all instruments readable (max over instruments)", d.per_minute),
        "",
        f"Missing (never readable within {o.grace:g} s after the window): {len(d.missing)}"
        + (f" ({missing_txt})." if d.missing else "."),
        "",
        _model(r),
    ]


def _runs_text(s: RunStats) -> str:
    return (
        f"Live runs: {s.runs} over {s.partitions} partitions "
        f"({', '.join(f'{k}: {v}' for k, v in sorted(s.statuses.items()))}); runs of the same "
        f"partition overlapping in time: {s.overlaps}; run keys requested twice: "
        f"{s.duplicate_keys}; runs left unfinished: {s.unfinished}. Failed runs are the "
        f"runs in flight when dagster dev was stopped: {sum(s.interrupted)} "
        f"({' + '.join(str(n) for n in s.interrupted)} at the mid-run restart + the final stop)."
    )


def _time(s: RunStats) -> list[str]:
    stages = [
        (
            "minute close -> run created by the sensor (15 s tick; waits while the previous run runs)",
            s.detect,
        ),
        ("run created -> run worker started (queue daemon, gRPC launch, process start, code load)", s.launch),
        ("run worker started -> run finished (8 steps incl. scipy/MLflow imports, model load)", s.execute),
    ]
    header = ["step", "n", "p50 s", "p95 s", "max s", "mean s"]
    return [
        "### Where the time goes (live runs, from the Dagster instance)",
        "",
        table(["stage", *header[1:]], [[label, *st.cells()] for label, st in stages], SUMMARY_ALIGN),
        "",
        _runs_text(s),
        "",
        "Steps of the successful live runs (in-process executor; each run is a new process):",
        "",
        table(header, [[f"`{k}`", *v.cells()] for k, v in s.steps.items()], SUMMARY_ALIGN),
        "",
        profile(s),
    ]


def _restart(r: Result) -> list[str]:
    rs, s = r.restart, r.stats
    if not rs:
        return []
    back, lo, hi = rs.back, *r.delays.affected
    came_back = (
        f" ({back - rs.up:.0f} s after the start command: code location load, daemon start, first sensor "
        "tick, run)."
        if back
        else "."
    )
    in_flight = s.interrupted[0]
    return [
        f"- Stopped at {_iso(rs.down)} UTC with SIGTERM to its process group (all processes "
        f"gone after {rs.stop_s:.1f} s), down {r.options.downtime:g} s, started again at "
        f"{_iso(rs.up)}; the first new prediction row was readable at "
        f"{_iso(back) if back else 'never'}" + came_back,
        f"- Runs in flight at the stop: {in_flight or 'none'}"
        + (" (their run workers marked them FAILURE: execution was interrupted)" if in_flight else "")
        + f"; runs left in an unfinished state after the bench: {s.unfinished}"
        + (
            ", so no partition was blocked by a dead run. "
            if not s.unfinished
            else " (the sensor ignores them after CRYPTO_LIVE_STALE_RUN_MINUTES). "
        )
        + "The sensor resumed from its cursor with one catch-up run per partition.",
        f"- Minutes closing in [{_iso(lo)}, {_iso(hi)}] count as affected by the "
        "restart (the 'steady state' row leaves them out).",
    ]


def tape_row(t: TapeCheck) -> list[str]:
    """One row of the bronze-vs-tape table."""
    d = t.diff
    return [
        _cell(t.partition),
        f"{t.covered_from:%H:%M:%S} .. {t.covered_to:%H:%M:%S}",
        *(str(t.batches), f"{t.raw_rows:,}", f"{d.bronze:,}", f"{d.tape:,}"),
        *(str(x) for x in (d.missing, d.extra, d.duplicates, d.differ)),
        "yes" if d.ok else "**NO**",
    ]


def _tape(r: Result) -> list[str]:
    header = ["partition", "covered (UTC)", "raw batches", "raw rows", "bronze", "tape", "missing", "extra"]
    header += ["duplicates", "differing", "ok"]
    return [
        "### No loss, no duplicates: bronze vs the simulator's deterministic tape",
        "",
        "For every live partition, the bronze trades equal the synthetic exchange's tape over the "
        "partition's covered span `[covered_from, covered_to)` from the raw manifest (joined on trade id; "
        "timestamps, prices, amounts and sides compared). Raw holds more rows than bronze because every "
        "fetch re-reads 2 minutes before the watermark (late trades); bronze de-duplicates them.",
        "",
        table(header, [tape_row(t) for t in r.tape], "ll" + "r" * 8 + "l"),
        "",
        f"First-seen prediction rows whose `close` equals the final close of their minute on the tape: "
        f"{r.closes_equal} / {r.closes_checked} (the open day is fetched up to the last whole "
        "minute, so no prediction is made on a partial bar).",
    ]


def _method(r: Result) -> list[str]:
    o, p = r.options, r.prep
    return [
        "## Method",
        "",
        "- Temp root, nothing under `data/` touched: `DAGSTER_HOME` with the repo's `dagster.yaml` "
        "(SQLite storage, QueuedRunCoordinator with at most 4 concurrent runs, telemetry off; only its "
        "storage folders moved into the temp root), lake, DuckDB warehouse file and MLflow store.",
        f"- Before going live: yesterday's partitions `{p.history}` (raw .. silver, features, "
        f"labels; {p.t_hist:.0f} s) and training set + model ({o.trials} Optuna trials; "
        f"{p.t_model:.0f} s), with `dagster asset materialize`.",
        "- `dagster dev` (webserver, daemon, code server) on the code location plus the live sensors "
        "(`live_sensor`, 15 s interval; `live_freshness_sensor`), started RUNNING through "
        "`CRYPTO_LIVE_SENSOR=running`, in its own process group. The embedded universe: 3 synthetic "
        "instruments, ~60 trades/min each, live (the simulator's trades exist up to the wall clock). "
        "One run per instrument partition and minute: raw -> bronze -> silver (1m, 5m, 1h) -> "
        "gold/features -> gold/predictions, in-process executor.",
        "- The bench queries the warehouse view `gold.predictions` once per second through a read-only "
        "DuckDB connection (a user's path). Delay = wall time a row (instrument, minute) was first "
        "returned - (minute start + 60 s); the poll period bounds the error to +1 s. Measured: the "
        f"minutes closing in the {o.minutes:g} minutes after the first prediction was readable "
        f"({_iso(r.warm)} .. {_iso(r.stop_at)} UTC; warm-up {r.warm - r.t_dev:.0f} s after dagster dev "
        "started).",
        f"- At {o.restart_at:.0%} of the window dagster dev is stopped (SIGTERM to the process "
        f"group) and started again after {o.downtime:g} s.",
    ]


def render(r: Result) -> str:
    """The markdown report FRESHNESS.md."""
    m = r.machine
    cmd = command("bench.freshness", [("--minutes", f"{r.options.minutes:g}")])
    began = datetime.fromtimestamp(r.began, UTC)
    lines = [
        "# Live freshness: minute close -> prediction readable in DuckDB",
        "",
        f"Generated by `{cmd}` on {minute(began)} UTC ({(r.t_end - r.began) / 60:.1f} min in total).",
        "",
        *_result(r),
        "",
        *_time(r.stats),
        "",
        "### Restart of dagster dev mid-run",
        "",
        *_restart(r),
        "",
        *_tape(r),
        "",
        *_method(r),
        "",
        "## Machine",
        "",
        f"{m.processor}, nproc {m.nproc}, {m.os}, Python {m.python}; load average (1/5/15 min) before / "
        f"after: {loads(r.load_before)} / {loads(r.load_after)}.",
        "",
    ]
    return "\n".join(lines)
