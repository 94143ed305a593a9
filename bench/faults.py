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
)


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


def child(now: str, kill_at: int, refetch: bool) -> int:
    """Materialize raw -> silver for KEY at `now`; SIGKILL at the `kill_at`-th os.replace (0: never)."""
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
        partition_key=KEY,
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

    def start(self, hour: int, *, kill_at: int = 0, refetch: bool = False) -> subprocess.Popen:
        now = (DAY_START + timedelta(hours=hour)).isoformat()
        cmd = [sys.executable, "-m", "bench.faults", "--child", now, str(kill_at), str(int(refetch))]
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


def measure(kill_points: list[int]) -> FaultsResult:
    """Run every scenario on a fresh lake each; see the module docstring."""
    result = FaultsResult()
    universe = Path(tempfile.mkdtemp(prefix="faults-universe-")) / "instruments.yaml"
    universe.write_text(INSTRUMENTS)
    os.environ["CRYPTO_INSTRUMENTS"] = str(universe)  # children inherit it; fixed per process
    scenarios = [lambda b, k=k: kill_scenario(b, k) for k in kill_points]
    scenarios += [concurrent_scenario, truncated_scenario, uncommitted_scenario]
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
    parser.add_argument("--child", nargs=3, metavar=("NOW", "KILL_AT", "REFETCH"), help=argparse.SUPPRESS)
    parser.add_argument("--kill-points", default="1,2,3,4,5,6,7,8,9", help="write points to kill at")
    parser.add_argument("--output", default=str(ROOT / "bench" / "FAULTS.md"))
    args = parser.parse_args()
    if args.child:
        now, kill_at, refetch = args.child
        sys.exit(child(now, int(kill_at), refetch == "1"))
    result = measure([int(k) for k in args.kill_points.split(",") if k])
    write_report(Path(args.output), render(result))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
