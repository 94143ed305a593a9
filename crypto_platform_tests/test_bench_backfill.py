"""bench.backfill: the /proc sampler on a real process tree, the report on a hand-made Result, and the
whole measurement (daemon backfills, model, predictions, checks) on 2 days x 2 instruments (slow)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import replace
from datetime import UTC, date, datetime

import pytest

from bench.backfill import render
from bench.backfill.checks import Coverage, RowCheck, RunFigures
from bench.backfill.measurement import Options, Phase, Result, Setting
from bench.backfill.procs import RUN_WORKER_MARK, Proc, Sampler, read_proc, run_workers, tree
from bench.freshness.checks import TapeCheck, TapeDiff
from bench.report import Machine, Summary
from crypto_platform_tests.paths import PROJECT_DIR

MIB = 1024**2

# A parent that spins for CPU and starts a child holding ~80 MiB, named like a run worker (the mark is
# joined at run time, so that only the child's command line holds it).
TREE = f"""
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c",
    "import time; b = bytearray(80 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096]); time.sleep(3)",
    "{RUN_WORKER_MARK[:4]}" + "{RUN_WORKER_MARK[4:]}"])
t = time.process_time()
while time.process_time() - t < 0.6:
    pass
child.wait()
"""


def test_the_sampler_sees_a_run_workers_peak_rss_the_trees_sum_and_cpu() -> None:
    with Sampler(interval=0.1) as sampler:
        proc = subprocess.Popen([sys.executable, "-c", TREE], start_new_session=True)
        sampler.watch(proc.pid)
        proc.wait(timeout=60)
        time.sleep(0.2)
    seen = sampler.take()
    assert seen.max_workers == 1 and RUN_WORKER_MARK in seen.peak_worker_cmd
    assert 80 * MIB <= seen.peak_worker_rss <= 200 * MIB  # the child's bytearray, touched page by page
    assert seen.peak_tree_rss > seen.peak_worker_rss  # the parent interpreter too
    assert seen.cpu_seconds() >= 0.5  # the parent's spin (own CPU, sampled before it exited)
    assert sampler.take().peak_worker_rss == 0  # `take` starts the peaks again


def test_a_process_is_read_from_proc_and_trees_are_by_session() -> None:
    me = read_proc(subprocess.os.getpid())
    assert me is not None and me.rss > 10 * MIB and me.cpu > 0 and "python" in me.cmdline
    assert read_proc(2**22 + 12345) is None  # no such pid
    assert me.pid in {p.pid for p in tree({me.session})}
    # a child in a session of its own (a detached run worker of the daemon) belongs to the tree too
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], start_new_session=True)
    try:
        _wait_for_session(child.pid)
        seen = {p.pid: p for p in tree({me.session})}
        assert child.pid in seen and seen[child.pid].session == child.pid != me.session
        assert child.pid not in {p.pid for p in tree({2**22 + 1})}  # nothing of an unwatched session
    finally:
        child.kill()
        child.wait()


def _wait_for_session(pid: int) -> None:
    """Until `pid` runs in its own session (setsid happens after fork, before exec)."""
    deadline = time.monotonic() + 10
    while (p := read_proc(pid)) is None or p.session != pid:
        assert time.monotonic() < deadline, f"process {pid} never got its own session"
        time.sleep(0.05)


def test_run_processes_are_execute_run_commands_or_spawned_children_of_a_code_server() -> None:
    py = "/venv/bin/python"
    spawn = f"{py} -B -c from multiprocessing.spawn import spawn_main; spawn_main(tracker_fd=12)"
    procs = [
        Proc(10, 1, 10, 0, 0.0, f"{py} /venv/bin/dagster-daemon run -w workspace.yaml"),
        Proc(11, 10, 10, 0, 0.0, f"{py} -m dagster api grpc --lazy-load-user-code"),
        Proc(12, 11, 10, 0, 0.0, spawn),  # a run of the code server
        Proc(13, 11, 10, 0, 0.0, f"{py} -B -c from multiprocessing.resource_tracker import main;main(11)"),
        Proc(14, 10, 10, 0, 0.0, spawn),  # spawned by the daemon, not by a code server
        Proc(15, 10, 10, 0, 0.0, f"{py} -m dagster api execute_run {{...}}"),
    ]
    assert [p.pid for p in run_workers(procs)] == [12, 15]


def _phase(name: str, runs: RunFigures | None, cov: Coverage | None) -> Phase:
    return Phase(
        name, 120.0, 80.0, 900 * MIB, 400 * MIB, 450 * MIB, 2, 3.5, 6.0, "COMPLETED_SUCCESS", runs, cov
    )


def test_the_report_shows_both_settings_side_by_side_with_ratios_and_flags_a_gap() -> None:
    steps = {"bronze__trades_bronze_trades_suite": 90.0, "raw__trades": 30.0}
    runs = RunFigures(2, 2, 0, 0, Summary.of([50.0, 70.0]), Summary.of([2.0, 2.0]), steps)
    full = Coverage(4, {"bronze/trades": 4, "raw/trades": 4})
    gap = Coverage(4, {"bronze/trades": 3, "raw/trades": 4})
    t0 = datetime(2026, 11, 29, tzinfo=UTC)
    same, lost = TapeDiff(500, 500, 0, 0, 0, 0), TapeDiff(490, 500, 10, 0, 0, 0)
    tape = [TapeCheck(f"p{k}", t0, t0, 1, 500, d) for k, d in enumerate((same, same, lost))]
    rows = RowCheck(4, 1000, 990, 10, [], 5760, tape)
    settings = [
        Setting(
            n,
            [_phase("raw -> features, labels", runs, cov), _phase("predictions", runs, full)],
            w,
            200.0,
            rows,
            "champion",
            "1",
        )
        for n, cov, w in ((1, full, 300.0), (2, gap, 150.0))
    ]
    result = Result(
        Options(days=2, instruments=2, per_run=(1, 2)),
        ["sim.BTC-USDT", "sim.ETH-USDT"],
        [60.0, 40.0],
        [date(2026, 11, 29), date(2026, 11, 30)],
        settings,
        datetime(2026, 12, 1, 20, 0, tzinfo=UTC),
        datetime(2026, 12, 1, 20, 9, tzinfo=UTC),
        Machine("cpu", "x86_64", 2, 24.0, "Linux", "3.11"),
        (1.0, 2.0, 3.0),
        (4.0, 5.0, 6.0),
    )
    md = render(result)
    assert "| total wall time (s) | 300 | 150 | 0.50 |" in md
    assert "| bronze/trades | 3 / 4 | **no** |" in md and "| bronze/trades | 4 / 4 | yes |" in md
    assert "sim.BTC-USDT 60, sim.ETH-USDT 40" in md and "1.00 2.00 3.00" in md
    assert "| peak RSS of one run worker (MiB) | 400 | 400 | 1.00 |" in md
    assert "| partitions per run p50 / max | 2 / 2 | 2 / 2 |  |" in md
    assert "| bronze = simulator tape (sampled partitions) | 2 of 3 | 2 of 3 |  |" in md
    assert "`bronze__trades_bronze_trades_suite` 90 s (75%), `raw__trades` 30 s (25%)" in md
    assert "backfill daemon every" not in md  # Dagster's own interval: nothing to say
    fast = replace(result, options=replace(result.options, backfill_interval_s=2.0))
    assert "--tape-sample 20` with the backfill daemon every 2 s (Dagster's: 30 s) —" in render(fast)
    once = replace(fast, options=replace(fast.options, workspace_reload_s=3600.0))
    assert (
        "every 2 s (Dagster's: 30 s) and the workspace reloaded every 3600 s (Dagster's: 60 s) —"
        in render(once)
    )


# In a fresh process: the instruments file is read once per process (as in production), and the bench's
# own universe must be the one its checks read. The real dagster-daemon, with a backfill iteration every
# 2 s and one code server for the whole test (Dagster reloads the workspace every 60 s, each time in a
# new code server process: seconds of CPU that prove nothing here).
SCRIPT = """
import json, sys
from bench.backfill.measurement import Options, measure
opts = Options(days=2, instruments=2, per_run=(2,), rates=(20.0, 5.0), train_days=1, trials=1, tape_sample=0,
               backfill_interval_s=2.0, workspace_reload_s=3600.0)
(s,) = measure(opts).settings
fill, train, preds = s.phases
print(json.dumps({
    "status": [fill.status, preds.status],
    "runs": [[p.runs.launched, p.runs.failed, p.runs.partitions_per_run.max] for p in (fill, preds)],
    "coverage": [p.coverage.by_asset for p in (fill, preds)],
    "expected": fill.coverage.expected,
    "rows_ok": s.rows.ok, "tape": [t.diff.bronze for t in s.rows.tape], "bronze": s.rows.bronze_rows,
    "mismatched": s.rows.mismatched, "predictions": s.rows.predictions_rows,
    "rss": [fill.peak_worker_rss, fill.peak_tree_rss], "train_runs": train.runs is None, "cpu": s.total_cpu_s,
}))
"""


@pytest.mark.slow
def test_a_tiny_backfill_is_measured_end_to_end_by_the_daemon() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=PROJECT_DIR, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["status"] == ["COMPLETED_SUCCESS", "COMPLETED_SUCCESS"], got
    assert got["runs"] == [[2, 0, 2], [2, 0, 2]]  # 4 partitions, at most 2 per run, none failed
    assert got["expected"] == 4 and "gold/features" in got["coverage"][0]
    assert all(n == 4 for cov in got["coverage"] for n in cov.values())  # every partition of every asset
    assert got["coverage"][1] == {"gold/predictions": 4}
    assert got["rows_ok"] and not got["mismatched"] and len(got["tape"]) == 4  # all 4 against the tape
    assert got["bronze"] == sum(got["tape"]) > 0  # every bronze trade is on the simulator's tape
    assert 0 < got["predictions"] <= 4 * 1440
    assert 0 < got["rss"][0] < got["rss"][1] and got["train_runs"] and got["cpu"] > 0
