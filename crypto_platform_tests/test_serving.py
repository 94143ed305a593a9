"""The prediction API as a client sees it: a real uvicorn server on 127.0.0.1 (ephemeral port) over a
lake written by the pipeline itself, every answer compared with an independent DuckDB query of the
warehouse views.

The lake is built once per session with Dagster's `materialize`: a champion trained and registered by
the real gold/model asset (its training set is the planted-signal frame of test_training, so the gate
promotes it and gold/model_evaluations holds its figures), then the two synthetic instruments of the
test universe from raw trades to predictions for the first minutes of a fixed day, as the live sensor
selects them (the synthetic exchange's clock is the `trade_sources` resource's `now`). The service's
clocks are settings, so freshness and cache re-validation are tested by moving time, not by sleeping.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import httpx
import pytest
import uvicorn

from crypto_platform import tables
from crypto_platform.automation.live import LiveSettings
from crypto_platform.definitions import defs
from crypto_platform.partitions import multi_key
from crypto_platform.resources.lake import LakeResource
from crypto_platform.resources.mlflow import MlflowResource
from crypto_platform.resources.sources import TradeSourcesResource
from crypto_platform.resources.warehouse import WarehouseResource
from crypto_platform.serving.app import CACHE_HEADER, create_app
from crypto_platform.serving.settings import ServingSettings
from crypto_platform.settings import load_universe
from crypto_platform_tests.fixtures import mlflow_store, planted_frame
from crypto_platform_tests.paths import PROJECT_DIR

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

DAY = date(2024, 3, 4)
BTC, ETH = "sim.BTC-USDT", "sim.ETH-USDT"  # the live (synthetic) instruments of the test universe
T0 = datetime(2024, 3, 4, 0, 30, 20, tzinfo=UTC)  # the pipeline's clock: 30 whole minutes fetched
MODEL_NAME = "serving_test_model"
COLUMNS = "instrument, exchange, symbol, ts, target_ts, horizon, close, predicted_return, implied_price, "
COLUMNS += "model_name, model_version, qualified, predicted_at"


class Clock:
    """A settable clock (the service's UTC `clock` or its `monotonic` one)."""

    def __init__(self, now: Any) -> None:
        self.now = now

    def __call__(self) -> Any:
        return self.now


@dataclass
class Platform:
    tmp: Path
    instance: dg.DagsterInstance
    resources: dict[str, Any]

    @property
    def lake_root(self) -> str:
        return self.resources["lake"].root

    def materialize(self, selection: Any, *, partition_key: str | None = None, **kwargs: Any) -> None:
        result = dg.materialize(
            list(defs.assets or []),
            selection=selection,
            partition_key=partition_key,
            resources=self.resources,
            instance=self.instance,
            raise_on_error=False,
            **kwargs,
        )
        assert result.success, [e.message for e in result.all_events if e.is_step_failure]

    def live_run(self, instrument: str, now: datetime) -> None:
        """What one live-sensor run does for today's partition: raw trades up to `now` -> predictions."""
        live = LiveSettings(checks="none")  # the run below selects no checks (`without_checks`)
        self.resources["trade_sources"] = TradeSourcesResource(now=now.isoformat())
        self.materialize(
            dg.AssetSelection.assets(*live.selection()).without_checks(),
            partition_key=multi_key(DAY, instrument),
            run_config=live.run_config(),
        )

    def sql(self, query: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
        """An independent read: the warehouse views the pipeline created, through their own connection."""
        con = duckdb.connect(str(self.tmp / "warehouse.duckdb"), read_only=True)
        try:
            con.execute("set TimeZone = 'UTC'")
            cur = con.execute(query, params or [])
            names = [d[0] for d in cur.description]
            return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
        finally:
            con.close()

    def settings(self, **kw: Any) -> ServingSettings:
        return ServingSettings(lake_root=self.lake_root, **kw)


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    tmp = tmp_path_factory.mktemp("serving")
    lake = LakeResource(root=str(tmp / "lake"))
    resources = {
        "lake": lake,
        "warehouse": WarehouseResource(path=str(tmp / "warehouse.duckdb")),
        "mlflow_registry": MlflowResource(tracking_uri=mlflow_store(tmp / "mlflow"), model_name=MODEL_NAME),
        "trade_sources": TradeSourcesResource(now=T0.isoformat()),
    }
    with dg.DagsterInstance.ephemeral() as instance:
        p = Platform(tmp, instance, resources)
        # The champion: gold/model trains, evaluates, gates and registers it, and writes its figures.
        lake.write_table(planted_frame(1500), tables.TRAINING_SET)
        p.materialize(
            [tables.MODEL.key, tables.MODEL_EVALUATIONS.key],
            run_config={
                "ops": {
                    "gold_model": {
                        "config": {"n_trials": 1, "n_folds": 2, "holdout_fraction": 0.25, "seed": 3}
                    }
                }
            },
        )
        for inst in (BTC, ETH):
            p.live_run(inst, T0)
        yield p


@contextmanager
def serve(settings: ServingSettings) -> Iterator[httpx.Client]:
    """The app on a real uvicorn server on 127.0.0.1 (ephemeral port), and an HTTP client for it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        port = sock.getsockname()[1]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def newest(p: Platform) -> dict[str, dict[str, Any]]:
    rows = p.sql(
        f"select {COLUMNS} from gold.predictions "
        "qualify row_number() over (partition by instrument order by ts desc) = 1"
    )
    return {r["instrument"]: r for r in rows}


def as_json(row: dict[str, Any]) -> dict[str, Any]:
    """A DuckDB row as the API serializes it (ISO 8601 UTC instants)."""
    return {k: v.isoformat().replace("+00:00", "Z") if isinstance(v, datetime) else v for k, v in row.items()}


def api_row(item: dict[str, Any]) -> dict[str, Any]:
    """An API prediction with its instants normalised like `as_json` (pydantic writes 'Z')."""
    return {k: item[k] for k in COLUMNS.replace(" ", "").split(",")}


def test_latest_prediction_per_instrument_equals_duckdb(platform: Platform) -> None:
    expected = newest(platform)
    assert set(expected) == {BTC, ETH}
    now = expected[BTC]["ts"] + timedelta(minutes=1, seconds=42)
    lake_before = _lake_stamps(platform)
    with serve(platform.settings(clock=Clock(now))) as api:
        first = api.get("/v1/predictions/latest")
        assert first.status_code == 200 and first.headers[CACHE_HEADER] == "miss"
        body = first.json()
        assert [i["instrument"] for i in body["predictions"]] == [BTC, ETH]  # instruments-file order
        assert body["missing"] == [k for k in load_universe().keys if k not in (BTC, ETH)]
        for item in body["predictions"]:
            exp = expected[item["instrument"]]
            assert api_row(item) == as_json(exp)
            assert item["age_seconds"] == (now - exp["ts"] - timedelta(minutes=1)).total_seconds()
            assert item["qualified"] is True and item["model_name"] == MODEL_NAME
        assert expected[BTC]["ts"] == datetime(2024, 3, 4, 0, 29, tzinfo=UTC)  # the last whole minute
        again = api.get("/v1/predictions/latest")
        assert again.headers[CACHE_HEADER] == "hit" and again.json()["predictions"] == body["predictions"]

        one = api.get(f"/v1/predictions/latest/{ETH}")
        assert one.status_code == 200
        assert one.json() == body["predictions"][1]
    assert _lake_stamps(platform) == lake_before  # read-only: not one lake file touched


def test_time_range_equals_duckdb(platform: Platform) -> None:
    start, end = "2024-03-04T00:05:00Z", "2024-03-04T00:20:00Z"
    expected = platform.sql(
        f"select {COLUMNS} from gold.predictions where instrument = ? and ts >= ? and ts < ? order by ts",
        [BTC, datetime(2024, 3, 4, 0, 5, tzinfo=UTC), datetime(2024, 3, 4, 0, 20, tzinfo=UTC)],
    )
    assert len(expected) == 15
    now = datetime(2024, 3, 4, 0, 31, tzinfo=UTC)
    with serve(platform.settings(clock=Clock(now))) as api:
        r = api.get(f"/v1/predictions/{BTC}", params={"start": start, "end": end})
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["start"], body["end"], body["count"]) == (start, end, 15)
        assert [api_row(i) for i in body["predictions"]] == [as_json(e) for e in expected]
        # an offset is converted to UTC; a naive instant is UTC
        shifted = api.get(
            f"/v1/predictions/{BTC}",
            params={"start": "2024-03-04T01:05:00+01:00", "end": "2024-03-04T00:20:00"},
        )
        assert shifted.json()["predictions"] == body["predictions"]
        # default: the hour before now
        last_hour = api.get(f"/v1/predictions/{ETH}").json()
        all_eth = platform.sql(
            f"select {COLUMNS} from gold.predictions where instrument = ? order by ts", [ETH]
        )
        assert (last_hour["start"], last_hour["end"]) == ("2024-03-03T23:31:00Z", "2024-03-04T00:31:00Z")
        assert [api_row(i) for i in last_hour["predictions"]] == [as_json(e) for e in all_eth]
        assert last_hour["count"] == 30


def test_every_client_error_is_a_clear_4xx(platform: Platform) -> None:
    with serve(platform.settings(max_range_hours=6)) as api:
        for path in ["/v1/predictions/latest/sim.DOGE-USDT", "/v1/predictions/sim.DOGE-USDT"]:
            r = api.get(path)
            assert r.status_code == 404
            assert "unknown instrument 'sim.DOGE-USDT'" in r.json()["detail"] and BTC in r.json()["detail"]
        r = api.get("/v1/predictions/latest/binance.BTC-USDT")  # configured, but never predicted
        assert r.status_code == 404
        assert r.json()["detail"] == "no prediction for instrument 'binance.BTC-USDT' yet (gold/predictions)"

        rng = f"/v1/predictions/{BTC}"
        r = api.get(rng, params={"start": "2024-03-04T00:20:00Z", "end": "2024-03-04T00:20:00Z"})
        assert r.status_code == 422
        assert (
            "start 2024-03-04T00:20:00+00:00 is not before end 2024-03-04T00:20:00+00:00"
            in r.json()["detail"]
        )
        r = api.get(rng, params={"start": "yesterday", "end": "2024-03-04T00:20:00Z"})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "start"]
        r = api.get(rng, params={"start": "2024-03-04T00:00:00Z", "end": "2024-03-04T06:00:01Z"})
        assert r.status_code == 400
        assert "6.00028 h requested, the limit is 6 h (CRYPTO_SERVING_MAX_RANGE_HOURS)" in r.json()["detail"]
        exactly = api.get(rng, params={"start": "2024-03-04T00:00:00Z", "end": "2024-03-04T06:00:00Z"})
        assert exactly.status_code == 200 and exactly.json()["count"] == 30

        r = api.get("/v1/models/0/evaluation")
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["path", "version"]
        r = api.get("/v1/models/99/evaluation")
        assert r.status_code == 404
        assert r.json()["detail"] == "no evaluation of model version 99 (gold/model_evaluations)"
        assert api.get("/v1/models/latest/evaluation").status_code == 422
        assert api.get("/v1/nothing").status_code == 404


def test_champion_evaluation_equals_duckdb(platform: Platform) -> None:
    rows = platform.sql("select * from gold.model_evaluations order by forecast")
    [version] = {r["model_version"] for r in rows}
    assert all(r["promoted"] and r["alias"] == "champion" for r in rows)
    with serve(platform.settings()) as api:
        body = api.get("/v1/models/champion/evaluation").json()
        assert api.get(f"/v1/models/{version}/evaluation").json() == body
    assert (body["model_name"], body["model_version"], body["champion"]) == (MODEL_NAME, version, True)
    assert body["gate_reasons"] == rows[0]["gate_reasons"].splitlines() and body["gate_reasons"]
    assert body["eval_window_start"] == as_json(rows[0])["eval_window_start"]
    assert [f["forecast"] for f in body["forecasts"]] == ["model", "zero", "momentum", "reversal", "ridge"]
    by_forecast = {r["forecast"]: r for r in rows}
    for fig in body["forecasts"]:
        exp = by_forecast[fig["forecast"]]
        for name, value in fig.items():
            assert value == (None if exp[name] != exp[name] else exp[name]), name  # NaN is served as null


def test_health_turns_stale_as_the_clock_passes(platform: Platform) -> None:
    expected = newest(platform)
    newest_end = max(r["ts"] for r in expected.values()) + timedelta(minutes=1)
    oldest_end = min(r["ts"] for r in expected.values()) + timedelta(minutes=1)
    clock = Clock(newest_end + timedelta(seconds=30))
    with serve(platform.settings(clock=clock, stale_after_seconds=120)) as api:
        r = api.get("/health")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "ok" and body["reasons"] == []
        by_key = {i["instrument"]: i for i in body["instruments"]}
        assert set(by_key) == set(load_universe().keys)
        for k, row in expected.items():
            lag = (clock.now - row["ts"] - timedelta(minutes=1)).total_seconds()
            assert by_key[k] == {
                "instrument": k,
                "live": True,
                "latest_ts": as_json(row)["ts"],
                "lag_seconds": lag,
                "fresh": True,
                "reason": None,
            }
        # replayed / imported instruments are history: reported, never the reason for a 503
        assert by_key["ftx.BTC-USD-USD"]["live"] is False and by_key["ftx.BTC-USD-USD"]["fresh"] is False

        clock.now = oldest_end + timedelta(seconds=120)  # exactly at the limit: still fresh
        assert api.get("/health").status_code == 200
        clock.now = oldest_end + timedelta(seconds=121)
        r = api.get("/health")
        assert r.status_code == 503
        stale = r.json()
        assert stale["status"] == "stale"
        minute = oldest_end - timedelta(minutes=1)
        assert any(
            f"newest prediction is for {minute:%Y-%m-%d %H:%M} UTC, 121 s after its minute closed "
            "(limit 120 s, CRYPTO_FRESHNESS_MAX_LAG_SECONDS)" in reason
            for reason in stale["reasons"]
        ), stale["reasons"]
        clock.now = newest_end + timedelta(hours=1)
        assert sorted(r.split(":")[0] for r in api.get("/health").json()["reasons"]) == [BTC, ETH]


def test_a_new_minute_invalidates_the_cache_within_the_bound(platform: Platform) -> None:
    """Two servers, both primed: one re-validates on every request, one at most every 30 s (its bound)."""
    before = newest(platform)[BTC]
    tick = Clock(1000.0)
    strict = platform.settings(cache_check_seconds=0)
    bounded = platform.settings(cache_check_seconds=30, monotonic=tick)
    with serve(strict) as a, serve(bounded) as b:
        for api in (a, b):
            assert api.get(f"/v1/predictions/latest/{BTC}").json()["ts"] == as_json(before)["ts"]
            assert api.get(f"/v1/predictions/latest/{BTC}").headers[CACHE_HEADER] == "hit"

        platform.live_run(BTC, T0 + timedelta(minutes=3))  # three more minutes: the partition is replaced
        after = newest(platform)[BTC]
        assert after["ts"] == before["ts"] + timedelta(minutes=3)

        r = a.get(f"/v1/predictions/latest/{BTC}")  # the next request already sees it
        assert r.headers[CACHE_HEADER] == "miss" and api_row(r.json()) == as_json(after)
        r = b.get(f"/v1/predictions/latest/{BTC}")  # within its 30 s bound: the cached answer
        assert r.headers[CACHE_HEADER] == "hit" and r.json()["ts"] == as_json(before)["ts"]
        tick.now = 1029.9
        assert b.get(f"/v1/predictions/latest/{BTC}").json()["ts"] == as_json(before)["ts"]
        tick.now = 1030.0  # the bound has passed: re-validated against the lake, recomputed
        r = b.get(f"/v1/predictions/latest/{BTC}")
        assert r.headers[CACHE_HEADER] == "miss" and api_row(r.json()) == as_json(after)
        expected = newest(platform)
        latest = b.get("/v1/predictions/latest").json()["predictions"]
        assert [api_row(i) for i in latest] == [as_json(expected[k]) for k in (BTC, ETH)]


def test_serve_command_binds_localhost_and_serves_the_docs(platform: Platform) -> None:
    """`./run serve` = `python -m crypto_platform.serving`, configured by the environment and $PORT."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PORT": str(port), "CRYPTO_LAKE_ROOT": platform.lake_root}
    proc = subprocess.Popen(
        [sys.executable, "-m", "crypto_platform.serving"],
        cwd=PROJECT_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        log = []
        for line in proc.stdout:
            log.append(line)
            if "Uvicorn running on" in line:
                break
        assert f"Uvicorn running on http://127.0.0.1:{port}" in "".join(log), "".join(log)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as api:
            docs = api.get("/docs")
            assert docs.status_code == 200 and "swagger-ui" in docs.text
            paths = api.get("/openapi.json").json()["paths"]
            assert set(paths) == {
                "/v1/predictions/latest",
                "/v1/predictions/latest/{instrument}",
                "/v1/predictions/{instrument}",
                "/v1/models/champion/evaluation",
                "/v1/models/{version}/evaluation",
                "/health",
            }
            latest = api.get("/v1/predictions/latest").json()["predictions"]
            expected = newest(platform)
            assert [api_row(i) for i in latest] == [as_json(expected[k]) for k in (BTC, ETH)]
            health = api.get("/health")  # the real clock is years past 2024-03-04: stale, and says why
            assert health.status_code == 503 and len(health.json()["reasons"]) == 2
    finally:
        proc.terminate()
        proc.wait(30)


def _lake_stamps(p: Platform) -> dict[str, tuple[int, int]]:
    root = Path(p.lake_root)
    return {str(f): (f.stat().st_size, f.stat().st_mtime_ns) for f in root.rglob("*") if f.is_file()}
