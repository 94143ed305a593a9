"""The backfill bench's platform: a temp root, N synthetic instruments, `dagster-daemon run`, and the
commands a user types (`crypto-platform backfill`, `dagster asset materialize`), each in its own session
so that the sampler sees every process they start."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

from bench.backfill.procs import Sampler, wait_gone
from bench.freshness.harness import PROJECT, base_env, log, make_home

BASES = ["BTC", "ETH", "SOL", "BNB", "XRP", "DOGE", "ADA", "AVAX", "LINK", "DOT", "LTC", "TRX"]
FEATURES_AND_LABELS = "group:raw or group:bronze or group:silver or key:gold/features or key:gold/labels"
PREDICTIONS = "key:gold/predictions"
TRAINING = (
    "key:gold/training_set or key:gold/training_set_summary or key:gold/model or key:gold/model_evaluations"
)
_BACKFILL_ID = re.compile(r"^backfill (\S+):", re.MULTILINE)
# `dagster-daemon` with another interval between backfill daemon iterations (Dagster's is a fixed 30 s,
# read when the loop starts; no instance setting exists): a backfill waits up to one interval to be
# picked up and one more after its last run to be marked done, which is most of a tiny measurement.
# Optionally another workspace reload interval too (Dagster's fixed 60 s: each reload starts a fresh
# code server process, seconds of CPU, and reloads the code location in the daemon). Arguments: the
# backfill interval and the reload interval ('-': Dagster's), then the daemon's own arguments.
_DAEMON_WITH_INTERVAL = (
    "import sys\n"
    "import dagster._daemon.controller as c\n"
    "for name in ('DEFAULT_DAEMON_INTERVAL_SECONDS', 'RELOAD_WORKSPACE_INTERVAL'):\n"
    "    if (seconds := sys.argv.pop(1)) != '-':\n"
    "        setattr(c, name, float(seconds))\n"
    "from dagster._daemon.cli import main\n"
    "sys.argv[0] = 'dagster-daemon'\n"
    "main()\n"
)


def _bin(script: str) -> str:
    """A console script of this environment (`dagster-daemon`, `crypto-platform`, `dagster`)."""
    return str(Path(sys.executable).parent / script)


def write_universe(folder: Path, rates: list[float]) -> tuple[Path, list[str]]:
    """An instruments file of one synthetic `sim` instrument per rate (trades a minute, before the
    simulator's intraday activity curve), each with the demo's learnable `informed_flow: 1.0`."""
    lines = ['start_date: "2024-01-01"', "instruments:"]
    keys = []
    for k, rate in enumerate(rates):
        base = BASES[k] if k < len(BASES) else f"S{k:02d}"
        entry = f"exchange: sim, symbol: {base}/USDT, source: synthetic, trades_per_minute: {rate:g}"
        lines.append(f"  - {{{entry}, informed_flow: 1.0}}")
        keys.append(f"sim.{base}-USDT")
    path = folder / "instruments.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path, keys


def day_range(days: int, last: date) -> list[date]:
    """The `days` UTC days ending with `last`."""
    return [last - timedelta(days=days - 1 - k) for k in range(days)]


@dataclass
class Platform:
    """One measured platform: its temp root, environment, instance home, and the running daemon."""

    root: Path
    env: dict[str, str]
    home: Path
    instruments: list[str]
    sampler: Sampler
    daemon: subprocess.Popen | None = None

    @classmethod
    def create(
        cls, root: Path, universe: Path, instruments: list[str], per_run: int, sampler: Sampler
    ) -> Platform:
        """Temp DAGSTER_HOME (the repo's dagster.yaml, storage under `root`), lake, warehouse, MLflow,
        the instruments file, and the backfill policy (`CRYPTO_BACKFILL_PARTITIONS_PER_RUN=per_run`)."""
        from crypto_platform.automation.instance_storage import ensure_instance_storage

        home = make_home(root)
        env = base_env(root, home)
        ensure_instance_storage(home)  # as ./run does before any Dagster process: the daemon and CLI race
        env.update(
            CRYPTO_INSTRUMENTS=str(universe),
            CRYPTO_BACKFILL_PARTITIONS_PER_RUN=str(per_run),
        )
        return cls(root, env, home, instruments, sampler)

    def start_daemon(
        self, backfill_interval_s: float | None = None, workspace_reload_s: float | None = None
    ) -> None:
        """`dagster-daemon run` on the repo's workspace (backfill daemon, run queue, run monitoring);
        `backfill_interval_s` replaces Dagster's fixed 30 s between backfill daemon iterations,
        `workspace_reload_s` its fixed 60 s between workspace reloads (each a new code server)."""
        fh = (self.root / "daemon.log").open("a")
        daemon = [_bin("dagster-daemon")]
        if backfill_interval_s is not None or workspace_reload_s is not None:
            given = ["-" if v is None else str(v) for v in (backfill_interval_s, workspace_reload_s)]
            daemon = [sys.executable, "-c", _DAEMON_WITH_INTERVAL, *given]
        self.daemon = subprocess.Popen(
            [*daemon, "run", "-w", str(PROJECT / "workspace.yaml")],
            cwd=PROJECT,
            env=self.env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.sampler.watch(self.daemon.pid)

    def stop_daemon(self) -> None:
        """SIGTERM to the daemon's session (SIGKILL after 90 s); waits until none of it is left."""
        if self.daemon is None:
            return
        try:
            os.killpg(self.daemon.pid, signal.SIGTERM)
            self.daemon.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(self.daemon.pid, signal.SIGKILL)
            self.daemon.wait(timeout=30)
        except ProcessLookupError:
            pass
        if not wait_gone(self.daemon.pid, 30):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.daemon.pid, signal.SIGKILL)
        self.daemon = None

    def command(self, args: list[str], logname: str) -> str:
        """Run a console script (or a command line starting with an absolute path) in its own (sampled)
        session; its output, or exit naming the log."""
        logfile = self.root / logname
        with logfile.open("a") as fh:
            fh.write(f"\n$ {' '.join(args)}\n")
            fh.flush()
            proc = subprocess.Popen(
                args if Path(args[0]).is_absolute() else [_bin(args[0]), *args[1:]],
                cwd=PROJECT,
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=fh,
                text=True,
                start_new_session=True,
            )
            self.sampler.watch(proc.pid)
            out, _ = proc.communicate()
            fh.write(out)
        if proc.returncode:
            sys.exit(f"bench: `{' '.join(args)}` failed (exit {proc.returncode}); see {logfile}")
        return out

    def submit_backfill(self, selection: str, partition_range: str, config: dict | None = None) -> str:
        """`crypto-platform backfill --select ... --partition-range ... [--config-json ...]`; returns the
        backfill id."""
        args = ["crypto-platform", "backfill", "--select", selection, "--partition-range", partition_range]
        out = self.command([*args, "--config-json", json.dumps(config)] if config else args, "cli.log")
        found = _BACKFILL_ID.search(out)
        if not found:
            sys.exit(f"bench: no backfill id in the output of crypto-platform backfill: {out!r}")
        return found.group(1)

    def train(self, trials: int, window_days: float, eval_from: date) -> None:
        """Training set + model with `dagster asset materialize` (one run in the CLI's process): tuned and
        fitted on the bars before `eval_from`, evaluated from it on."""
        config = {
            "ops": {
                "gold_training_set": {"config": {"window_days": window_days}},
                "gold_model": {"config": {"n_trials": trials, "eval_from": eval_from.isoformat()}},
            }
        }
        # imported here: the platform reads its settings once per process, after the bench has set them
        from crypto_platform.cli import materialize_command

        self.command(materialize_command(TRAINING, config=config), "train.log")

    def wait_backfill(self, backfill_id: str, timeout: float) -> str:
        """Wait until the daemon has finished the backfill (all its runs done); returns its status."""
        import dagster as dg
        from dagster._core.execution.backfill import BulkActionStatus

        deadline = time.monotonic() + timeout
        with dg.DagsterInstance.from_config(str(self.home)) as instance:
            while time.monotonic() < deadline:
                if self.daemon is not None and self.daemon.poll() is not None:
                    sys.exit(f"bench: dagster-daemon exited ({self.daemon.returncode}); see {self.root}")
                status = instance.get_backfill(backfill_id).status
                busy = instance.get_runs_count(
                    dg.RunsFilter(
                        tags={"dagster/backfill": backfill_id},
                        statuses=[
                            dg.DagsterRunStatus.QUEUED,
                            dg.DagsterRunStatus.NOT_STARTED,
                            dg.DagsterRunStatus.STARTING,
                            dg.DagsterRunStatus.STARTED,
                            dg.DagsterRunStatus.CANCELING,
                        ],
                    )
                )
                if status != BulkActionStatus.REQUESTED and not busy:
                    return status.value
                time.sleep(2)
        log(f"backfill {backfill_id}: not finished after {timeout:.0f} s")
        return "TIMED_OUT"
