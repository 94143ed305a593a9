"""bench.ticks on the test universe's two synthetic instruments: the figures it reports, checked
against the simulator's tape counted by DuckDB, and the report it renders."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import duckdb
import polars as pl
import pytest

from bench.ticks.markdown import render
from bench.ticks.measurement import DAY, STAGES, measure
from crypto_platform.platform_settings import DEFAULT_OVERLAP_SECONDS
from crypto_platform.settings import load_universe
from crypto_platform.sources.synthetic import SyntheticSource


@pytest.mark.slow
def test_one_tick_is_timed_both_ways_with_the_rows_it_read_and_kept() -> None:
    insts = [load_universe().instrument(k) for k in ("sim.BTC-USDT", "sim.ETH-USDT")]
    result = measure(insts, ticks=(time(0, 40),), repeats=2)
    [tick] = result.ticks
    at = datetime.combine(DAY, time(0, 40), UTC)
    source = SyntheticSource()
    tape = pl.concat(
        [
            source.fetch(i, at - timedelta(minutes=1, seconds=DEFAULT_OVERLAP_SECONDS), at).trades
            for i in insts
        ]
    )
    before = pl.concat(
        [source.fetch(i, at.replace(hour=0, minute=0), at - timedelta(minutes=1)).trades for i in insts]
    )
    con = duckdb.connect()
    con.register("tape", tape.to_arrow())
    con.register("before", before.to_arrow())
    [(new,)] = con.sql("select count(*) from tape").fetchall()
    [(kept,)] = con.sql("select count(distinct (symbol, trade_id)) from before").fetchall()
    assert (tick.new_raw_rows, tick.carried_rows) == (new, kept)  # every synthetic trade is valid
    assert len(tick.incremental_runs) == len(tick.scratch_runs) == 2
    assert (
        tick.incremental_cpu_s > 0 and tick.scratch_cpu_s > 0 and set(tick.incremental_stages) == set(STAGES)
    )
    assert result.trades_per_minute == (30.0, 20.0)
    text = render(result)
    assert "| 00:40 | " in text and "23:00 / 01:00" in text and f"{new:,}" in text
