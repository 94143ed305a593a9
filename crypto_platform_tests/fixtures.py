"""Plain helpers shared by several test modules (no test module imports another one).

* candles and training frames: random-walk candles, candles with planted predictability;
* recorded trades in the RAW_TRADES shape (Binance parquet, binance_ws CSV, ccxt JSON);
* a replay file whose rows mix every timestamp representation (D1, ROWS, write_recording);
* the monitoring platform on a tmp lake: FTX January 2022 bars as the sim BTC/USDT instrument, its
  resources, silver / features / predictions writers, a real MLflow champion, one-check runs;
* a webhook receiver on 127.0.0.1, and a recorder of every socket connection made in this process;
* a lake in a fresh bucket of the S3 test server (`s3_lake`);
* the code location's settings as a process started with some environment reads them
  (`platform_process`), and what `dagster asset materialize` runs, in this process (`materialize_as_cli`).
"""

from __future__ import annotations

import functools
import gzip
import json
import math
import multiprocessing as mp
import shutil
import socket
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import numpy as np
import polars as pl
import pytest

from crypto_platform import tables
from crypto_platform.assets import gold, ingest, monitoring, rolling_evaluation, silver
from crypto_platform.assets.rolling_evaluation import model_skill
from crypto_platform.checks.drift import feature_drift, prediction_drift
from crypto_platform.checks.quality import bronze_trades_suite, candles_1m_suite
from crypto_platform.ml import registry
from crypto_platform.ml.dataset import training_frame
from crypto_platform.ml.evaluation import GateDecision, skill_gate
from crypto_platform.ml.rolling_evaluation import FittedBaselines, cell_rows, score_cell
from crypto_platform.ml.serving import prediction_rows
from crypto_platform.ml.training import TrainResult, train
from crypto_platform.partitions import DayPartition
from crypto_platform.resources.lake import LakeResource
from crypto_platform.resources.mlflow import MlflowResource
from crypto_platform.resources.sources import TradeSourcesResource
from crypto_platform.resources.warehouse import WarehouseResource
from crypto_platform.schemas import CANDLES, RAW_TRADES
from crypto_platform.settings import load_universe
from crypto_platform.transforms.features import FEATURE_COLUMNS, INDEX_COLUMNS, build_features
from crypto_platform.transforms.labels import forward_return_labels
from crypto_platform.transforms.ohlcv_import import read_ftx_csv, split_by_day
from crypto_platform_tests.paths import FTX_FILE, PROJECT_DIR, SHARED_DATA

HORIZON = 5  # minutes: the forecast horizon of every test model
FAST = {"n_trials": 6, "n_folds": 3, "holdout_fraction": 0.25, "seed": 3, "max_rounds": 120}

# ----------------------------------------------------------------------------------------------
# candles and training frames

T0 = datetime(2024, 3, 1, 22, 0, tzinfo=UTC)


def synthetic_candles(
    n: int,
    symbols: tuple[str, ...] = ("BTC/USDT", "ETH/USDT"),
    *,
    seed: int = 7,
    empty_share: float = 0.05,
    split_known: bool = True,
    exchange: str = "sim",
) -> pl.DataFrame:
    """Random-walk 1-minute candles with some empty bars, following CANDLES exactly."""
    rng = np.random.default_rng(seed)
    frames = []
    for k, symbol in enumerate(symbols):
        price = 100.0 * (k + 1)
        rows = []
        for i in range(n):
            empty = rng.random() < empty_share
            if empty:
                o = h = lo = c = price
                vol = qv = buy = 0.0
                vwap, trades = price, 0
            else:
                o = price
                c = price * math.exp(rng.normal(0, 0.001))
                h = max(o, c) * (1 + abs(rng.normal(0, 0.0005)))
                lo = min(o, c) * (1 - abs(rng.normal(0, 0.0005)))
                vol = float(rng.lognormal(0, 1))
                vwap = (o + c + h + lo) / 4
                qv = vol * vwap
                buy = vol * float(rng.uniform(0.1, 0.9))
                trades = int(rng.integers(1, 50))
            rows.append(
                {
                    "exchange": exchange,
                    "symbol": symbol,
                    "ts": T0 + timedelta(minutes=i),
                    "open": o,
                    "high": h,
                    "low": lo,
                    "close": c,
                    "volume": vol,
                    "quote_volume": qv,
                    "vwap": vwap,
                    "trade_count": trades,
                    "buy_volume": buy if split_known else None,
                    "sell_volume": (vol - buy) if split_known else None,
                    "is_empty": empty,
                    "origin": "synthetic",
                }
            )
            price = c
        frames.append(pl.DataFrame(rows, schema=CANDLES))
    return pl.concat(frames)


def planted_candles(n: int = 6000, *, seed: int = 5, strength: float = 0.002) -> pl.DataFrame:
    """Two instruments whose next-minute return follows the taker buy share of the current minute.

    The buy share follows a persistent AR(1) latent order flow, so the taker buy ratio features carry
    real information about the next 5 minutes that past returns (momentum) only partly reflect.
    """
    rng = np.random.default_rng(seed)
    t0 = datetime(2024, 5, 1, tzinfo=UTC)
    frames = []
    for k, symbol in enumerate(["BTC/USDT", "ETH/USDT"]):
        flow = np.zeros(n)
        for i in range(1, n):
            flow[i] = 0.9 * flow[i - 1] + rng.normal(0, 0.45)
        share = 0.5 + 0.35 * np.tanh(flow)
        price, prev_share = 100.0 * (k + 1), 0.5
        rows = []
        for i in range(n):
            o = price
            c = price * math.exp(strength * (prev_share - 0.5) + rng.normal(0, 0.0005))
            h = max(o, c) * (1 + abs(rng.normal(0, 0.0002)))
            lo = min(o, c) * (1 - abs(rng.normal(0, 0.0002)))
            vol = float(rng.lognormal(0, 0.5))
            rows.append(
                {
                    "exchange": "sim",
                    "symbol": symbol,
                    "ts": t0 + timedelta(minutes=i),
                    "open": o,
                    "high": h,
                    "low": lo,
                    "close": c,
                    "volume": vol,
                    "quote_volume": vol * (o + c) / 2,
                    "vwap": (o + c) / 2,
                    "trade_count": int(rng.integers(1, 40)),
                    "buy_volume": vol * share[i],
                    "sell_volume": vol * (1 - share[i]),
                    "is_empty": False,
                    "origin": "synthetic",
                }
            )
            price, prev_share = c, share[i]
        frames.append(pl.DataFrame(rows, schema=CANDLES))
    return pl.concat(frames)


@functools.cache
def planted_frame(n: int = 6000) -> pl.DataFrame:
    """The training frame (features + 5-minute labels) of `planted_candles(n)` (built once per size)."""
    candles = planted_candles(n)
    return training_frame(build_features(candles), forward_return_labels(candles, HORIZON))


# ----------------------------------------------------------------------------------------------
# recorded trades in the RAW_TRADES shape

TRADES = SHARED_DATA / "trades"
BTC_2024 = TRADES / "binance_spot_btcusdt_2024-01-01_1200-1230.parquet"
XRPETH = TRADES / "binance_xrpeth_aggtrades_2019-10-11_to_13_ccxt.json.gz"
WS_SPOT_BTC = TRADES / "binance_ws" / "derived" / "spot_btcusdt_trades.csv"
RECEIVED = datetime(2030, 1, 1, tzinfo=UTC)


def day_window(y: int, m: int, d: int, days: int = 1) -> tuple[datetime, datetime]:
    """[midnight, midnight + days) in UTC."""
    start = datetime(y, m, d, tzinfo=UTC)
    return start, start + timedelta(days=days)


def raw_from_binance_parquet(path: Path = BTC_2024) -> pl.DataFrame:
    """The Vaquum Binance trade parquet in the RAW_TRADES shape (taker sold when is_buyer_maker)."""
    df = pl.read_parquet(path)
    return pl.DataFrame(
        {
            "exchange": "binance",
            "symbol": "BTC/USDT",
            "trade_id": df["trade_id"].cast(pl.String),
            "timestamp_ms": df["datetime"].dt.epoch("ms"),
            "price": df["price"],
            "amount": df["quantity"],
            "cost": None,
            "side": df.select(
                pl.when(pl.col("is_buyer_maker") == 1).then(pl.lit("sell")).otherwise(pl.lit("buy"))
            ).to_series(),
            "payload": None,
            "source": f"replay:{path.name}",
            "received_at": RECEIVED,
        },
        schema=RAW_TRADES,
    )


def raw_from_ws_csv(path: Path = WS_SPOT_BTC, symbol: str = "BTC/USDT") -> pl.DataFrame:
    """A flattened binance_ws trades CSV in the RAW_TRADES shape."""
    df = pl.read_csv(path)
    return pl.DataFrame(
        {
            "exchange": "binance",
            "symbol": symbol,
            "trade_id": df["trade_id"].cast(pl.String),
            "timestamp_ms": df["ts_ms"],
            "price": df["price"],
            "amount": df["amount"],
            "cost": None,
            "side": df["side"],
            "payload": None,
            "source": f"replay:{path.name}",
            "received_at": RECEIVED,
        },
        schema=RAW_TRADES,
    )


def raw_from_ccxt_json(path: Path = XRPETH) -> pl.DataFrame:
    """A gzipped JSON list of ccxt unified trades in the RAW_TRADES shape (payload = the 'info' JSON)."""
    with gzip.open(path, "rt") as fh:
        trades = json.load(fh)
    return pl.DataFrame(
        {
            "exchange": "binance",
            "symbol": [t["symbol"] for t in trades],
            "trade_id": [t["id"] for t in trades],
            "timestamp_ms": [t["timestamp"] for t in trades],
            "price": [t["price"] for t in trades],
            "amount": [t["amount"] for t in trades],
            "cost": [t["cost"] for t in trades],
            "side": [t["side"] for t in trades],
            "payload": [json.dumps(t["info"]) for t in trades],
            "source": f"replay:{path.name}",
            "received_at": RECEIVED,
        },
        schema=RAW_TRADES,
    )


# ----------------------------------------------------------------------------------------------
# a replay file whose rows mix every timestamp representation (faults: replay rows)

D1 = datetime(2024, 1, 1, tzinfo=UTC)

# (timestamp as recorded, what it is): one row each, in file order
ROWS: list[tuple[str, str]] = [
    ("2024-01-01T12:01:10Z", "ISO 8601, T and Z (the first row: never decides the others' format)"),
    ("2024-01-01 12:01:13", "ISO 8601 with a space, no zone (UTC)"),
    ("1704110474000", "epoch ms"),
    ("01/01/2024 12:01:15", "ambiguous day/month order: refused"),
    ("", "empty"),
    ("not a time", "not a time"),
    ("2024-01-01 12:01:16.250", "fraction"),
    ("2024-01-01T13:01:17+01:00", "offset"),
    ("1704110478", "epoch s"),
    ("1704110479.5", "epoch s with a fraction"),
    ("1704110480123456", "epoch µs"),
    ("1704110481123456789", "epoch ns"),
    ("1000000000", "epoch s of 2001, before any crypto trade: rejected in its neighbours' partition"),
    ("2024-02-30 00:00:00", "impossible date"),
    ("2024-01-01T23:59:59.999+0000", "last millisecond of the first day"),
    ("2024-01-02T00:00:00Z", "first instant of the second day"),
    ("1704153600001", "epoch ms on the second day"),
    ("garbage", "not a time, after a second-day row"),
    ("2099-01-01T00:00:00Z", "in the future: rejected in its neighbours' partition"),
    ("2024-01-02 00:00:02.5", "second day again"),
]


def recorded(ts: str, fmt: str) -> object:
    """A timestamp as the file holds it: CSV text, or in JSON a number when it is one."""
    if fmt == "json" and ts.replace(".", "", 1).isdigit():
        return float(ts) if "." in ts else int(ts)
    return ts


def write_recording(tmp: Path, fmt: str) -> Path:
    """The rows as a CSV (text cells) or a ccxt-style JSON list (numbers as JSON numbers)."""
    records = []
    for i, (ts, _) in enumerate(ROWS):
        value = recorded(ts, fmt)
        side = "buy" if i % 2 else "sell"
        records.append(
            {"id": str(5000 + i), "timestamp": value, "price": 42000 + i, "amount": 0.01 * (i + 1)}
        )
        records[-1]["side"] = side
    path = tmp / f"mixed.{fmt}"
    if fmt == "csv":
        lines = ["id,timestamp,price,amount,side"]
        lines += [f"{r['id']},{r['timestamp']},{r['price']},{r['amount']},{r['side']}" for r in records]
        path.write_text("\n".join(lines) + "\n")
    else:
        path.write_text(json.dumps(records))
    return path


# ----------------------------------------------------------------------------------------------
# the monitoring platform on a tmp lake (FTX January 2022 bars as the sim BTC/USDT instrument)

INSTRUMENT = "sim.BTC-USDT"  # the FTX BTC-PERP bars stand in for the test universe's sim BTC/USDT
MODEL_NAME = "monitoring_test_model"

ASSETS = [*dg.load_assets_from_modules([ingest, silver, gold, monitoring, rolling_evaluation])]
# check-only runs of a partition need assets sharing one PartitionsDefinition
PARTITIONED = [a for a in ASSETS if a.partitions_def is not None]
CHECKS = [bronze_trades_suite, candles_1m_suite, feature_drift, prediction_drift, model_skill]


@functools.cache
def ftx_candles() -> pl.DataFrame:
    """FTX BTC-PERP 1-minute bars of January 2022 as silver candles of the sim BTC/USDT instrument."""
    return read_ftx_csv(FTX_FILE, exchange="sim", symbol="BTC/USDT")


@functools.cache
def ftx_features() -> pl.DataFrame:
    """Gold features of `ftx_candles()` (the whole month)."""
    return build_features(ftx_candles())


def cell(day: str, instrument: str = INSTRUMENT) -> DayPartition:
    """The (day, instrument) partition of an ISO day."""
    return DayPartition(load_universe().instrument(instrument), date.fromisoformat(day))


def key(day: str, instrument: str = INSTRUMENT) -> str:
    """The Dagster partition key of an ISO day."""
    return cell(day, instrument).key


_MIGRATED_STORE: list[Path] = []  # this process's empty MLflow store, migrated once


def mlflow_store(folder: Path, name: str = "mlflow.db") -> str:
    """The URI of a new, empty MLflow SQLite store `folder/name`: a copy of one this process created
    through `mlflow_store.ensure_schema` once. MLflow's schema migrations cost ~1.7 CPU s per new store
    and are not what these tests are about (creating a fresh store, races included, is
    test_mlflow_store's subject; the demo, the benches and the cluster test still create theirs)."""
    if not _MIGRATED_STORE:
        from crypto_platform.ml import mlflow_store as store_module

        template = Path(tempfile.mkdtemp(prefix="mlflow-empty-store-")) / "mlflow.db"
        store_module.ensure_schema(f"sqlite:///{template}")
        _MIGRATED_STORE.append(template)
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_MIGRATED_STORE[0], folder / name)
    return f"sqlite:///{folder / name}"


def resources(tmp: Path, store: str | None = None, **extra) -> dict:
    """The platform's resources on a tmp lake, warehouse and MLflow store (or `store`)."""
    return {
        "lake": LakeResource(root=str(tmp / "lake")),
        "warehouse": WarehouseResource(path=str(tmp / "warehouse.duckdb")),
        "trade_sources": TradeSourcesResource(),
        "mlflow_registry": MlflowResource(
            tracking_uri=store or f"sqlite:///{tmp / 'mlflow' / 'mlflow.db'}", model_name=MODEL_NAME
        ),
        **extra,
    }


def write_silver(lake: LakeResource, days: list[str]) -> None:
    """FTX bars of these days as silver/candles_1m partitions."""
    by_day = split_by_day(ftx_candles())
    for d in days:
        lake.write_partition(by_day[date.fromisoformat(d)], tables.CANDLES_1M, cell(d))


def write_features(lake: LakeResource, days: list[str], distort: dict[str, float] | None = None) -> None:
    """FTX features of these days as gold/features partitions, columns multiplied by `distort`."""
    feats = ftx_features()
    for d in days:
        part = cell(d)
        df = feats.filter((pl.col("ts") >= part.start) & (pl.col("ts") < part.end))
        if distort:
            df = df.with_columns([(pl.col(c) * f).alias(c) for c, f in distort.items()])
        lake.write_partition(df, tables.FEATURES, part)


def forward_returns(day: str) -> pl.DataFrame:
    """exchange, symbol, ts, close and the realised 5-minute forward log return of one FTX day."""
    candles = ftx_candles().sort("ts")
    fwd = candles.with_columns((pl.col("close").shift(-HORIZON) / pl.col("close")).log().alias("fwd"))
    part = cell(day)
    return fwd.filter((pl.col("ts") >= part.start) & (pl.col("ts") < part.end))


def write_predictions(
    lake: LakeResource, days: list[str], *, skill: float, version: int = 1, seed: int = 0
) -> None:
    """Forecasts correlated with the realised return (skill > 0), against it (< 0), in the real schema."""
    rng = np.random.default_rng(seed)
    info = SimpleNamespace(horizon=HORIZON, name=MODEL_NAME, version=str(version))
    for d in days:
        day = forward_returns(d)
        realised = day["fwd"].fill_null(0.0).to_numpy()
        noise = rng.normal(0.0, float(np.nanstd(realised)) or 1e-4, len(realised))
        pred = skill * realised + noise * (1 - abs(skill))
        rows = prediction_rows(
            day.select(INDEX_COLUMNS), day.select(*INDEX_COLUMNS, "close"), pred, info, True
        )
        lake.write_partition(rows, tables.PREDICTIONS, cell(d))


def write_scores(
    lake: LakeResource, days: list[str], *, skill: float, version: int = 1, seed: int = 0
) -> None:
    """gold/rolling_evaluation rows of these FTX days for forecasts correlated with the realised return
    (skill > 0) or against it (< 0), scored by `ml.rolling_evaluation` against zero and momentum."""
    rng = np.random.default_rng(seed)
    for d in days:
        day = forward_returns(d).filter(pl.col("fwd").is_not_null())
        realised = day["fwd"].to_numpy()
        pred = skill * realised + rng.normal(0.0, float(np.std(realised)), len(realised)) * (1 - abs(skill))
        frame = day.select("ts", pl.col("fwd").alias("label")).join(
            ftx_features().select("ts", "ret_5"), on="ts", how="left"
        )
        scores = score_cell(frame, pred, FittedBaselines(None, None), horizon=HORIZON)
        part = cell(d)
        rows = cell_rows(
            scores,
            exchange=part.instrument.exchange,
            symbol=part.instrument.symbol,
            day=part.day,
            model_name=MODEL_NAME,
            model_version=str(version),
            horizon=HORIZON,
            in_sample=False,
            scored_at=datetime.now(UTC),
        )
        lake.write_partition(rows, tables.ROLLING_EVALUATION, part)


@functools.cache
def small_model() -> tuple[pl.DataFrame, TrainResult, GateDecision]:
    """A small real LightGBM model on planted data that passes the gate (trained once per session)."""
    frame = planted_frame(3000)
    result = train(frame, FEATURE_COLUMNS, horizon=HORIZON, **{**FAST, "n_trials": 2, "max_rounds": 60})
    decision = skill_gate(result.evaluation.model, result.evaluation.momentum, None)
    assert decision.promote, decision.reasons
    return frame, result, decision


@functools.cache
def registry_model() -> tuple[pl.DataFrame, TrainResult]:
    """The planted frame (4,000 bars) and the model FAST training gives on it: the model the registry
    and model-fault tests register (trained once per session, not once per module)."""
    frame = planted_frame(4000)
    return frame, train(frame, FEATURE_COLUMNS, horizon=HORIZON, **FAST)


def register_champion(store: str, reference: pl.DataFrame) -> registry.ModelVersionInfo:
    """`small_model()`, registered in `store` as champion, with `reference` as its drift reference."""
    frame, result, decision = small_model()
    return registry.log_and_register(
        result,
        tracking_uri=store,
        model_name=MODEL_NAME,
        feature_cols=FEATURE_COLUMNS,
        reference_features=reference,
        input_example=frame.head(5),
        decision=decision,
    )


def partition_tags(partition_key: str) -> dict[str, str]:
    """Tags of a one-partition run (what `partition_key=` sets; accepted only for asset selections)."""
    return {"dagster/partition": partition_key}


def evaluation(result: dg.ExecuteInProcessResult, check_name: str):
    """The one evaluation of `check_name` in a run."""
    [ev] = [e for e in result.get_asset_check_evaluations() if e.check_name == check_name]
    return ev


def meta(ev, name: str):
    """The value of one metadata entry of a check evaluation."""
    return ev.metadata[name].value


def corrupt_candles(df: pl.DataFrame) -> pl.DataFrame:
    """A high below its low on minute 100, and minute 200 twice."""
    idx = pl.int_range(pl.len())
    bad = df.with_columns(
        pl.when(idx == 100).then(pl.col("low") - 5.0).otherwise(pl.col("high")).alias("high")
    )
    return pl.concat([bad, bad.slice(200, 1)]).sort("ts")


def run_check(tmp: Path, instance, check, store: str, *, partition_key: str | None = None, run_config=None):
    """Run one asset check alone (a partition, or the newest data) and return its evaluation."""
    res = dg.materialize(
        [*(PARTITIONED if partition_key else ASSETS), *CHECKS],
        selection=dg.AssetSelection.checks(check),
        instance=instance,
        resources=resources(tmp, store),
        tags=partition_tags(partition_key) if partition_key else None,
        run_config=run_config,
    )
    return evaluation(res, next(iter(check.check_keys)).name)


# ----------------------------------------------------------------------------------------------
# network


class WebhookReceiver:
    """A webhook endpoint on 127.0.0.1 that records the JSON bodies it is sent."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def recorded_connections() -> Iterator[list[str]]:
    """Record every socket connect / name lookup made in this process while active (any address).

    The in-process counterpart of test_offline.GUARD: a "sends nothing" test asserts the list stays
    empty, which can fail (unlike checking only that one receiver saw no request).
    """
    seen: list[str] = []
    connect, connect_ex, getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo

    def guard_connect(self: socket.socket, address: object) -> None:
        seen.append(f"connect {address}")
        return connect(self, address)

    def guard_connect_ex(self: socket.socket, address: object) -> int:
        seen.append(f"connect_ex {address}")
        return connect_ex(self, address)

    def guard_getaddrinfo(host: object, *args: object, **kwargs: object) -> list:
        seen.append(f"getaddrinfo {host}")
        return getaddrinfo(host, *args, **kwargs)

    socket.socket.connect = guard_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = guard_connect_ex  # type: ignore[method-assign]
    socket.getaddrinfo = guard_getaddrinfo  # type: ignore[assignment]
    try:
        yield seen
    finally:
        socket.socket.connect, socket.socket.connect_ex = connect, connect_ex  # type: ignore[method-assign]
        socket.getaddrinfo = getaddrinfo  # type: ignore[assignment]


ENV_TEMPLATE = PROJECT_DIR / "deploy" / "cluster" / "cluster.env.example"


def env_template(path: Path = ENV_TEMPLATE) -> dict[str, str]:
    """NAME=value lines of an env file (comments and blank lines skipped)."""
    out = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            out[name.strip()] = value.strip()
    return out


def s3_lake(endpoint: str, prefix: str = "lake") -> LakeResource:
    """A lake rooted in a new, empty bucket of the S3 test server at `endpoint` (plain http allowed)."""
    import boto3

    bucket = f"lake-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
    return LakeResource(root=f"s3://{bucket}/{prefix}", s3_endpoint_url=endpoint, s3_allow_http=True)


# ----------------------------------------------------------------------------------------------
# the code location as a `dagster` CLI process would load it, in this process


def _clear_settings_caches() -> None:
    """Forget the settings, the universe and ccxt's markets read so far (the next use reads them anew)."""
    from crypto_platform.platform_settings import load_settings

    load_settings.cache_clear()
    load_universe.cache_clear()
    ccxt_source = sys.modules.get("crypto_platform.sources.ccxt_source")  # not imported: nothing cached
    if ccxt_source is not None:
        ccxt_source.clear_markets_cache()


@contextmanager
def platform_process(env: Mapping[str, str]) -> Iterator[None]:
    """Settings and instruments as a process started with `env` (CRYPTO_INSTRUMENTS, CRYPTO_LAKE_ROOT,
    ...) reads them; on exit they are read again from the restored environment and kept, as this
    process read them at its start (a later test may change the environment and rely on the settings
    read before). The partitions stay the test universe's (fixed at import): use a key both hold."""
    import crypto_platform.definitions  # noqa: F401  # its module-level `defs` keeps the test settings

    try:
        with pytest.MonkeyPatch.context() as mp:
            for name, value in env.items():
                mp.setenv(name, value)
            _clear_settings_caches()
            yield
    finally:
        _clear_settings_caches()
        from crypto_platform.platform_settings import load_settings

        load_settings()
        load_universe()


def materialize_as_cli(
    selection: str, partition_range: str, run_config: Mapping | None, instance: dg.DagsterInstance
) -> dg.ExecuteInProcessResult:
    """What `dagster asset materialize -m crypto_platform.definitions --select SELECTION --partition-range
    START...END --config-json RUN_CONFIG` runs (dagster/_cli/asset.py), in this process: the code
    location built from the settings read now, the implicit job of the selected assets and their checks,
    one run over the range on the in-process executor (the code location's default)."""
    from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

    from crypto_platform.definitions import build_definitions
    from crypto_platform.platform_settings import load_settings

    repo = build_definitions(load_settings()).get_repository_def()
    keys = dg.AssetSelection.from_coercible(selection.split(",")).resolve(repo.asset_graph)
    job = repo.get_implicit_job_def_for_assets(keys)
    assert job is not None, f"{selection}: the assets do not share one PartitionsDefinition"
    start, end = partition_range.split("...")
    tags = {ASSET_PARTITION_RANGE_START_TAG: start, ASSET_PARTITION_RANGE_END_TAG: end}
    return job.execute_in_process(
        run_config=run_config, instance=instance, asset_selection=list(keys), tags=tags
    )


def forked_race(n: int, target: Callable[..., None], *args: object) -> list:
    """`n` forked processes (what this process imported comes along: no fresh interpreter's imports)
    calling `target(*args, barrier, results)`, which waits on the barrier so all go at the same instant
    and puts its outcome on `results`; the outcomes."""
    ctx = mp.get_context("fork")
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, barrier, results)) for _ in range(n)]
    for p in procs:
        p.start()
    out = [results.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    return out
