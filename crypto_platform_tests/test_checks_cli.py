"""The check-only CLI path: `dagster job execute -j checks_job` runs asset checks on stored data and
materializes nothing (one check with `-o`, one partition with the `dagster/partition` tag)."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import dagster as dg
import pytest

from crypto_platform import tables
from crypto_platform.resources.lake import LakeResource
from crypto_platform_tests.fixtures import cell, key, write_silver
from crypto_platform_tests.paths import PROJECT_DIR

pytestmark = pytest.mark.slow  # a dagster CLI subprocess (loads the code location)


def test_checks_job_runs_one_check_on_one_partition_without_materializing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    text = (PROJECT_DIR / "dagster.yaml").read_text()
    (home / "dagster.yaml").write_text(text.replace("base_dir: data/", f"base_dir: {tmp_path}/data/"))
    lake = LakeResource(root=str(tmp_path / "lake"))
    write_silver(lake, ["2022-01-10"])  # stored silver: the check reads it, nothing rebuilds it
    before = (lake.partition_path(tables.CANDLES_1M, cell("2022-01-10")) / "part.parquet").stat().st_mtime_ns
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "CRYPTO_LAKE_ROOT": str(tmp_path / "lake"),
        "CRYPTO_WAREHOUSE_PATH": str(tmp_path / "warehouse.duckdb"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
    }
    cmd = [
        *[shutil.which("dagster") or "dagster", "job", "execute", "-m", "crypto_platform.definitions"],
        *["-j", "checks_job", "-o", "silver__candles_1m_candles_1m_suite"],
        *["--tags", json.dumps({"dagster/partition": key("2022-01-10")})],
    ]
    proc = subprocess.run(cmd, cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        [record] = instance.get_run_records()
        assert record.dagster_run.job_name == "checks_job"
        events = instance.all_logs(record.dagster_run.run_id)
        checks = [e.asset_check_evaluation for e in events if e.asset_check_evaluation is not None]
        assert [(c.asset_key, c.check_name, c.passed) for c in checks] == [
            (tables.CANDLES_1M.key, "candles_1m_suite", True)
        ]
        assert (checks[0].description or "").startswith("1 partition(s) of silver/candles_1m passed")
        assert record.dagster_run.tags["dagster/partition"] == key("2022-01-10")
        assert not [e for e in events if e.is_dagster_event and e.dagster_event.is_step_materialization]
    after = (lake.partition_path(tables.CANDLES_1M, cell("2022-01-10")) / "part.parquet").stat().st_mtime_ns
    assert after == before  # the asset was not re-materialized
