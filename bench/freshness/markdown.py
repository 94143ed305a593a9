"""render(): bench/FRESHNESS.md from a freshness Result (delays, where the time goes, restart, tape)."""

from __future__ import annotations

from datetime import UTC, datetime

from bench.freshness import timeline
from bench.freshness.checks import RunStats, TapeCheck
from bench.freshness.harness import fast_count
from bench.freshness.measurement import Result
from bench.report import Summary, command, loads, minute, row, seconds, table

DELAY_TARGETS = {"p50": 30.0, "p95": 60.0}  # issue 12, at 30 instruments
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
        f"{top}, the other {max(len(steps) - 2, 0)} steps together {seconds(rest)} s. Before that, "
        f"{seconds(stats.launch.p50)} s pass between the sensor creating a run and its worker starting "
        "(queue daemon, launch through the code server, a new process that loads the code location)."
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
            f"minute close -> run created by the sensor ({_live_setup()[0]} s tick; waits while the "
            "previous run runs)",
            s.detect,
        ),
        ("run created -> run worker started (queue daemon, gRPC launch, process start, code load)", s.launch),
        ("run worker started -> run finished (the steps, incl. the served model's load)", s.execute),
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
    fates = [t.status for t in r.timeline.in_flight] if r.timeline else []
    survived = sum(1 for f in fates if f == "SUCCESS")
    return [
        f"- Stopped at {_iso(rs.down)} UTC with SIGTERM to its process group (all processes "
        f"gone after {rs.stop_s:.1f} s), down {r.options.downtime:g} s, started again at "
        f"{_iso(rs.up)}; the first new prediction row was readable at "
        f"{_iso(back) if back else 'never'}" + came_back,
        f"- Runs in flight at the stop: {in_flight or 'none'}"
        + (" (their run workers marked them FAILURE: execution was interrupted)" if in_flight else "")
        + (
            f"; executing at the stop and finished SUCCESS after it (detached run workers): {survived}"
            if survived
            else ""
        )
        + f"; runs left in an unfinished state after the bench: {s.unfinished}"
        + (
            ", so no partition was blocked by a dead run. "
            if not s.unfinished
            else " (the sensor ignores them after CRYPTO_LIVE_STALE_RUN_MINUTES). "
        )
        + "The sensor resumed from its cursor with one catch-up run per partition.",
        f"- Minutes closing in [{_iso(lo)}, {_iso(hi)}] count as affected by the "
        "restart (the 'steady state' row leaves them out).",
        *_timeline(r),
    ]


def _timeline(r: Result) -> list[str]:
    """The restart's timeline (dagster dev's log, the sensor's ticks, the runs' events, the poll)."""
    if r.timeline is None:
        return []
    return [
        "",
        "Timeline of the restart (dagster dev's log lines, whole seconds; the live sensor's ticks and the "
        "live runs' events from the instance; the bench's poll):",
        "",
        *timeline.render(r.timeline),
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


def _universe(r: Result) -> str:
    o, n = r.options, len(r.prep.instruments)
    if not o.instruments:
        return f"The embedded universe: {n} synthetic instruments, ~60 trades/min each"
    fast = fast_count(n)
    return (
        f"{n} synthetic instruments on one exchange (`sim`): {fast} at {o.fast_rate:g} trades/min, "
        f"{n - fast} at {o.base_rate:g} trades/min (daily means; busiest 13-16 UTC)"
    )


def _usage(r: Result) -> list[str]:
    u = r.usage
    if u is None or not u.load:
        return []
    n = len(r.prep.instruments)
    per_min = u.cpu_per_minute()
    return [
        f"CPU used by dagster dev (webserver, daemon, code server and the run workers it reaped) over "
        f"the measured minutes before the restart: **{seconds(per_min)} CPU s per minute** (one tick a "
        f"minute per exchange), {per_min / n:.2f} CPU s per instrument-minute; the machine has "
        f"{r.machine.nproc} cores (= {60 * r.machine.nproc} CPU s per minute), shared with other work: "
        f"1-minute load average while measuring min {min(u.load):.1f} / mean "
        f"{sum(u.load) / len(u.load):.1f} / max {max(u.load):.1f}.",
    ]


def _live_setup() -> tuple[int, str]:
    """(sensor interval s, the run shape) as this process's settings and the repo's dagster.yaml say."""
    import yaml

    from bench.freshness.harness import PROJECT
    from crypto_platform.platform_settings import PlatformSettings

    settings = PlatformSettings.from_env()
    queue = yaml.safe_load((PROJECT / "dagster.yaml").read_text())["run_coordinator"]["config"]
    dequeue = queue.get("dequeue_interval_seconds", 5)
    shards = settings.live_shards
    shape = (
        "One run per exchange and tick over its due partitions"
        if shards == 1
        else f"Up to {shards} runs per exchange and tick over its due partitions "
        f"(CRYPTO_LIVE_SHARDS={shards})"
    )
    return settings.live_interval_seconds, f"{shape}, dequeued every {dequeue} s"


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
        f"(`live_sensor`, {_live_setup()[0]} s interval; `live_freshness_sensor`), started RUNNING through "
        f"`CRYPTO_LIVE_SENSOR=running`, in its own process group. {_universe(r)}, live (the "
        "simulator's trades exist up to the wall clock). "
        f"{_live_setup()[1]}: raw -> bronze -> silver (1m, 5m, 1h) -> gold/features -> gold/predictions, "
        "in-process executor; the quality gates run as the polars contract (GX on the hourly cadence).",
        "- The bench queries the warehouse view `gold.predictions` once per second through a read-only "
        "DuckDB connection (a user's path). Delay = wall time a row (instrument, minute) was first "
        "returned - (minute start + 60 s); the poll period bounds the error to +1 s. Measured: the "
        f"minutes closing in the {o.minutes:g} minutes after the first prediction was readable "
        f"({_iso(r.warm)} .. {_iso(r.stop_at)} UTC; warm-up {r.warm - r.t_dev:.0f} s after dagster dev "
        "started).",
        f"- At {o.restart_at:.0%} of the window dagster dev is stopped (SIGTERM to the process "
        f"group) and started again after {o.downtime:g} s.",
    ]


def render(r: Result, out: str = "") -> str:
    """The markdown report FRESHNESS.md (`out`: the report path the command names, if not the default)."""
    m = r.machine
    flags: list[tuple[str, object]] = [("--minutes", f"{r.options.minutes:g}")]
    flags += [("--instruments", r.options.instruments)] if r.options.instruments else []
    flags += [("--trials", r.options.trials)] if r.options.trials != 5 else []
    flags += [("--out", out)] if out else []
    cmd = command("bench.freshness", flags)
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
        *_usage(r),
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


# ------------------------------------------------------------------------------ several universes


def summary(r: Result) -> dict:
    """The figures of one measurement that the multi-universe summary table shows (JSON-able)."""
    d, u, n = r.delays, r.usage, len(r.prep.instruments)
    per_min = u.cpu_per_minute() if u else float("nan")
    load = u.load if u and u.load else [float("nan")]
    return {
        "instruments": n,
        "fast": fast_count(n) if r.options.instruments else 0,
        "fast_rate": r.options.fast_rate,
        "minutes": r.options.minutes,
        "every": [d.every.n, d.every.p50, d.every.p95, d.every.max],
        "steady": [d.steady.n, d.steady.p50, d.steady.p95, d.steady.max],
        "missing": len(d.missing),
        "tape_ok": bool(r.tape) and all(t.diff.ok for t in r.tape),
        "cpu_per_minute": per_min,
        "cpu_per_instrument_minute": per_min / n,
        "launch_p50": r.stats.launch.p50,
        "execute_p50": r.stats.execute.p50,
        "warm_up_s": r.warm - r.t_dev,
        "load": [min(load), sum(load) / len(load), max(load)],
        "began": r.began,
    }


def _summary_row(s: dict) -> list[str]:
    if s.get("failed"):
        return [str(s["instruments"]), *["failed"] * 11]
    n, p50, p95, mx = s["every"]
    return [
        str(s["instruments"]),
        f"{s['fast']} x {s['fast_rate']:g}",
        str(n),
        seconds(p50),
        seconds(p95),
        seconds(mx),
        str(s["missing"]),
        "yes" if s["tape_ok"] else "**NO**",
        seconds(s["cpu_per_minute"]),
        f"{s['cpu_per_instrument_minute']:.2f}",
        f"{seconds(s['launch_p50'])} / {seconds(s['execute_p50'])}",
        "{:.1f} / {:.1f} / {:.1f}".format(*s["load"]),
    ]


def demote(md: str) -> str:
    """One measurement's report as a section: its title dropped, every heading one level down."""
    body = md.split("\n", 1)[1] if md.startswith("# ") else md
    return "\n".join(("#" + x) if x.startswith("##") else x for x in body.splitlines()).strip()


def render_many(argv: list[str], done: list[tuple[dict, str]]) -> str:
    """FRESHNESS.md over several universes: the summary table, then each measurement's own report."""
    header = ["instruments", "fast (trades/min)", "n", "p50 s", "p95 s", "max s", "missing", "tape ok"]
    header += ["CPU s / min", "CPU s / instrument-min", "launch / execute p50 s", "load min/mean/max"]
    thirty = [s for s, _ in done if s.get("instruments") == 30 and not s.get("failed")]
    verdict = "not measured"
    if thirty:
        s = thirty[0]
        ok = (
            s["every"][1] <= DELAY_TARGETS["p50"]
            and s["every"][2] <= DELAY_TARGETS["p95"]
            and not s["missing"]
        )
        verdict = "**met**" if ok else "**MISSED**"
    lines = [
        "# Live freshness: minute close -> prediction readable in DuckDB, by number of instruments",
        "",
        f"Generated by `uv run --frozen python -m bench.freshness {' '.join(argv)}`; each row is one full "
        "measurement (its own temp root, history, model and `dagster dev`, stopped and restarted halfway), "
        "run one after the other on the shared 2-core machine.",
        "",
        f"Targets at 30 instruments (issue 12): p50 <= {DELAY_TARGETS['p50']:g} s, p95 <= "
        f"{DELAY_TARGETS['p95']:g} s, 0 missing, restart included: {verdict}.",
        "",
        table(header, [_summary_row(s) for s, _ in done], "lllrrrrlrrll"),
        "",
        "Delays over every measured (instrument, minute), restart included. CPU: dagster dev's process "
        "group with its reaped run workers, over the measured minutes before the restart. Load: the "
        "1-minute load average while measuring (other engineers' work shares the 2 cores).",
    ]
    for s, md in done:
        lines += ["", f"## {s['instruments']} instruments", "", demote(md)]
    return "\n".join(lines) + "\n"
