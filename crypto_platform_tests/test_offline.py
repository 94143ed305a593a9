"""The whole pipeline, raw to predictions through the dagster CLI, opens no connection off this machine.

Telemetry (Dagster, MLflow, GX) is off and no library phones home: a sitecustomize guard in every
Python process records and refuses any connection or name lookup that is not loopback.
"""

import os
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from crypto_platform.cli import materialize_command
from crypto_platform_tests.paths import PROJECT_DIR

# the whole pipeline through three dagster CLI subprocesses: ~1 min on the idle machine, but a shared,
# loaded one (and a second test worker beside it) can take several times that
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

GUARD = """
import json, os, socket
_log = os.environ["NETWORK_ATTEMPTS_LOG"]
_LOCAL = ("127.0.0.1", "::1", "localhost", "0.0.0.0")
def _record(what):
    with open(_log, "a") as fh:
        fh.write(json.dumps(str(what)) + "\\n")
    raise OSError("network disabled in test: " + str(what))
_connect = socket.socket.connect
def _guard_connect(self, address):
    if not (isinstance(address, (str, bytes)) or str(address[0]) in _LOCAL):
        _record(address)
    return _connect(self, address)
socket.socket.connect = _guard_connect
_getaddrinfo = socket.getaddrinfo
def _guard_getaddrinfo(host, *args, **kwargs):
    if host not in (None, *_LOCAL) and not str(host).startswith("127."):
        _record(host)
    return _getaddrinfo(host, *args, **kwargs)
socket.getaddrinfo = _guard_getaddrinfo
"""


def _materialize(env: dict, select: str, rng: str | None = None, config: dict | None = None) -> None:
    cmd = materialize_command(select, rng, config)
    proc = subprocess.run(cmd, cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (select, proc.stdout[-2000:], proc.stderr[-4000:])


def test_pipeline_runs_offline_with_telemetry_off(tmp_path: Path) -> None:
    guard_dir, home = tmp_path / "guard", tmp_path / "home"
    guard_dir.mkdir()
    home.mkdir()
    (guard_dir / "sitecustomize.py").write_text(GUARD)
    shutil.copy(PROJECT_DIR / "dagster.yaml", home / "dagster.yaml")  # telemetry: enabled: false
    attempts = tmp_path / "attempts.log"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(guard_dir), os.environ.get("PYTHONPATH", "")]),
        "NETWORK_ATTEMPTS_LOG": str(attempts),
        "DAGSTER_HOME": str(home),
        "CRYPTO_LAKE_ROOT": str(tmp_path / "lake"),
        "CRYPTO_WAREHOUSE_PATH": str(tmp_path / "warehouse.duckdb"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}",
    }
    (tmp_path / "mlflow").mkdir()
    # dagster.yaml keeps its storage under data/ relative to the working directory: point it at tmp.
    (home / "dagster.yaml").write_text(
        (home / "dagster.yaml").read_text().replace("base_dir: data/", f"base_dir: {tmp_path}/data/")
    )
    last = datetime.now(UTC).date() - timedelta(days=1)
    rng = f"{last - timedelta(days=1)}|sim.BTC-USDT...{last}|sim.ETH-USDT"
    # raw to gold features and labels in one run (one process less to start than a run per layer)
    ingest = "group:raw or group:bronze or group:silver"
    _materialize(env, f"{ingest} or key:gold/features or key:gold/labels", rng)
    _materialize(
        env,
        "key:gold/training_set or key:gold/training_set_summary"
        " or key:gold/model or key:gold/model_evaluations",
        config={"ops": {"gold_model": {"config": {"n_trials": 3}}}},
    )
    _materialize(
        env,
        "key:gold/predictions",
        rng,
        config={"ops": {"gold__predictions": {"config": {"allow_unqualified_model": True}}}},
    )
    assert (tmp_path / "lake" / "gold" / "predictions").is_dir()
    assert (tmp_path / "data" / "dagster" / "storage").is_dir()  # the instance really used dagster.yaml
    assert not attempts.exists(), attempts.read_text()
