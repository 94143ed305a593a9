"""bench.freshness: its pure pieces (tape comparison, minute closes, delays, run statistics) and its report.

The live measurement itself (dagster dev for ~15 minutes) is not run here; everything it computes from
what it observed is.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
import duckdb
import polars as pl
import pytest

from bench.freshness import render, timeline
from bench.freshness.checks import (
    RunStats,
    TapeCheck,
    TapeDiff,
    _step_durations,
    compare_tape,
    final_closes,
    summarize_runs,
    verify_tape,
)
from bench.freshness.harness import Prepared, write_workspace
from bench.freshness.measurement import Delays, Options, Restart, Result, assess, window
from bench.report import Machine, Summary
from crypto_platform.settings import Instrument
from crypto_platform.sources.synthetic import SyntheticSource
from crypto_platform.transforms.trades import to_bronze

SIM = Instrument("sim", "BTC/USDT", "synthetic")
T0 = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)
BASE = 1_800_000_000  # a minute boundary (epoch s)


def _sim_tape(minutes: int = 5) -> pl.DataFrame:
    source = SyntheticSource(seed=7, now=lambda: T0 + timedelta(hours=1))
    return source.fetch(SIM, T0, T0 + timedelta(minutes=minutes)).trades


def test_bronze_of_the_tape_equals_the_tape() -> None:
    tape = _sim_tape()
    bronze = to_bronze(tape, T0.replace(hour=0), T0.replace(hour=0) + timedelta(days=1)).bronze
    diff = compare_tape(bronze, tape)
    assert diff == TapeDiff(tape.height, tape.height, 0, 0, 0, 0) and diff.ok
    assert tape.height > 50


def test_tape_comparison_counts_each_kind_of_fault() -> None:
    tape = _sim_tape()
    bronze = to_bronze(tape, T0.replace(hour=0), T0.replace(hour=0) + timedelta(days=1)).bronze
    ids = bronze["trade_id"].to_list()
    lost, doubled, changed = ids[3], ids[10], ids[20]
    faulty = pl.concat(
        [
            bronze.filter(pl.col("trade_id") != lost).with_columns(
                pl.when(pl.col("trade_id") == changed)
                .then(pl.col("price") + 1.0)
                .otherwise("price")
                .alias("price")
            ),
            bronze.filter(pl.col("trade_id") == doubled),
            bronze.head(1).with_columns(pl.lit("not-on-the-tape").alias("trade_id")),
        ]
    )
    diff = compare_tape(faulty, tape)
    assert (diff.missing, diff.extra, diff.duplicates, diff.differ) == (1, 1, 1, 1)
    assert (diff.bronze, diff.tape) == (tape.height + 1, tape.height) and not diff.ok


def test_final_closes_are_the_last_trade_of_each_minute() -> None:
    tape = _sim_tape()
    got = final_closes(tape, "BTC/USDT")
    con = duckdb.connect()
    con.register("tape_rows", tape.with_row_index("i").select("i", "timestamp_ms", "price").to_arrow())
    want = con.execute(
        "select (timestamp_ms // 60000 + 1) * 60, price from ("
        " select *, row_number() over (partition by timestamp_ms // 60000 order by timestamp_ms desc, i desc)"
        " as rn"
        "  from tape_rows) where rn = 1"
    ).fetchall()
    assert got == {("BTC/USDT", close): price for close, price in want}
    assert len(got) == 5


def test_window_holds_the_minutes_closing_after_warm_up() -> None:
    assert window(BASE + 10, BASE + 190) == [BASE + 60, BASE + 120, BASE + 180]
    assert window(BASE + 60, BASE + 120) == [BASE + 120]  # (warm, stop_at]


def test_delays_steady_state_leaves_the_restart_out() -> None:
    def seen_at(minute_close: int, delay: float) -> tuple[float, float]:
        return (minute_close + delay, 100.0)

    closes = [BASE + 60, BASE + 120, BASE + 180, BASE + 240]
    seen = {
        ("A", (BASE + 0) * 1000): seen_at(BASE + 60, 30.0),
        ("B", (BASE + 0) * 1000): seen_at(BASE + 60, 40.0),
        ("A", (BASE + 60) * 1000): seen_at(BASE + 120, 90.0),  # held up by the restart
        ("B", (BASE + 60) * 1000): seen_at(BASE + 120, 95.0),
        ("A", (BASE + 120) * 1000): seen_at(BASE + 180, 35.0),  # B's third minute never came
        ("A", (BASE + 180) * 1000): seen_at(BASE + 240, 20.0),
        ("B", (BASE + 180) * 1000): seen_at(BASE + 240, 25.0),
    }
    restart = Restart(in_flight=1, down=BASE + 100.0, stop_s=2.0, start_at=BASE + 120.0, up=BASE + 121.0)
    d = assess(seen, closes, restart)
    assert restart.back == BASE + 210.0  # the first row seen after the start: (A, 2nd minute) at 120 + 90
    assert d.affected == (BASE + 40.0, BASE + 210.0)
    assert d.missing == [("B", BASE + 180)]
    assert sorted(r["delay"] for r in d.rows) == [20.0, 25.0, 30.0, 35.0, 40.0, 90.0, 95.0]
    assert (d.every.n, d.every.max, d.every.p50) == (7, 95.0, 35.0)
    assert (d.steady.n, d.steady.max) == (2, 25.0)  # only the minute closing after 210 is unaffected
    assert (d.per_minute.n, d.per_minute.max, d.per_minute.p50) == (3, 95.0, 40.0)  # 40, 95, 25


def _t(hms: str) -> float:
    return datetime.fromisoformat(f"2026-11-23T{hms}+00:00").timestamp()


def _s(n, p50, p95, mx, mean):
    return Summary(n, p50, p95, mx, mean)


STEPS: dict[str, Summary] = {
    "raw__trades": _s(39, 0.1, 0.2, 0.2, 0.1),
    "bronze_trades": _s(39, 0.2, 0.3, 0.4, 0.2),
    "bronze__trades_bronze_trades_suite": _s(39, 7.1, 13.5, 14.5, 7.5),
    "silver__candles_1m": _s(39, 0.2, 0.2, 0.2, 0.1),
    "silver__candles_1m_candles_1m_suite": _s(39, 0.8, 0.9, 1.6, 0.8),
    "gold__features": _s(39, 0.3, 0.4, 0.5, 0.3),
    "silver__candles_1h": _s(39, 0.1, 0.2, 0.2, 0.1),
    "silver__candles_5m": _s(39, 0.1, 0.1, 0.2, 0.1),
    "gold__predictions": _s(39, 4.1, 5.3, 9.0, 4.1),
}


def _tape(sym, batches, raw, n):
    return TapeCheck(
        f"2026-11-23|sim.{sym}",
        datetime(2026, 11, 23, tzinfo=UTC),
        datetime(2026, 11, 23, 15, 12, tzinfo=UTC),
        batches,
        raw,
        TapeDiff(n, n, 0, 0, 0, 0),
    )


def _result() -> Result:
    began = _t("14:58:10")
    return Result(
        options=Options(minutes=12, trials=5, restart_at=0.5, downtime=20, grace=240),
        began=began,
        t_dev=_t("14:59:24"),
        warm=_t("15:00:01"),
        stop_at=_t("15:12:01"),
        t_end=began + 13.9 * 60,
        prep=Prepared(
            ["sim.BTC-USDT", "sim.ETH-USDT", "sim.SOL-USDT"],
            "2026-11-22|sim.BTC-USDT...2026-11-22|sim.SOL-USDT",
            "1",
            "challenger",
            19.0,
            14.0,
        ),
        allow_unqualified=True,
        delays=Delays(
            rows=[],
            missing=[],
            affected=(_t("15:05:24"), _t("15:07:44")),
            every=_s(36, 27.7, 54.7, 59.4, 23.3),
            steady=_s(30, 36.0, 45.9, 49.5, 36.7),
            per_minute=_s(12, 39.2, 76.4, 109.4, 46.3),
        ),
        restart=Restart(3, _t("15:06:24"), 2.2, _t("15:06:46"), up=_t("15:06:46"), back=_t("15:07:44")),
        tape=[
            _tape("BTC-USDT", 14, 60_052, 57_307),
            _tape("ETH-USDT", 13, 54_638, 52_145),
            _tape("SOL-USDT", 13, 49_199, 47_369),
        ],
        closes_checked=36,
        closes_equal=36,
        stats=RunStats(
            runs=42,
            statuses={"FAILURE": 3, "SUCCESS": 39},
            detect=_s(42, 9.8, 37.2, 38.6, 13.2),
            launch=_s(41, 13.9, 18.5, 27.5, 13.9),
            execute=_s(39, 13.0, 21.0, 25.7, 13.6),
            overlaps=0,
            duplicate_keys=0,
            unfinished=0,
            interrupted=[3, 0],
            partitions=3,
            steps=STEPS,
        ),
        load_before=(0.83, 1.16, 1.47),
        load_after=(1.40, 1.27, 1.43),
        machine=Machine(
            "Intel(R) Xeon(R) Processor",
            "x86_64",
            2,
            23.5,
            "Linux-6.18.44-fc-v769-x86_64-with-glibc2.36",
            "3.11.7",
        ),
    )


def test_render_reports_the_figures() -> None:
    lines = render(_result()).splitlines()
    assert lines[2] == (
        "Generated by `uv run --frozen python -m bench.freshness --minutes 12` on 2026-11-23 14:58 UTC "
        "(13.9 min in total)."
    )
    assert "| every (instrument, minute), restart included | 36 | 27.7 | 54.7 | 59.4 | 23.3 |" in lines
    assert "| steady state (minutes not affected by the restart) | 30 | 36.0 | 45.9 | 49.5 | 36.7 |" in lines
    assert "| `gold__predictions` | 39 | 4.1 | 5.3 | 9.0 | 4.1 |" in lines
    assert (
        "| 2026-11-23\\|sim.BTC-USDT | 00:00:00 .. 15:12:00 | 14 | 60,052 | 57,307 | 57,307 | 0 | 0 | 0 | 0 "
        "| yes |" in lines
    )
    assert any(
        "none missing: **met**. No loss, no duplicates after a restart: **verified**." in x for x in lines
    )
    assert "- Runs in flight at the stop: 3 (their run workers marked them FAILURE" in "\n".join(lines)
    assert (
        "First-seen prediction rows whose `close` equals the final close of their minute on the tape: 36 / 36"
        in ("\n".join(lines))
    )
    assert lines[-1].startswith("x86_64, nproc 2, Linux-6.18.44")


def test_render_flags_a_loss_and_missed_targets() -> None:
    r = _result()
    bad = TapeCheck("2026-11-23|sim.BTC-USDT", T0, T0, 1, 10, TapeDiff(9, 10, 1, 0, 0, 0))
    slow = Summary(36, 70.0, 130.0, 140.0, 80.0)
    r = Result(**{**r.__dict__, "tape": [bad], "delays": Delays([], [], (0.0, 0.0), slow, slow, slow)})
    md = render(r)
    assert "none missing: **MISSED**. No loss, no duplicates after a restart: **FAILED**." in md
    assert "| 9 | 10 | 1 | 0 | 0 | 0 | **NO** |" in md


@pytest.mark.slow
def test_run_statistics_from_real_run_records() -> None:
    """summarize_runs on the records of two real (tiny) runs in an ephemeral instance."""

    @dg.asset
    def one() -> int:
        return 1

    tags = {"crypto/live": "true", "crypto/live_trigger": "new", "dagster/run_key": "live:x@2026-11-23T15:06"}
    with dg.DagsterInstance.ephemeral() as instance:
        for _ in range(2):
            assert dg.materialize([one], instance=instance, tags=tags).success
        records = list(
            instance.get_run_records(filters=dg.RunsFilter(tags={"crypto/live": "true"}), ascending=True)
        )
        steps = _step_durations(instance, records)
    stats = summarize_runs(records, [], steps)
    minute = datetime(2026, 11, 23, 15, 6, tzinfo=UTC).timestamp()
    created = [r.create_timestamp.timestamp() for r in records]
    assert (stats.runs, stats.statuses, stats.partitions) == (2, {"SUCCESS": 2}, 1)
    assert (stats.duplicate_keys, stats.overlaps, stats.unfinished, stats.interrupted) == (1, 0, 0, [])
    assert stats.detect.n == 2 and stats.detect.max == pytest.approx(max(created) - minute)
    assert stats.launch.n == 2 and stats.execute.n == 2
    assert list(stats.steps) == ["one"] and stats.steps["one"].n == 2


def test_tape_check_skips_partitions_without_a_committed_manifest(tmp_path) -> None:
    day = T0.date()
    assert verify_tape(tmp_path / "lake", ["sim.BTC-USDT"], [day]) == []


@pytest.mark.slow
def test_the_generated_code_location_has_the_live_sensors(tmp_path) -> None:
    """The workspace dagster dev loads: the platform plus live_sensor and the freshness sensor."""
    import importlib.util

    write_workspace(tmp_path)
    spec = importlib.util.spec_from_file_location("bench_live_location", tmp_path / "live_location.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    names = {s.name for s in module.defs.sensors or []}
    assert {"live_sensor", "live_freshness_sensor"} <= names


def test_generated_universe_has_a_fast_third_after_the_slow_history_instruments(tmp_path) -> None:
    import yaml

    from bench.freshness.harness import fast_count, write_universe

    for n in (3, 10, 30):
        items = yaml.safe_load(write_universe(tmp_path, n, 60, 1000).read_text())["instruments"]
        rates = [i["trades_per_minute"] for i in items]
        assert len(rates) == n and rates.count(1000) == fast_count(n) >= n / 3
        assert rates[:2] == [60, 60] and rates[-1] == 1000  # history (first, slow) .. fast ones last
        assert len({i["symbol"] for i in items}) == n


def test_report_over_several_universes_has_one_row_and_one_section_each() -> None:
    from bench.freshness.markdown import render_many, summary

    one = _result()
    md = render_many(["--minutes", "12", "--instruments", "30,3"], [(summary(one), render(one))] * 2)
    rows = [x for x in md.splitlines() if x.startswith("| 3 |")]
    assert (
        rows
        == [
            "| 3 | 0 x 1000 | 36 | 27.7 | 54.7 | 59.4 | 0 | yes | n/a | nan | 13.9 / 13.0 | nan / nan / nan |"
        ]
        * 2
    )
    assert md.count("\n## 3 instruments\n") == 2 and "\n### Result\n" in md and "not measured" in md


# ------------------------------------------------------------------------------ restart timeline

DEV_LOG = """
===== dagster dev started 2026-11-23T15:00:40.2+00:00 =====
\x1b[32m2026-11-23 15:00:39 +0000\x1b[0m - dagster - INFO - Launching Dagster services...
\x1b[32m2026-11-23 15:00:43 +0000\x1b[0m - dagster - INFO - Launching Dagster services...
2026-11-23 15:00:46 +0000 - dagster.code_server - INFO - Starting Dagster code server for file x in process 2
2026-11-23 15:00:49 +0000 - dagster.code_server - INFO - Started Dagster code server for file x on port 1
\x1b[32m2026-11-23 15:00:52 +0000\x1b[0m - dagster.daemon - INFO - Instance is configured with the
2026-11-23 15:00:53 +0000 - dagster.daemon.SensorDaemon - INFO - Checking for new runs for sensor: other
2026-11-23 15:00:55 +0000 - dagster.daemon.SensorDaemon - INFO - Checking for new runs for sensor: live_sensor
2026-11-23 15:00:56 +0000 - dagster-webserver - INFO - Serving dagster-webserver on http://127.0.0.1:1
"""


def test_restart_log_marks_are_the_first_lines_after_the_start() -> None:
    up = datetime(2026, 11, 23, 15, 0, 40, 200_000, tzinfo=UTC).timestamp()
    marks = {k: datetime.fromtimestamp(v, UTC).second for k, v in timeline.log_marks(DEV_LOG, up).items()}
    assert marks == {  # 15:00:39 is the previous start's line; colours are stripped
        "dagster dev: services launching (its imports done)": 43,
        "code server: process up (its imports done)": 46,
        "code server: code location loaded": 49,
        "daemon: started (workspace loaded)": 52,
        "sensor daemon: first sensor evaluated": 53,
        "sensor daemon: live_sensor evaluated": 55,
        "webserver: serving": 56,
    }


def test_restart_timeline_orders_every_observation() -> None:
    up = 1000.0
    in_flight = timeline.RunTrace(
        "a" * 36, "SUCCESS", 970.0, 975.0, 1001.0, [("raw", 976.0, 979.0), ("bronze", 979.0, 990.0)]
    )
    catch_up = timeline.RunTrace(
        "b" * 36, "SUCCESS", 1020.0, 1024.0, 1040.0, [("raw", 1025.0, 1030.0)], trigger="new"
    )
    t = timeline.Timeline(
        980.0,
        up,
        {"daemon: started (workspace loaded)": 1012.0},
        (1018.0, 1019.5, 1),
        [in_flight],
        catch_up,
        1041.0,
    )
    lines = timeline.render(t)
    assert lines[:2] == ["| s after start | UTC | event |", "|---:|---|---|"]
    events = [line.split(" | ", 2) for line in lines[2:]]
    assert [e[0] for e in events] == [
        "| -20.0",
        "| +0.0",
        "| +1.0",
        "| +12.0",
        "| +18.0",
        "| +19.5",
        "| +20.0",
        "| +24.0",
        "| +25.0",
        "| +30.0",
        "| +40.0",
        "| +41.0",
    ]
    assert (
        events[2][2] == "in-flight run aaaaaaaa ended SUCCESS (1 step(s) done before the stop, 1 after it) |"
    )
    assert events[5][2] == "live_sensor: first tick done, 1 run(s) requested |"
    assert events[9][2] == "catch-up run: step `raw` done (5.0 s) |"
