"""Latency and throughput of the prediction API's "latest prediction", cached vs uncached, vs DuckDB.

Run from the repository root:  ./run python -m bench.serving  [--requests N] [--rounds R]  (~1 min)

In a temporary folder: an instruments file with 30 synthetic instruments, and three days of
minute predictions per instrument written through the platform (`ml.serving.prediction_rows` -> the
lake resource's atomic `write_partition`, exactly what gold/predictions writes). Then `./run serve`
(`python -m crypto_platform.serving`, uvicorn) is started twice on 127.0.0.1 - cache on, cache off -
and one keep-alive HTTP client (httpx) sends requests one after the other:

- `latest/{instrument}`: one instrument per request, cycling through the 30;
- `latest` (all): the 30 newest predictions in one response.

Beside them, the same questions asked of DuckDB directly from Python (no HTTP): the service's own
query (`serving.queries`, the newest partition file per instrument) and the obvious SQL a client
would write over the whole table (`read_parquet` of every partition, filtered on the instrument).
Every answer is checked against DuckDB once. Writes bench/SERVING.md (medians over rounds).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import duckdb
import fastapi
import httpx
import numpy as np
import polars as pl
import uvicorn

from crypto_platform import tables
from crypto_platform.ml.serving import prediction_rows
from crypto_platform.partitions import DayPartition
from crypto_platform.resources.lake import LakeResource
from crypto_platform.serving import queries
from crypto_platform.serving.app import create_app
from crypto_platform.serving.settings import ServingSettings
from crypto_platform.settings import Instrument, load_universe

REPO = Path(__file__).resolve().parent.parent
N_INSTRUMENTS = 30
DAYS = 3
LAST_DAY = date(2026, 1, 15)
TARGET_P99_MS = 10.0


def write_lake(tmp: Path) -> tuple[Path, LakeResource, list[Instrument]]:
    """30 synthetic instruments and DAYS days of minute predictions each, written as the platform does."""
    inst_file = tmp / "instruments.yaml"
    lines = ['start_date: "2025-12-01"', "instruments:"]
    lines += [
        f"  - {{exchange: sim, symbol: S{i:02d}/USDT, source: synthetic}}" for i in range(N_INSTRUMENTS)
    ]
    inst_file.write_text("\n".join(lines) + "\n")
    universe = load_universe(inst_file)
    lake = LakeResource(root=str(tmp / "lake"))
    info = SimpleNamespace(name="bench_model", version=7, horizon=5)
    rng = np.random.default_rng(1)
    for inst in universe.instruments:
        for d in range(DAYS):
            part = DayPartition(inst, LAST_DAY - timedelta(days=DAYS - 1 - d))
            ts = pl.datetime_range(part.start, part.end, "1m", closed="left", eager=True, time_zone="UTC")
            feats = pl.DataFrame({"exchange": inst.exchange, "symbol": inst.symbol, "ts": ts})
            close = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, ts.len())))
            candles = feats.with_columns(pl.Series("close", close))
            rows = prediction_rows(feats, candles, rng.normal(0, 1e-4, ts.len()), info, True)
            lake.write_partition(rows, tables.PREDICTIONS, part)
    return inst_file, lake, list(universe.instruments)


def percentile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def timed(fn: Callable[[int], object], n: int, warmup: int = 30) -> dict[str, float]:
    """Latencies of n sequential calls fn(0..n-1) after a warm-up: p50, p99 (ms) and calls per second."""
    for i in range(warmup):
        fn(i)
    lat = []
    start = time.perf_counter()
    for i in range(n):
        t = time.perf_counter()
        fn(i)
        lat.append((time.perf_counter() - t) * 1e3)
    wall = time.perf_counter() - start
    return {"p50": percentile(lat, 0.5), "p99": percentile(lat, 0.99), "rps": n / wall}


def asgi_caller(app, path: Callable[[int], str]) -> Callable[[int], object]:
    """Call the ASGI app in this process (no socket, no HTTP parsing): the service's own cost."""
    loop = asyncio.new_event_loop()

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def call(p: str) -> list[dict]:
        sent: list[dict] = []

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": p,
            "raw_path": p.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
        }
        await app(scope, receive, send)
        assert sent[0]["status"] == 200, sent
        return sent

    return lambda i: loop.run_until_complete(call(path(i)))


class RawClient:
    """A minimal keep-alive HTTP/1.1 GET client on one socket: the server's latency as seen on the wire,
    without a Python HTTP library's own per-request cost (httpx is measured separately)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock = self._connect()

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def get(self, path: str) -> bytes:
        try:
            return self._get(path)
        except ConnectionError:  # uvicorn closes a connection idle for 5 s (between scenarios)
            self.sock.close()
            self.sock = self._connect()
            return self._get(path)

    def _get(self, path: str) -> bytes:
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        buf, need, length = b"", None, 0
        while need is None or len(buf) < need:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("server closed the connection")
            buf += chunk
            if need is None and b"\r\n\r\n" in buf:
                head = buf.split(b"\r\n\r\n", 1)[0]
                if not head.startswith(b"HTTP/1.1 200"):
                    raise AssertionError(head.decode())
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                need = len(head) + 4 + length
        return buf[need - length :]

    def close(self) -> None:
        self.sock.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Server:
    """`python -m crypto_platform.serving` in a subprocess on a free 127.0.0.1 port."""

    def __init__(self, inst_file: Path, lake: LakeResource, cache: bool) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        env = {
            **os.environ,
            "PORT": str(self.port),
            "CRYPTO_LAKE_ROOT": lake.root,
            "CRYPTO_PLATFORM_INSTRUMENTS": str(inst_file),
            "CRYPTO_SERVING_CACHE": "true" if cache else "false",
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "crypto_platform.serving"],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        log = []
        for line in self.proc.stdout:  # type: ignore[union-attr]
            log.append(line)
            if "Uvicorn running on" in line:
                break
        else:
            raise RuntimeError("server did not start:\n" + "".join(log))
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=30)
        self.raw = RawClient(self.port)

    def close(self) -> None:
        self.client.close()
        self.raw.close()
        self.proc.terminate()
        self.proc.wait(30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=1000, help="requests per cached scenario and round")
    ap.add_argument("--uncached", type=int, default=200, help="requests per uncached scenario and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--output", type=Path, default=REPO / "bench" / "SERVING.md")
    args = ap.parse_args()
    load_before = os.getloadavg()
    cpu0 = time.process_time()
    with tempfile.TemporaryDirectory(prefix="bench_serving_") as d:
        tmp = Path(d)
        inst_file, lake, insts = write_lake(tmp)
        keys = [i.key for i in insts]
        con = queries.connect()
        glob = lake.table_glob(tables.PREDICTIONS)
        naive_one = (
            f"select {', '.join(queries.PREDICTION_COLUMNS)} from read_parquet(?, hive_partitioning = true) "
            "where instrument = ? order by ts desc limit 1"
        )
        naive_all = (
            f"select {', '.join(queries.PREDICTION_COLUMNS)} from read_parquet(?, hive_partitioning = true) "
            "qualify row_number() over (partition by instrument order by ts desc) = 1"
        )
        truth = {r[0]: r for r in con.execute(naive_all, [glob]).fetchall()}
        servers = {
            "cached": Server(inst_file, lake, cache=True),
            "uncached": Server(inst_file, lake, cache=False),
        }
        try:
            for srv in servers.values():  # every answer equals DuckDB's
                for k in keys:
                    got = srv.client.get(f"/v1/predictions/latest/{k}").json()
                    assert got["predicted_return"] == truth[k][7] and got["ts"].startswith(
                        truth[k][3].strftime("%Y-%m-%dT%H:%M")
                    ), (k, got)
                every = srv.client.get("/v1/predictions/latest").json()["predictions"]
                assert [i["instrument"] for i in every] == keys

            def http(srv: Server, path: Callable[[int], str]) -> Callable[[int], object]:
                return lambda i: srv.raw.get(path(i))

            def via_httpx(srv: Server, path: Callable[[int], str]) -> Callable[[int], object]:
                def call(i: int) -> object:
                    r = srv.client.get(path(i))
                    assert r.status_code == 200
                    return r

                return call

            one = lambda i: f"/v1/predictions/latest/{keys[i % len(keys)]}"  # noqa: E731
            app = create_app(ServingSettings(lake_root=lake.root, instruments_path=inst_file))
            few = max(1, args.uncached // 2)  # the slow all-30 uncached questions
            scenarios: dict[str, tuple[Callable[[int], object], int]] = {
                "ASGI in process (no socket), cached: latest/{instrument}": (
                    asgi_caller(app, one),
                    args.requests,
                ),
                "ASGI in process (no socket), cached: latest (all 30)": (
                    asgi_caller(app, lambda i: "/v1/predictions/latest"),
                    args.requests,
                ),
                "HTTP, cached: latest/{instrument}": (http(servers["cached"], one), args.requests),
                "HTTP, cached: latest (all 30)": (
                    http(servers["cached"], lambda i: "/v1/predictions/latest"),
                    args.requests,
                ),
                "HTTP, uncached: latest/{instrument}": (http(servers["uncached"], one), args.uncached),
                "HTTP, uncached: latest (all 30)": (
                    http(servers["uncached"], lambda i: "/v1/predictions/latest"),
                    few,
                ),
                "HTTP through httpx (client's cost included), cached: latest/{instrument}": (
                    via_httpx(servers["cached"], one),
                    args.requests,
                ),
                "HTTP through httpx (client's cost included), cached: latest (all 30)": (
                    via_httpx(servers["cached"], lambda i: "/v1/predictions/latest"),
                    args.requests,
                ),
                "DuckDB in Python, the service's query: one instrument": (
                    lambda i: queries.latest_predictions(con, lake, [insts[i % len(insts)]]),
                    args.uncached,
                ),
                "DuckDB in Python, the service's query: all 30": (
                    lambda i: queries.latest_predictions(con, lake, insts),
                    few,
                ),
                "DuckDB in Python, SQL over the whole table: one instrument": (
                    lambda i: con.execute(naive_one, [glob, keys[i % len(keys)]]).fetchall(),
                    args.uncached,
                ),
                "DuckDB in Python, SQL over the whole table: all 30": (
                    lambda i: con.execute(naive_all, [glob]).fetchall(),
                    few,
                ),
            }
            results: dict[str, list[dict[str, float]]] = {name: [] for name in scenarios}
            for _ in range(args.rounds):
                for name, (fn, n) in scenarios.items():
                    results[name].append(timed(fn, n))
            server_cpu = sum(cpu_seconds(srv.proc.pid) for srv in servers.values())
        finally:
            for srv in servers.values():
                srv.close()
    cpu = time.process_time() - cpu0 + server_cpu
    load_after = os.getloadavg()
    med = {
        name: {m: statistics.median(r[m] for r in rs) for m in ("p50", "p99", "rps")}
        for name, rs in results.items()
    }
    write_report(args, med, load_before, load_after, cpu)
    print(args.output.read_text())


def write_report(args, med, load_before, load_after, cpu) -> None:
    cached = med["HTTP, cached: latest/{instrument}"]
    uncached = med["HTTP, uncached: latest/{instrument}"]
    verdict = "met" if cached["p99"] <= TARGET_P99_MS else "NOT met"
    lines = [
        '# Prediction API: latency of "latest prediction" (`bench/serving.py`)',
        "",
        "```bash",
        "./run python -m bench.serving",
        "```",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()} with {os.cpu_count()} "
        f"CPUs (shared; load average {load_before[0]:.2f} before, {load_after[0]:.2f} after), Python "
        f"{platform.python_version()}, FastAPI {fastapi.__version__}, uvicorn {uvicorn.__version__}, "
        f"DuckDB {duckdb.__version__}, httpx {httpx.__version__}. CPU used (client + both servers) "
        f"{cpu:.0f} s.",
        "",
        f"Data: {N_INSTRUMENTS} synthetic instruments x {DAYS} days of minute predictions "
        f"({N_INSTRUMENTS * DAYS * 1440:,} rows, one Parquet partition per instrument and day) written "
        "through `ml.serving.prediction_rows` and `LakeResource.write_partition`. Servers: `python -m "
        "crypto_platform.serving` (uvicorn, 1 worker, access log off) on 127.0.0.1, cache on (default: "
        "re-validated against the lake files at most every 1 s) and off (`CRYPTO_SERVING_CACHE=false`: "
        "every request queries DuckDB). Client: one keep-alive connection, requests one after the other "
        '(requests/s = 1 / mean latency of this closed loop, not the server\'s capacity); "HTTP" rows use '
        "a minimal socket client (`RawClient`: the latency on the wire), the httpx rows show what a "
        "Python client adds. "
        f"Each scenario: {args.rounds} rounds of {args.requests} (cached), {args.uncached} (uncached, "
        f"DuckDB, one instrument) or {max(1, args.uncached // 2)} (uncached, all 30) requests after 30 "
        'warm-up requests; the table shows the median over the rounds. "ASGI in process" calls the same '
        "application object directly (what one cached request costs the service itself, without the "
        "socket, the HTTP parsing and the client).",
        "",
        "| scenario | p50 ms | p99 ms | requests/s |",
        "|---|---:|---:|---:|",
    ]
    for name, m in med.items():
        lines.append(f"| {name} | {m['p50']:.2f} | {m['p99']:.2f} | {m['rps']:,.0f} |")
    lines += [
        "",
        f'Target p99 <= {TARGET_P99_MS:g} ms for a cached "latest prediction": **{verdict}** '
        f"({cached['p99']:.2f} ms). Cached vs uncached, one instrument: p50 "
        f"{uncached['p50'] / cached['p50']:.1f}x lower, "
        f"requests/s {cached['rps'] / uncached['rps']:.1f}x higher.",
        "",
        "Reading it: an uncached request costs the lake listing + one DuckDB query of the newest "
        'partition file (the service never scans the whole table); "SQL over the whole table" is what a '
        "client querying the `gold.predictions` view would pay, and grows with the history kept. A cached "
        "request costs the HTTP round trip, FastAPI's validation and JSON encoding, plus one "
        "`stat` per instrument at most once a second.",
        "",
    ]
    args.output.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
