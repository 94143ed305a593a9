"""The freshness bench's platform: temp DAGSTER_HOME, history, a model, `dagster dev` + live sensors."""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

PROJECT = Path(__file__).resolve().parents[2]


def log(msg: str) -> None:
    """Print a timestamped progress line."""
    print(f"[{datetime.now(UTC):%H:%M:%S}] {msg}", flush=True)


def make_home(root: Path) -> Path:
    """DAGSTER_HOME with the repo's dagster.yaml, its storage folders moved under `root`."""
    cfg = yaml.safe_load((PROJECT / "dagster.yaml").read_text())
    data = root / "dagster"
    cfg.setdefault("storage", {}).setdefault("sqlite", {})["base_dir"] = str(data / "storage")
    if "local_artifact_storage" in cfg:
        cfg["local_artifact_storage"].setdefault("config", {})["base_dir"] = str(data)
    if "compute_logs" in cfg:
        cfg["compute_logs"].setdefault("config", {})["base_dir"] = str(data / "compute_logs")
    home = root / "home"
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return home


def base_env(root: Path, home: Path) -> dict[str, str]:
    """Environment of the measured platform: its own DAGSTER_HOME, lake, warehouse and MLflow under `root`."""
    env = dict(os.environ)
    env.update(
        DAGSTER_HOME=str(home),
        CRYPTO_LAKE_ROOT=str(root / "lake"),
        CRYPTO_WAREHOUSE_PATH=str(root / "warehouse.duckdb"),
        MLFLOW_TRACKING_URI=f"sqlite:///{root / 'mlflow' / 'mlflow.db'}",
        MLFLOW_DISABLE_TELEMETRY="true",
        DO_NOT_TRACK="1",
        GX_ANALYTICS_ENABLED="false",
        PYTHONWARNINGS="ignore",
    )
    (root / "mlflow").mkdir(exist_ok=True)
    return env


def materialize(
    env: dict[str, str], logfile: Path, selection: str, *, rng: str | None = None, config: dict | None = None
) -> float:
    """Run `dagster asset materialize` (optionally over a partition range); returns its wall time (s)."""
    # imported here: the platform reads its settings once per process, after the bench has set them
    from crypto_platform.cli import materialize_command

    cmd = materialize_command(selection, rng, config)
    started = time.monotonic()
    with logfile.open("a") as fh:
        proc = subprocess.run(cmd, cwd=PROJECT, env=env, stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode:
        sys.exit(f"bench: `{' '.join(cmd[2:])}` failed; see {logfile}")
    return time.monotonic() - started


@dataclass(frozen=True)
class Prepared:
    """The history and model the live runs start from."""

    instruments: list[str]
    history: str  # the partition range materialized first
    model_version: str
    model_alias: str  # 'champion', or 'challenger' when the promotion gate refused it
    t_hist: float
    t_model: float

    @property
    def qualified(self) -> bool:
        """True when the served model passed the promotion gate (is the champion)."""
        return self.model_alias == "champion"


def _served_model(uri: str) -> tuple[str, str]:
    """(version, alias) of the model the live predictions will use: the champion, else the challenger
    (read from a local SQLite store without importing MLflow, as the predictions themselves do)."""
    from crypto_platform.ml import registry_lookup
    from crypto_platform.ml.model_info import CHALLENGER, CHAMPION, NoChampionError

    def version(alias: str) -> str:
        return str(registry_lookup.resolve(uri, "crypto_return_lgbm", alias).version)

    try:
        return version(CHAMPION), "champion"
    except NoChampionError:  # the promotion gate did not promote the model
        return version(CHALLENGER), "challenger"


BASES = ["BTC", "ETH", "SOL", "BNB", "XRP", "DOGE"]
HISTORY_INSTRUMENTS = 2  # the model is trained on yesterday of the first two (slow) instruments


def fast_count(n: int) -> int:
    """How many of `n` instruments trade at the fast rate: at least a third."""
    return math.ceil(n / 3)


def write_universe(root: Path, n: int, base_rate: float, fast_rate: float) -> Path:
    """An instruments file of `n` synthetic instruments on `sim`; the last `fast_count(n)` trade at
    `fast_rate` a minute, the others at `base_rate` (so yesterday's history, of the first ones, is small)."""
    fast = fast_count(n)
    lines = ['start_date: "2024-01-01"', "instruments:"]
    for k in range(n):
        base = BASES[k] if k < len(BASES) else f"S{k:02d}"
        rate = fast_rate if k >= n - fast else base_rate
        entry = f"exchange: sim, symbol: {base}/USDT, source: synthetic, trades_per_minute: {rate:g}"
        lines.append(f"  - {{{entry}}}")
    path = root / "instruments.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def prepare(env: dict[str, str], root: Path, trials: int) -> Prepared:
    """Yesterday's history for the first (slow) live instruments and a trained, registered model."""
    from crypto_platform.partitions import multi_key
    from crypto_platform.settings import load_universe

    live = [i.key for i in load_universe().instruments if i.source in ("synthetic", "ccxt")]
    sim = [i.key for i in load_universe().instruments if i.source == "synthetic"]
    if not sim or live != sim:
        sys.exit("bench: needs a universe of synthetic instruments only, listed together")
    rates = [i.options.get("trades_per_minute") for i in load_universe().instruments]
    hist = [k for k, r in zip(sim, rates, strict=True) if r == rates[0]][:HISTORY_INSTRUMENTS]
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    rng = f"{multi_key(yesterday, hist[0])}...{multi_key(yesterday, hist[-1])}"
    logfile = root / "prepare.log"
    t_hist = materialize(
        env,
        logfile,
        "group:raw or group:bronze or group:silver or key:gold/features or key:gold/labels",
        rng=rng,
    )
    log(f"history {rng} in {t_hist:.0f} s")
    t_model = materialize(
        env,
        logfile,
        "key:gold/training_set or key:gold/training_set_summary or key:gold/model or "
        "key:gold/model_evaluations",
        config={"ops": {"gold_model": {"config": {"n_trials": trials}}}},
    )
    version, alias = _served_model(env["MLFLOW_TRACKING_URI"])
    log(f"model trained in {t_model:.0f} s: v{version} ({alias})")
    return Prepared(sim, rng, version, alias, t_hist, t_model)


LOCATION = '''"""Generated by bench/freshness.py: the code location (with the live sensors and checks)."""
from crypto_platform.definitions import defs  # noqa: F401
'''


def write_workspace(root: Path) -> Path:
    """Write the code location and workspace that `dagster dev` loads for the measurement."""
    (root / "live_location.py").write_text(LOCATION)
    ws = {
        "load_from": [
            {
                "python_file": {
                    "relative_path": str(root / "live_location.py"),
                    "working_directory": str(PROJECT),
                    "location_name": "crypto_platform",
                }
            }
        ]
    }
    path = root / "workspace.yaml"
    path.write_text(yaml.safe_dump(ws))
    return path


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_dev(env: dict[str, str], workspace: Path, port: int, logfile: Path) -> subprocess.Popen:
    """Start `dagster dev` in its own process group (so it can be stopped with its children)."""
    fh = logfile.open("a")
    fh.write(f"\n===== dagster dev started {datetime.now(UTC).isoformat()} =====\n")
    fh.flush()
    cmd = [sys.executable, "-m", "dagster", "dev", "-w", str(workspace), "-h", "127.0.0.1", "-p", str(port)]
    # the code server's INFO lines say when the code location is loaded (the restart's timeline)
    cmd += ["--code-server-log-level", "info"]
    return subprocess.Popen(
        cmd,
        cwd=PROJECT,
        env=env,
        stdout=fh,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop_dev(proc: subprocess.Popen) -> float:
    """SIGTERM to dagster dev's process group; returns seconds until it exited."""
    started = time.monotonic()
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    except ProcessLookupError:
        pass
    return time.monotonic() - started
