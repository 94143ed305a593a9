"""A ccxt binance instrument through the platform itself: what `dagster asset materialize` runs
(raw -> bronze (-> silver) and their checks, the code location's own definitions and resources) with
the real ccxt.binance client against the local fake Binance (exchange_server.py) serving the real
recorded trades of ../shared with a 429, a 500 and a duplicated page injected. What lands in the lake
is compared with the recorded file, read independently by DuckDB.

The instrument universe of these runs is a temp instruments file holding the ccxt instrument (the
test universe has none: a ccxt instrument there would be live for test_live's sensor), read through
CRYPTO_INSTRUMENTS as a user's process reads it. The runs are in this process
(`fixtures.materialize_as_cli`: the CLI's own steps, the definitions built from the settings read
from that environment, the same selection, partition range and run config) rather than a `dagster`
CLI process each: the code location's executor runs a CLI run in the CLI's process anyway, so only
the process start-up (~8 CPU s of imports and code-location load per run) is left out; the CLI
command itself is exercised by test_offline (the demo) and test_checks_cli.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import polars as pl
import pytest

from crypto_platform import tables
from crypto_platform.automation.live import INGEST_KEYS, LiveSettings
from crypto_platform.settings import INSTRUMENTS_ENV, parse_universe
from crypto_platform_tests.ccxt_recording import RECORDED, ms, ms_delta, recorded_trades
from crypto_platform_tests.exchange_server import FakeBinanceServer, RecordedTrades, ServerState
from crypto_platform_tests.fixtures import materialize_as_cli, platform_process

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

KEY = "2024-01-01|binance.BTC-USDT"
INGEST = "group:raw or group:bronze"
T0 = datetime(2024, 1, 1, 12, tzinfo=UTC)


@pytest.fixture(scope="module")
def recorded() -> RecordedTrades:
    return recorded_trades(next_day=True)


class Platform:
    """A temp platform home (instruments file, lake, warehouse, a Dagster instance) whose runs are what
    the dagster CLI runs."""

    def __init__(self, tmp: Path, instance: dg.DagsterInstance) -> None:
        self.tmp = tmp
        self.instruments = tmp / "instruments.yaml"
        # the recording covers 30 minutes of the day: no liquidity floor on the share of non-empty bars
        entry = {
            "exchange": "binance",
            "symbol": "BTC/USDT",
            "source": "ccxt",
            "backoff_seconds": 0.05,
            "min_non_empty_share": None,
        }
        doc = {"start_date": "2024-01-01", "instruments": [entry]}
        self.instruments.write_text(json.dumps(doc))  # JSON is YAML
        parse_universe(doc, self.instruments)  # the file is valid before any run relies on it
        self.instance = instance
        self.env = {
            INSTRUMENTS_ENV: str(self.instruments),
            "CRYPTO_LAKE_ROOT": str(tmp / "lake"),
            "CRYPTO_WAREHOUSE_PATH": str(tmp / "warehouse.duckdb"),
        }

    def materialize(self, selection: str, sources: dict, ops: dict | None = None) -> None:
        """One `dagster asset materialize` run of KEY with the trade_sources resource configured."""
        config = {"resources": {"trade_sources": {"config": sources}}, "ops": ops or {}}
        with platform_process(self.env):
            assert materialize_as_cli(selection, f"{KEY}...{KEY}", config, self.instance).success

    def lake_file(self, layer: str, table: str) -> Path:
        return self.tmp / "lake" / layer / table / "instrument=binance.BTC-USDT" / "date=2024-01-01"

    def manifest(self) -> dict:
        return json.loads((self.lake_file("raw", "trades") / "_manifest.json").read_text())

    def bronze(self) -> pl.DataFrame:
        """The partition's bronze as the lake reads it: an open day is its base file plus a delta per tick."""
        from crypto_platform.resources.lake.local import LocalStore

        key = self.lake_file("bronze", "trades").relative_to(self.tmp / "lake") / "part.parquet"
        df = LocalStore(self.tmp / "lake").read(key.as_posix(), tables.BRONZE_TRADES.order)
        assert df is not None
        return df

    def candles(self) -> pl.DataFrame:
        return pl.read_parquet(self.lake_file("silver", "candles_1m") / "part.parquet")


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    with dg.DagsterInstance.ephemeral() as instance:
        yield Platform(tmp_path, instance)


@pytest.fixture
def faulty(recorded: RecordedTrades) -> Iterator[FakeBinanceServer]:
    """The fake Binance, faults numbered over the pages that hold trades: a 429 on the 2nd, a 500 on
    the 4th, and the 7th answered with the 6th page again."""
    state = ServerState(recorded, "BTC", "USDT", faults={2: "429", 4: "500", 7: "duplicate"}, fault_on="data")
    with FakeBinanceServer(state) as srv:
        yield srv


def expected(lo: datetime, hi: datetime, shift: timedelta = timedelta(0)) -> tuple[int, set[str], str]:
    """(count, trade ids, exact sum of quantities) of the recorded trades in [lo, hi) (their times
    moved by `shift`), by DuckDB over the recorded file."""
    t = f"(epoch_ms(datetime) + {ms_delta(shift)})"
    where = f"{t} >= {ms(lo)} and {t} < {ms(hi)}"
    [(n, total)] = duckdb.sql(
        f"select count(*), sum(quantity::decimal(18, 8))::varchar "
        f"from read_parquet('{RECORDED}') where {where}"
    ).fetchall()
    ids = duckdb.sql(f"select trade_id::varchar from read_parquet('{RECORDED}') where {where}").fetchall()
    return n, {r[0] for r in ids}, total


def stored(bronze: pl.DataFrame) -> tuple[int, set[str], str]:
    """The same three figures of a bronze partition (the sum exact, in decimal)."""
    [(total,)] = duckdb.sql("select sum(amount::decimal(18, 8))::varchar from bronze").fetchall()
    return bronze.height, set(bronze["trade_id"]), total


def test_ccxt_binance_through_faults_into_bronze_equals_recorded(
    platform: Platform, faulty: FakeBinanceServer
) -> None:
    platform.materialize(INGEST, {"api_urls": {"binance": faulty.url}})
    state = faulty.state
    assert dict(state.faults_hit) == {"429": 1, "500": 1, "duplicate": 1}  # every fault was met
    assert state.data_pages >= 17 + 3  # 16,702 trades in pages of 1000, plus the pages the faults spoiled

    n, ids, total = expected(T0 - timedelta(hours=12), T0 + timedelta(hours=12))
    assert n == 16_702 == len(ids)
    bronze = platform.bronze()
    assert stored(bronze) == (n, ids, total)
    assert bronze["exchange"].unique().to_list() == ["binance"]
    manifest = platform.manifest()
    assert [(b["covered_from"], b["covered_to"]) for b in manifest["batches"]] == [
        ("2024-01-01T00:00:00+00:00", "2024-01-02T00:00:00+00:00")
    ]

    # A re-run of the finished, settled day asks the exchange for nothing and stores nothing new.
    requests = state.requests["/api/v3/aggTrades"]
    files = {p: p.read_bytes() for p in (platform.tmp / "lake").rglob("*") if p.is_file()}
    platform.materialize(INGEST, {"api_urls": {"binance": faulty.url}})
    assert state.requests["/api/v3/aggTrades"] == requests
    assert platform.manifest() == manifest
    assert stored(platform.bronze()) == (n, ids, total)
    assert {p: p.read_bytes() for p in (platform.tmp / "lake").rglob("*") if p.is_file()} == files


def live_ingest(platform: Platform, server: FakeBinanceServer, now: datetime) -> None:
    """The ingest part of the live sensor's run (its selection and run config) at wall-clock `now`:
    the exchange has published what happened up to `now`, the raw asset and ccxt take it as 'now'."""
    server.state.visible_until_ms = ms(now)
    selection = " or ".join(f"key:{k.to_user_string()}" for k in INGEST_KEYS)
    sources = {"api_urls": {"binance": server.url}, "now": now.isoformat()}
    platform.materialize(selection, sources, LiveSettings().run_config()["ops"])


def test_unpublished_trade_stops_coverage_before_it_until_the_exchange_publishes_it(
    platform: Platform,
) -> None:
    # The recording (12:00-12:30) is served 12 h earlier, so the day opens with trades: the blocking
    # candles suite of a live run rejects bars with no price at all (before a day's first trade).
    shift = -timedelta(hours=12)
    recorded = recorded_trades(shift)
    t0 = T0 + shift

    # Two trades are published late, at 00:05:30 and 00:09:30. Binance's aggregate ids are contiguous,
    # so the pager sees the hole in the ids: coverage stops right before the first missing trade (it
    # is not skipped, whatever the overlap), and the next run resumes from there.
    def trade_at(ts: datetime) -> tuple[str, datetime]:
        i = int(np.searchsorted(recorded.times, ms(ts)))
        return str(recorded.ids[i]), datetime.fromtimestamp(recorded.times[i] / 1000, UTC)

    late_id, late_ts = trade_at(t0 + timedelta(minutes=9, seconds=30))
    first_id, first_ts = trade_at(t0 + timedelta(minutes=5, seconds=30))
    i_first = int(np.searchsorted(recorded.ids, int(first_id)))
    before_first = datetime.fromtimestamp(recorded.times[i_first - 1] / 1000, UTC)
    state = ServerState(recorded, "BTC", "USDT", hidden_ids={int(late_id), int(first_id)})
    with FakeBinanceServer(state) as srv:
        # 00:10:20: the live run asks for the whole minutes up to 00:10; the walk stops at the hole
        live_ingest(platform, srv, t0 + timedelta(minutes=10, seconds=20))
        assert platform.manifest()["batches"][-1]["covered_to"] == before_first.isoformat()
        bronze = platform.bronze()
        [(n_before,)] = duckdb.sql(
            f"select count(*) from read_parquet('{RECORDED}') where trade_id < {first_id} "
            f"and epoch_ms(datetime) + {ms_delta(shift)} >= {ms(t0)}"
        ).fetchall()
        assert bronze.height == n_before and bronze["trade_id"].cast(pl.Int64).max() == int(first_id) - 1

        # The exchange publishes them now; the next live run (a minute later) resumes before the hole
        state.hidden_ids.clear()
        live_ingest(platform, srv, t0 + timedelta(minutes=11, seconds=20))

    assert platform.manifest()["batches"][-1]["covered_to"] == (t0 + timedelta(minutes=11)).isoformat()
    bronze = platform.bronze()
    assert {first_id, late_id} <= set(bronze["trade_id"])
    assert bronze["trade_id"].n_unique() == bronze.height  # the re-read overlap is de-duplicated
    assert stored(bronze) == expected(t0, t0 + timedelta(minutes=11), shift)  # exactly the record
    minute = late_ts.replace(second=0, microsecond=0)
    n, _, total = expected(minute, minute + timedelta(minutes=1), shift)
    bar = platform.candles().filter(pl.col("ts") == minute).row(0, named=True)
    assert bar["trade_count"] == n
    assert bar["volume"] == pytest.approx(float(total), rel=1e-12)
    assert first_ts < late_ts
