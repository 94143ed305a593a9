"""Fault injection at the lake's write points: `./run python -m bench.faults` -> bench/FAULTS.md.

Each scenario runs the real raw -> bronze -> silver assets (Dagster `materialize`, synthetic market)
in child processes on a fresh lake, injects one fault, then runs the documented recovery and checks
bronze against the simulator's tape (the trades the source holds for the covered window):

- **kill -9 at write point k**: the child SIGKILLs itself at its k-th atomic rename (`os.replace`):
  raw batch, raw manifest, bronze, rejects, candles 1m / 1h / 5m. Recovery: run the partition again.
- **concurrent runs**: two processes materialize the same partition at once, with different clocks.
- **truncated raw batch**: a committed batch file cut to 200 bytes. Recovery: `refetch: true`.
- **uncommitted batch**: a batch file with no manifest entry (what a kill between batch and
  manifest leaves). Recovery: run the partition again (re-fetches and commits).

Columns: detected (the faulty run failed or was refused, or the fault left nothing to detect),
lost (tape trades missing from bronze), duplicated (bronze rows beyond distinct trade ids), time to
recover (wall seconds of the recovery runs, process start included).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.report import table, write_report

ROOT = Path(__file__).resolve().parent.parent
KEY = "2024-03-04|sim.BTC-USDT"
DAY_START = datetime(2024, 3, 4, tzinfo=UTC)
INSTRUMENTS = (
    "start_date: '2024-01-01'\ninstruments:\n"
    "  - {exchange: sim, symbol: BTC/USDT, source: synthetic, trades_per_minute: 200}\n"
    "  - {exchange: binance, symbol: BTC/USDT, source: replay, path: '{replay}'}\n"
)
REPLAY_KEY = "2024-03-04|binance.BTC-USDT"
# Bad rows of every kind, each between good ones (the good rows' times order the file).
BAD_ROWS = [
    ("", "empty timestamp"),
    ("not a time", "not a time"),
    ("01/01/2024 12:01:15", "ambiguous day/month date"),
    ("2024-02-30 00:00:00", "impossible date"),
    ("1000000000", "epoch of 2001"),
    ("2099-01-01T00:00:00Z", "in the future"),
    ("{ts}", "negative price"),
    ("{ts}", "zero amount"),
    ("{ts}", "unknown side"),
    ("{ts}", "duplicate trade id"),
]


@dataclass(frozen=True)
class Outcome:
    """One injected fault and what it cost."""

    fault: str
    detected: str
    lost: int
    duplicated: int
    recover_s: float
    note: str = ""


@dataclass
class FaultsResult:
    """Every scenario's outcome, plus the set-up the report states."""

    outcomes: list[Outcome] = field(default_factory=list)
    trades_per_minute: int = 200


# -- the child: one materialization, optionally killed at its k-th atomic rename --------------------


def child(now: str, kill_at: int, refetch: bool, key: str = KEY) -> int:
    """Materialize raw -> silver for `key` at `now`; SIGKILL at the `kill_at`-th os.replace (0: never)."""
    import dagster as dg

    from crypto_platform.assets import ingest, silver
    from crypto_platform.resources.lake import LakeResource
    from crypto_platform.resources.sources import TradeSourcesResource
    from crypto_platform.resources.warehouse import WarehouseResource

    if kill_at:
        real, calls = os.replace, [0]

        def replace(src, dst):  # the fault: die before the k-th commit point
            calls[0] += 1
            if calls[0] == kill_at:
                Path(os.environ["FAULT_NOTE"]).write_text(_write_point(str(dst)))
                os.kill(os.getpid(), signal.SIGKILL)
            return real(src, dst)

        os.replace = replace
    config = {"ops": {"raw__trades": {"config": {"refetch": True}}}} if refetch else None
    result = dg.materialize(
        dg.load_assets_from_modules([ingest, silver]),
        partition_key=key,
        run_config=config,
        resources={
            "lake": LakeResource(root=os.environ["CRYPTO_LAKE_ROOT"]),
            "warehouse": WarehouseResource(path=os.environ["CRYPTO_WAREHOUSE_PATH"]),
            "trade_sources": TradeSourcesResource(now=now),
        },
        raise_on_error=False,
    )
    return 0 if result.success else 1


def _write_point(path: str) -> str:
    """A readable name for the file an atomic rename was about to replace."""
    parts = Path(path).parts
    if "lake" in parts:
        i = parts.index("lake")
        return f"{parts[i + 1]}/{parts[i + 2]} {Path(path).name.split('-')[0]}"
    return Path(path).name


# -- the parent: scenarios -----------------------------------------------------------------------


class Lab:
    """A fresh lake and instruments file; runs children and checks bronze against the tape."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.note = base / "killed_at.txt"
        self.env = {
            **os.environ,
            "CRYPTO_LAKE_ROOT": str(base / "lake"),
            "CRYPTO_WAREHOUSE_PATH": str(base / "warehouse.duckdb"),
            "FAULT_NOTE": str(self.note),
        }

    def killed_at(self) -> str:
        return self.note.read_text() if self.note.exists() else "no write left (run finished)"

    def start(
        self, hour: int, *, kill_at: int = 0, refetch: bool = False, key: str = KEY
    ) -> subprocess.Popen:
        now = (DAY_START + timedelta(hours=hour)).isoformat()
        cmd = [sys.executable, "-m", "bench.faults", "--child", now, str(kill_at), str(int(refetch)), key]
        return subprocess.Popen(
            cmd, cwd=ROOT, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def run(self, hour: int, **kw: object) -> tuple[int, float]:
        started = time.monotonic()
        code = self.start(hour, **kw).wait()  # type: ignore[arg-type]
        return code, time.monotonic() - started

    def check(self) -> tuple[int, int]:
        """(lost, duplicated) of bronze against the simulator's tape over the committed coverage."""
        from crypto_platform import tables
        from crypto_platform.partitions import parse_key
        from crypto_platform.resources.lake import LakeResource
        from crypto_platform.sources.synthetic import SyntheticSource

        lake = LakeResource(root=self.env["CRYPTO_LAKE_ROOT"])
        part = parse_key(KEY)
        cov = lake.read_manifest(tables.RAW_TRADES, part).coverage
        bronze = lake.read_partition(tables.BRONZE_TRADES, part)
        ids = set() if bronze is None else set(bronze["trade_id"].to_list())
        dupes = 0 if bronze is None else bronze.height - len(ids)
        if cov.covered_to is None:
            return 0, dupes
        tape = SyntheticSource(seed=7, now=lambda: cov.covered_to).fetch(
            part.instrument, part.start, cov.covered_to
        )
        return len(set(tape.trades["trade_id"].to_list()) - ids), dupes

    def batch_files(self) -> list[Path]:
        folder = Path(self.env["CRYPTO_LAKE_ROOT"]) / "raw" / "trades"
        return sorted(folder.rglob("batch-*.parquet"))


def kill_scenario(base: Path, k: int) -> Outcome:
    lab = Lab(base)
    assert lab.run(6)[0] == 0  # a committed morning
    code, _ = lab.run(12, kill_at=k)
    rc, took = lab.run(12)
    lost, dupes = lab.check()
    detected = "yes (run killed)" if code != 0 else "no"
    return Outcome(
        f"kill -9 at write {k} ({lab.killed_at()})", detected, lost, dupes, took, f"recovery exit {rc}"
    )


def concurrent_scenario(base: Path) -> Outcome:
    lab = Lab(base)
    a, b = lab.start(12), lab.start(18)
    codes = (a.wait(), b.wait())
    rc, took = lab.run(18)
    lost, dupes = lab.check()
    return Outcome(
        "two runs of one partition at once",
        "n/a (both commit)",
        lost,
        dupes,
        took,
        f"exits {codes}, then {rc}",
    )


def truncated_scenario(base: Path) -> Outcome:
    lab = Lab(base)
    assert lab.run(12)[0] == 0
    batch = lab.batch_files()[0]
    batch.write_bytes(batch.read_bytes()[:200])
    code, _ = lab.run(12)
    rc, took = lab.run(12, refetch=True)
    lost, dupes = lab.check()
    return Outcome(
        "truncated raw batch file",
        "yes (bronze fails)" if code else "no",
        lost,
        dupes,
        took,
        f"refetch exit {rc}",
    )


def uncommitted_scenario(base: Path) -> Outcome:
    lab = Lab(base)
    code, _ = lab.run(12, kill_at=2)  # the batch is renamed, the manifest never written
    orphans = len(lab.batch_files())
    rc, took = lab.run(12)
    lost, dupes = lab.check()
    return Outcome(
        "batch written, manifest never committed",
        "yes (run killed)" if code else "no",
        lost,
        dupes,
        took,
        f"{orphans} orphan batch; recovery exit {rc}",
    )


def write_bad_rows(path: Path) -> int:
    """A replay CSV of good trades with every kind of bad row between them; returns its row count."""
    lines = ["id,timestamp,price,amount,side"]
    for i, (ts, kind) in enumerate(BAD_ROWS):
        good = DAY_START + timedelta(hours=10, minutes=i)
        lines.append(f"{100 + 2 * i},{good:%Y-%m-%dT%H:%M:%SZ},42000.5,0.25,buy")
        at = (good + timedelta(seconds=30)).strftime("%Y-%m-%d %H:%M:%S")
        price, amount, side, tid = 42001.0, 0.5, "sell", 101 + 2 * i
        price = -1.0 if kind == "negative price" else price
        amount = 0.0 if kind == "zero amount" else amount
        side = "sideways" if kind == "unknown side" else side
        tid = 100 if kind == "duplicate trade id" else tid
        lines.append(f"{tid},{ts.format(ts=at)},{price},{amount},{side}")
    path.write_text("\n".join(lines) + "\n")
    return len(lines) - 1


def bad_rows_scenario(base: Path) -> Outcome:
    """Every row of a replayed file must end in bronze or in rejects with a reason (none dropped)."""
    import duckdb

    lab = Lab(base)
    csv = Path(os.environ["CRYPTO_INSTRUMENTS"]).parent / "bad_rows.csv"
    rows = write_bad_rows(csv)
    code, took = lab.run(23, key=REPLAY_KEY)
    lake = Path(lab.env["CRYPTO_LAKE_ROOT"])
    kept = duckdb.sql(
        f"select count(*) from read_parquet('{lake}/bronze/trades/*/*/part.parquet')"
    ).fetchall()
    rejects = f"read_parquet('{lake}/bronze/trade_rejects/*/*/part.parquet')"
    rejected = duckdb.sql(f"select count(*), count(distinct reason) from {rejects}").fetchall()
    accounted = kept[0][0] + rejected[0][0]
    note = f"{rows} rows: {kept[0][0]} kept, {rejected[0][0]} rejected with {rejected[0][1]} distinct reasons"
    return Outcome(
        "bad replay rows (10 kinds)",
        "yes (rejects)" if code == 0 else "run failed",
        max(rows - accounted, 0),
        max(accounted - rows, 0),
        took,
        note,
    )


def broken_model_scenario(base: Path) -> Outcome:
    """A truncated model artifact is a named error at load (never a LightGBM abort); re-register repairs."""
    from crypto_platform import tables
    from crypto_platform.ml import registry
    from crypto_platform.ml.dataset import training_frame
    from crypto_platform.ml.evaluation import skill_gate
    from crypto_platform.ml.training import train
    from crypto_platform.partitions import parse_key
    from crypto_platform.resources.lake import LakeResource
    from crypto_platform.transforms.features import FEATURE_COLUMNS, build_features
    from crypto_platform.transforms.labels import forward_return_labels

    lab = Lab(base)
    assert lab.run(23)[0] == 0
    candles = LakeResource(root=lab.env["CRYPTO_LAKE_ROOT"]).read_partition(tables.CANDLES_1M, parse_key(KEY))
    frame = training_frame(build_features(candles), forward_return_labels(candles, 5))
    uri = f"sqlite:///{base / 'mlflow.db'}"

    def register() -> registry.ModelVersionInfo:
        result = train(frame, FEATURE_COLUMNS, horizon=5, n_trials=2, n_folds=2, max_rounds=40)
        decision = skill_gate(result.evaluation.model, result.evaluation.momentum, None)
        return registry.log_and_register(
            result, tracking_uri=uri, model_name="faults", feature_cols=FEATURE_COLUMNS,
            reference_features=frame.head(200), input_example=frame.head(5), decision=decision,
            artifact_location=str(base / "artifacts"),
        )  # fmt: skip

    info = register()
    model_file = next((base / "artifacts").rglob("model.lgb"))
    model_file.write_bytes(model_file.read_bytes()[:100])
    try:
        registry.load_alias(uri, "faults", str(info.alias))
        detected = "no"
    except registry.ModelArtifactError as exc:
        detected = f"yes ({type(exc).__name__})"
    started = time.monotonic()
    repaired = register()
    registry.load_alias(uri, "faults", str(repaired.alias))
    return Outcome(
        "truncated model artifact", detected, 0, 0, time.monotonic() - started, "repair: retrain + register"
    )


SCENARIOS = {
    "concurrent": concurrent_scenario,
    "truncated": truncated_scenario,
    "uncommitted": uncommitted_scenario,
    "bad-rows": bad_rows_scenario,
    "broken-model": broken_model_scenario,
}


def measure(kill_points: list[int], extra: list[str] | None = None) -> FaultsResult:
    """Run every scenario on a fresh lake each; see the module docstring."""
    result = FaultsResult()
    universe = Path(tempfile.mkdtemp(prefix="faults-universe-")) / "instruments.yaml"
    universe.write_text(INSTRUMENTS.replace("{replay}", str(universe.parent / "bad_rows.csv")))
    os.environ["CRYPTO_INSTRUMENTS"] = str(universe)  # children inherit it; fixed per process
    scenarios = [lambda b, k=k: kill_scenario(b, k) for k in kill_points]
    scenarios += [SCENARIOS[name] for name in (SCENARIOS if extra is None else extra)]
    for scenario in scenarios:
        with tempfile.TemporaryDirectory(prefix="faults-") as tmp:
            outcome = scenario(Path(tmp))
        print(f"{outcome.fault}: lost {outcome.lost}, duplicated {outcome.duplicated}", flush=True)
        result.outcomes.append(outcome)
    return result


def render(result: FaultsResult) -> str:
    """The FAULTS.md report."""
    lines = [
        "# Fault injection: nothing lost, nothing duplicated",
        "",
        f"`./run python -m bench.faults` ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores). "
        f"Synthetic market, {result.trades_per_minute} trades/min, partition `{KEY}`; each scenario on a "
        "fresh lake, raw -> bronze -> silver by Dagster `materialize` in child processes. Lost and "
        "duplicated compare bronze with the simulator's tape over the committed coverage.",
        "",
        table(
            ["fault", "detected", "lost", "duplicated", "time to recover (s)", "note"],
            [
                [o.fault, o.detected, o.lost, o.duplicated, f"{o.recover_s:.1f}", o.note]
                for o in result.outcomes
            ],
        ),
    ]
    lost = sum(o.lost for o in result.outcomes)
    dupes = sum(o.duplicated for o in result.outcomes)
    lines += ["", f"Total lost: {lost}; total duplicated: {dupes}.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--child", nargs=4, metavar=("NOW", "KILL_AT", "REFETCH", "KEY"), help=argparse.SUPPRESS
    )
    parser.add_argument("--kill-points", default="1,2,3,4,5,6,7", help="write points to kill at")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="other scenarios to run")
    parser.add_argument("--output", default=str(ROOT / "bench" / "FAULTS.md"))
    args = parser.parse_args()
    if args.child:
        now, kill_at, refetch, key = args.child
        sys.exit(child(now, int(kill_at), refetch == "1", key))
    result = measure(
        [int(k) for k in args.kill_points.split(",") if k], [s for s in args.scenarios.split(",") if s]
    )
    write_report(Path(args.output), render(result))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
