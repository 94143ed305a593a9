"""bench.gc_threshold: the report on a hand-made Result, and one tiny run per setting in fresh processes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bench.gc_threshold import Options, Probe, Result, measure, render
from bench.report import Machine


def _probe(threshold: int, cpu: float, gc_s: float, full: int) -> Probe:
    return Probe(threshold, cpu, cpu + 2.0, (0.1, 0.1, gc_s - 0.2), (900, 90, full), 700.0)


def test_the_report_sets_the_medians_side_by_side_with_their_ratio() -> None:
    probes = [_probe(700, 20.0, 2.2, 11), _probe(10_000, 18.0, 0.7, 3)]
    probes += [_probe(700, 22.0, 2.6, 11), _probe(10_000, 19.0, 0.9, 3)]
    probes += [_probe(700, 21.0, 2.4, 12), _probe(10_000, 30.0, 0.8, 4)]  # a slow moment: the median
    r = Result(
        Options(repeats=3),
        datetime(2026, 12, 2, 9, 0, tzinfo=UTC),
        probes,
        (1.0, 1.0, 1.0),
        (2.0, 2.0, 2.0),
        Machine("cpu", "x86_64", 2, 24.0, "Linux", "3.11.7"),
    )
    md = render(r).splitlines()
    assert "| median per process | 700 (CPython) | 10,000 | 10,000 / 700 |" in md
    assert "| process CPU (s) | 21.0 | 19.0 | 0.90 |" in md
    assert "| collector, all generations (CPU s) | 2.40 | 0.80 | 0.33 |" in md
    assert "| full collections (count) | 11 | 3 | 0.27 |" in md
    assert "| 6 | 10,000 | 30.0 | 32.0 | 0.80 | 4 | 700 |" in md  # every process, in the order it ran
    assert any("took 2.40 of 21.0 CPU seconds (11%)" in line for line in md)
    assert "--repeats 3 --thresholds 700,10000" in md[2]


@pytest.mark.slow
def test_a_tiny_run_per_setting_applies_each_threshold_and_counts_the_collections() -> None:
    r = measure(Options(repeats=1, thresholds=(700, 10_000), trades_per_minute=2, selection="key:raw/trades"))
    assert [p.threshold for p in r.probes] == [700, 10_000]  # as the code location applied them
    slow, tuned = r.of(700)[0], r.of(10_000)[0]
    assert all(p.cpu > 0 and p.wall > 0 and p.rss_mib > 100 for p in r.probes)
    # the same run: with CPython's threshold the young generation is collected more often (the imports
    # before the code location loads collect at 700 in both)
    assert slow.collections[0] > tuned.collections[0] > 0
    assert slow.collections[2] >= tuned.collections[2]
