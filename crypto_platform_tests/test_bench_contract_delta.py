"""bench.contract_delta on a tiny day: both ways run the check's path, judge alike, and the report says so."""

from __future__ import annotations

from pathlib import Path

from bench.contract_delta import Options, measure, render, trades
from crypto_platform import tables


def test_the_bench_compares_a_full_and_an_incremental_validation_of_one_tick(tmp_path: Path) -> None:
    r = measure(Options(rate=20, at="00:20", deltas=5, repeats=2), tmp_path)
    assert (r.rows, r.files) == (21 * 20, 1 + 5 + 1)
    assert (r.full.mode, r.full.rows_validated) == ("full", 21 * 20)
    assert (r.incremental.mode, r.incremental.rows_validated) == ("incremental", 20)
    assert r.same_verdict and len(r.full.cpu_s) == len(r.incremental.wall_s) == 2
    md = render(r)
    assert "| incremental (delta + seam) | incremental | 20 |" in md and "Verdicts equal" in md


def test_generated_trades_are_valid_ordered_and_numbered_like_the_simulator() -> None:
    df = trades(1_000, 2, 3, seed=1)
    assert df["trade_id"].to_list() == [
        "100000000",
        "100000001",
        "100000002",
        "100100000",
        "100100001",
        "100100002",
    ]
    assert df.equals(df.sort(list(tables.BRONZE_TRADES.order)))
    assert str(df["ts"][3]) == "2024-03-04 16:41:00+00:00"
