"""bench/report.py: the shared markdown tables, percentiles and the atomic report write."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from bench.report import Summary, command, pct, quantile, ratio, table, write_report


def test_quantile_matches_numpy_linear_percentile() -> None:
    xs = list(np.random.default_rng(3).exponential(30.0, 101))
    for q in (0.0, 0.25, 0.5, 0.95, 1.0):
        assert quantile(xs, q) == pytest.approx(float(np.percentile(xs, 100 * q, method="linear")), rel=1e-12)
    assert quantile([4.0, 1.0], 0.5) == 2.5  # unsorted input, interpolated
    assert math.isnan(quantile([], 0.5))


def test_summary_of_delays() -> None:
    s = Summary.of([10.0, 20.0, 30.0, 40.0])
    assert (s.n, s.p50, s.max, s.mean) == (4, 25.0, 40.0, 25.0)
    assert s.p95 == pytest.approx(38.5)
    assert s.cells() == ["4", "25.0", "38.5", "40.0", "25.0"]
    empty = Summary.of([])
    assert empty.n == 0 and empty.cells() == ["0", "n/a", "n/a", "n/a", "n/a"]


def test_table_alignment_and_cells() -> None:
    md = table(["a", "b", "c"], [[1, "x", 2.5], ["", "y", "z"]], align="lrr")
    assert md.splitlines() == ["| a | b | c |", "|---|---:|---:|", "| 1 | x | 2.5 |", "|  | y | z |"]
    assert table(["a", "b"], []).splitlines() == ["| a | b |", "|---|---|"]


def test_formats() -> None:
    assert pct(0.0625) == "6%" and pct(1.0) == "100%" and pct(float("nan")) == "n/a"
    assert ratio(6.0, 2.0) == 3.0 and math.isnan(ratio(1.0, None))
    assert (
        command("bench.x", [("--n", 3), ("--days", 2)]) == "uv run --frozen python -m bench.x --n 3 --days 2"
    )
    assert command("bench.y", runner="./run") == "./run python -m bench.y"


def test_write_report_replaces_the_file_whole(tmp_path: Path) -> None:
    out = tmp_path / "R.md"
    out.write_text("old")
    write_report(out, "# new\n")
    assert out.read_text() == "# new\n"
    assert [p.name for p in tmp_path.iterdir()] == ["R.md"]  # no temp file left behind
