"""Big backfills: an asset backfill submitted to the instance is cut by the daemon into runs of at most
N partitions (CRYPTO_BACKFILL_PARTITIONS_PER_RUN), executed for real, and covers exactly the range."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from crypto_platform.automation.backfills import partition_keys
from crypto_platform_tests.paths import PROJECT_DIR

# Run in a fresh process: the policy is read once, when the code location loads (as in production).
SCRIPT = textwrap.dedent(
    """
    import json, logging, sys
    import dagster as dg
    from dagster._core.execution.backfill import BulkActionStatus
    from dagster._core.test_utils import create_test_daemon_workspace_context, instance_for_test
    from dagster._core.remote_origin import InProcessCodeLocationOrigin
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
    from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
    from dagster._daemon.backfill import execute_backfill_iteration
    from crypto_platform.automation.backfills import submit_backfill
    from crypto_platform.definitions import defs

    launcher = {"module": "dagster._core.launcher.sync_in_memory_run_launcher",
                "class": "SyncInMemoryRunLauncher"}
    # the code location loaded in this process (the daemon's code server process is not what this
    # test is about: test_bench_backfill runs the real dagster-daemon with its code server)
    target = InProcessWorkspaceLoadTarget(InProcessCodeLocationOrigin(
        LoadableTargetOrigin(module_name="crypto_platform.definitions"), location_name="crypto_platform"))
    coordinator = {"module": "dagster._core.run_coordinator", "class": "DefaultRunCoordinator"}
    with instance_for_test(overrides={"run_launcher": launcher, "run_coordinator": coordinator}) as instance:
        backfill_id, n, keys = submit_backfill(
            instance, defs, "key:raw/trades or key:bronze/trades or key:bronze/trade_rejects", sys.argv[1]
        )
        with create_test_daemon_workspace_context(target, instance) as ctx:
            for _ in range(20):
                list(execute_backfill_iteration(ctx, logging.getLogger("backfill")))
                if instance.get_backfill(backfill_id).status != BulkActionStatus.REQUESTED:
                    break
        runs = []
        for r in instance.get_runs(filters=dg.RunsFilter(tags={"dagster/backfill": backfill_id})):
            t = r.tags
            keys_ = [t["dagster/partition"]] if "dagster/partition" in t else [
                t["dagster/asset_partition_range_start"], t["dagster/asset_partition_range_end"]]
            runs.append({"status": r.status.value, "range": keys_,
                         "assets": sorted(k.to_user_string() for k in r.asset_selection or [])})
        print(json.dumps({"status": instance.get_backfill(backfill_id).status.value, "n": n, "runs": runs}))
    """
)


@pytest.mark.slow
def test_a_daemon_backfill_is_cut_into_runs_of_n_partitions_and_materializes_each(tmp_path: Path) -> None:
    rng = "2024-03-01|sim.BTC-USDT...2024-03-02|sim.ETH-USDT"  # 2 days x 2 instruments
    env = {
        **os.environ,
        "CRYPTO_BACKFILL_PARTITIONS_PER_RUN": "2",
        "CRYPTO_LAKE_ROOT": str(tmp_path / "lake"),
        "CRYPTO_WAREHOUSE_PATH": str(tmp_path / "warehouse.duckdb"),
    }
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, rng], env=env, cwd=PROJECT_DIR, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["status"] == "COMPLETED_SUCCESS" and got["n"] == 4, got
    runs = got["runs"]
    assert len(runs) == 2 and all(r["status"] == "SUCCESS" for r in runs)  # 4 partitions, 2 per run
    covered = sorted(k for r in runs for k in partition_keys("...".join(r["range"])))
    assert covered == sorted(partition_keys(rng))  # every partition exactly once
    assert all(r["assets"] == ["bronze/trade_rejects", "bronze/trades", "raw/trades"] for r in runs)
    for day in ("2024-03-01", "2024-03-02"):
        for inst in ("sim.BTC-USDT", "sim.ETH-USDT"):
            assert (tmp_path / "lake" / "bronze" / "trades" / f"instrument={inst}" / f"date={day}").is_dir()


def test_partition_ranges_are_checked_before_anything_is_submitted() -> None:
    assert len(partition_keys("2024-03-01|sim.BTC-USDT...2024-03-03|sim.ETH-USDT")) == 6
    with pytest.raises(ValueError, match=r"expected 'FIRST\.\.\.LAST'"):
        partition_keys("2024-03-01|sim.BTC-USDT")
    with pytest.raises(ValueError, match="is not a partition key"):
        partition_keys("2024-03-01|sim.BTC-USDT...2024-03-02|sim.NOPE")


def test_a_backfill_carries_its_run_config_to_the_daemon() -> None:
    import dagster as dg

    from crypto_platform.automation.backfills import submit_backfill
    from crypto_platform.definitions import defs

    config = {"ops": {"gold__predictions": {"config": {"allow_unqualified_model": True}}}}
    rng = "2024-03-01|sim.BTC-USDT...2024-03-01|sim.ETH-USDT"
    with dg.DagsterInstance.ephemeral() as instance:
        plain, _, _ = submit_backfill(instance, defs, "key:gold/predictions", rng)
        configured, n, keys = submit_backfill(instance, defs, "key:gold/predictions", rng, run_config=config)
        assert not instance.get_backfill(plain).run_config  # stored as {}: no config
        assert (
            instance.get_backfill(configured).run_config == config
        )  # what execute_asset_backfill gives every run
        assert n == 2 and keys == [dg.AssetKey(["gold", "predictions"])]
