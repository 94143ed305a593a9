"""`crypto-platform` command line: the end-to-end demo on the embedded defaults, and small utilities.

The demo drives Dagster exactly as a user would from a terminal: each step is a `dagster asset
materialize` command line (a `--partition-range` is one single run), so what it shows is what the CLI
backfill does. The dagster CLI's own entry point runs those lines inside the demo's process, one after
the other: one interpreter's start-up (dagster, GX, MLflow, LightGBM) instead of one per command.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import sys
import time
import traceback
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

from crypto_platform.automation.instance_storage import ensure_instance_storage
from crypto_platform.partitions import multi_key
from crypto_platform.platform_settings import PlatformSettings, load_settings
from crypto_platform.settings import PROJECT_DIR, load_universe

DEMO_QUERY = """
select symbol, count(*) as minutes, sum(trade_count) as trades,
       round(min(low), 2) as low, round(max(high), 2) as high, round(sum(quote_volume)) as quote_volume
from silver.candles_1m group by symbol order by symbol
""".strip()
EVAL_QUERY = """
select model_version, alias, forecast, n, round(rank_ic, 4) as rank_ic, round(hit_rate, 4) as hit_rate,
       round(hit_p_value, 4) as hit_p, round(mae * 1e4, 3) as mae_bp, round(rmse * 1e4, 3) as rmse_bp
from gold.model_evaluations order by model_version desc, forecast limit 8
""".strip()
ROLLING_QUERY = """
select day, forecast, sum(n) as n, round(sum(rank_ic * n) / sum(n), 4) as mean_rank_ic,
       round(sum(hit_rate * n_directional) / sum(n_directional), 4) as hit_rate,
       round(max(hit_p_value), 4) as worst_hit_p, round(avg(mae) * 1e4, 3) as mae_bp,
       round(avg(model_advantage), 4) as model_advantage, round(max(model_advantage_p), 4) as worst_adv_p
from gold.rolling_evaluation group by day, forecast order by day desc, mean_rank_ic desc nulls last limit 5
""".strip()
PRED_QUERY = """
select symbol, ts, round(close, 2) as close, round(predicted_return * 1e4, 2) as predicted_bp,
       round(implied_price, 2) as implied_price, model_name, model_version, qualified
from gold.predictions order by ts desc, symbol limit 6
""".strip()


# What the demo's dagster commands need in the environment when `./run` did not set it.
_DEFAULT_ENV = {
    "DAGSTER_HOME": str(PROJECT_DIR),
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "GX_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
}


def materialize_command(
    selection: str, partition_range: str | None = None, config: dict | None = None
) -> list[str]:
    """The `dagster asset materialize` command line for a selection, partition range and run config."""
    cmd = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "crypto_platform.definitions"]
    cmd += ["--select", selection]
    if partition_range:
        cmd += ["--partition-range", partition_range]
    if config:
        cmd += ["--config-json", json.dumps(config)]
    return cmd


def materialize(selection: str, partition_range: str | None = None, config: dict | None = None) -> None:
    """Run `dagster asset materialize` for a selection (and partition range) in this process."""
    _run(materialize_command(selection, partition_range, config)[3:])


def demo_log(settings: PlatformSettings) -> Path:
    """Where the demo logs its dagster commands: `logs/demo.log` beside a local lake (data/logs by
    default), so a demo on another lake (a test's temp folder) never writes into the repository."""
    if "://" in settings.lake_root:
        return PROJECT_DIR / "data" / "logs" / "demo.log"
    return (PROJECT_DIR / settings.lake_root).parent / "logs" / "demo.log"


@contextlib.contextmanager
def _output_to(fh: IO[str]) -> Iterator[None]:
    """File descriptors 1 and 2 (Python's prints and logs, and any library's C-level output) go to `fh`
    meanwhile, as a subprocess's stdout and stderr would."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    os.dup2(fh.fileno(), 1)
    os.dup2(fh.fileno(), 2)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, copy in zip((1, 2), saved, strict=True):
            os.dup2(copy, fd)
            os.close(copy)


def dagster_cli(args: list[str]) -> int:
    """Run one `dagster ARGS` command line with the dagster CLI's entry point (what `python -m dagster`
    calls) in this process; its exit status, with any error printed as the CLI prints it."""
    import click
    from dagster._cli import ENV_PREFIX, cli

    try:
        cli.main(args, prog_name="dagster", auto_envvar_prefix=ENV_PREFIX, standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except SystemExit as exc:  # click's own exits (usage errors, --help)
        return exc.code if isinstance(exc.code, int) else 1
    except Exception:  # a failed run or a bad selection, as the CLI would print it before exiting 1
        traceback.print_exc()
        return 1
    return 0


def _run(args: list[str]) -> None:
    """Run one dagster command line in this process (shown, its output logged to `demo_log`); exit
    naming it if it fails."""
    shown = "\n$ dagster " + " ".join(f"'{a}'" if " " in a or "|" in a else a for a in args)
    print(shown, flush=True)
    started, cpu = time.monotonic(), _cpu()
    log = demo_log(load_settings())
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as fh:
        fh.write(shown.strip() + "\n")
        fh.flush()
        with _output_to(fh), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the definitions' beta-API notices, as PYTHONWARNINGS=ignore
            status = dagster_cli(args)
        took = f"{time.monotonic() - started:.1f} s, {_cpu() - cpu:.1f} CPU s"
        fh.write(f"# exit {status} after {took}\n")
    if status != 0:
        tail = "\n".join(log.read_text().splitlines()[-25:])
        sys.exit(f"{tail}\n\ndemo: the step above failed (exit {status}); full log: {log}")
    print(f"  done in {took} (log: {log})", flush=True)


def _cpu() -> float:
    """User + system CPU seconds of this process and its finished children (e.g. compute-log tails)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def demo(days: int, trials: int) -> None:
    """The whole loop on the last `days` complete UTC days of every synthetic instrument: ingest, train on
    all but the newest day, then features, predictions and an out-of-sample score of the newest day by
    the champion (four dagster runs; each asset check runs with its asset, on the newest data), and what
    each check says."""
    universe = load_universe()
    sim = [i.key for i in universe.instruments if i.source == "synthetic"]
    if not sim:
        sys.exit(f"demo: no synthetic instrument in {universe.path}; the demo runs offline on those")
    keys = universe.keys
    if keys[keys.index(sim[0]) : keys.index(sim[-1]) + 1] != sim:
        sys.exit("demo: list the synthetic instruments next to each other so one range covers them")
    if days < 2:
        sys.exit(f"demo: --days must be >= 2 (training days + the newest day scored), got {days}")
    last = datetime.now(UTC).date() - timedelta(days=1)
    first = last - timedelta(days=days - 1)
    rng = f"{multi_key(first, sim[0])}...{multi_key(last, sim[-1])}"
    train_rng = f"{multi_key(first, sim[0])}...{multi_key(last - timedelta(days=1), sim[-1])}"
    new_rng = f"{multi_key(last, sim[0])}...{multi_key(last, sim[-1])}"
    print(f"crypto_platform demo: {len(sim)} synthetic instruments x {days} days ({first} .. {last})")
    print(f"  train on {first} .. {last - timedelta(days=1)}, then score {last} out of sample")
    materialize("group:raw or group:bronze or group:silver", partition_range=rng)
    materialize("key:gold/features or key:gold/labels", partition_range=train_rng)
    materialize(
        "key:gold/training_set or key:gold/training_set_summary"
        " or key:gold/model or key:gold/model_evaluations",
        config={"ops": {"gold_model": {"config": {"n_trials": trials}}}},
    )
    alias = _served_alias()
    config = None
    if alias != "champion":
        print(
            "  (demo: no model passed the promotion gate, so the unqualified 'challenger' is served and "
            "scored; production runs never do unless allow_unqualified_model is set)"
        )
        config = {
            "ops": {
                "gold__predictions": {"config": {"allow_unqualified_model": True}},
                "gold__rolling_evaluation": {"config": {"model_alias": "challenger"}},
            }
        }
    materialize(
        "key:gold/features or key:gold/labels or key:gold/predictions or key:gold/rolling_evaluation",
        partition_range=new_rng,
        config=config,
    )
    # no separate check-only run: every check already ran in the run that wrote its asset, on the newest
    # data (quality suites with raw..silver over every day, drift and skill with the newest day against
    # the champion), so the table below shows each one's newest evaluation; checks_job would repeat them
    show(DEMO_QUERY)
    show(EVAL_QUERY)
    show(ROLLING_QUERY)
    show(PRED_QUERY)
    statuses = check_statuses()
    print_checks(statuses, alias)
    print(
        "\nRun every check again on the stored data (check-only, no asset materialized):\n"
        "  ./run dagster job execute -m crypto_platform.definitions -j checks_job\n"
        "Query the warehouse yourself:\n"
        '  ./run duckdb data/warehouse.duckdb "select * from gold.rolling_evaluation"\n'
        "Open the Dagster UI (runs, asset lineage, partitions, metadata, each asset's Checks tab):\n"
        "  ./run ui      then browse http://127.0.0.1:3000"
    )


def _served_alias() -> str:
    """'champion' when the registry has one, else 'challenger' (the demo then says so). A local store
    answers without MLflow (`registry_lookup`); any other store through MLflow."""
    from crypto_platform.ml import registry_lookup
    from crypto_platform.ml.model_info import CHAMPION, NoChampionError
    from crypto_platform.resources.mlflow import MlflowResource

    res = MlflowResource(tracking_uri=load_settings().mlflow_tracking_uri)
    try:
        registry_lookup.resolve(res.uri, res.model_name, CHAMPION)
    except NoChampionError:
        return "challenger"
    return "champion"


def check_statuses() -> list[dict[str, str]]:
    """The latest evaluation of every asset check of the code location, from the Dagster instance."""
    import dagster as dg

    from crypto_platform.definitions import defs

    keys = sorted(defs.resolve_asset_graph().asset_check_keys, key=lambda k: k.to_user_string())
    rows = []
    with dg.DagsterInstance.get() as instance:
        for key in keys:
            [rec] = instance.event_log_storage.get_asset_check_execution_history(key, limit=1) or [None]
            ev = rec.evaluation if rec is not None else None
            if ev is None:
                status = rec.status.value if rec is not None else "NEVER RUN"
                rows.append({"check": key.to_user_string(), "status": status, "says": "-"})
                continue
            status = "PASSED" if ev.passed else f"FAILED ({ev.severity.value})"
            says = " ".join((ev.description or "-").split())
            rows.append({"check": key.to_user_string(), "status": status, "says": says[:110]})
    return rows


def print_checks(rows: list[dict[str, str]], alias: str) -> None:
    """The check table and the demo's verdict: every check executed, none skipped, judged against whom."""
    print("\nEvery asset check, newest evaluation (UI: each asset's Checks tab):")
    width = max(len(r["check"]) for r in rows)
    for r in rows:
        print(f"  {r['check']:<{width}}  {r['status']:<15}  {r['says']}")
    skipped = [r["check"] for r in rows if not r["status"].startswith(("PASSED", "FAILED"))]
    skipped += [r["check"] for r in rows if r["says"].lower().startswith("skipped")]
    if skipped:
        print(f"NOT every check was executed with a real status: {', '.join(skipped)}")
    else:
        print(f"All {len(rows)} checks executed with a real status; none skipped.")
    print(f"Drift and skill were judged against the '{alias}' model.")
    if any(r["check"].endswith("live_data_lag") and r["status"].startswith("FAILED") for r in rows):
        print(
            "(live_data_lag fails by design here: the demo's newest bar is from yesterday; under the live "
            "sensor, `CRYPTO_LIVE_SENSOR=running ./run ui`, it passes within 2 minutes.)"
        )


def show(sql: str) -> None:
    """Print a query over the warehouse views."""
    import duckdb

    path = load_settings().warehouse_path
    con = duckdb.connect(str(PROJECT_DIR / path), read_only=True)
    print(f'\n$ duckdb {path} "{" ".join(sql.split())}"')
    con.sql(sql).show(max_width=200)
    con.close()


def settings_table(settings: PlatformSettings) -> str:
    """The settings in force as an aligned text table (secrets show only whether they are set)."""
    rows = [("variable", "value", "meaning"), *settings.rows()]
    widths = [max(len(r[i]) for r in rows) for i in range(2)]
    return "\n".join(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]}".rstrip() for r in rows)


def backfill(selection: str, partition_range: str, config_json: str | None = None) -> None:
    """Submit an asset backfill to this instance (DAGSTER_HOME); the daemon splits and runs it."""
    import dagster as dg

    from crypto_platform.automation.backfills import submit_backfill
    from crypto_platform.definitions import defs

    run_config = json.loads(config_json) if config_json else None
    if run_config is not None and not isinstance(run_config, dict):
        raise SystemExit(f"--config-json {config_json!r}: expected a JSON object (run config)")
    per_run = load_settings().backfill_partitions_per_run
    with dg.DagsterInstance.get() as instance:
        backfill_id, n, keys = submit_backfill(
            instance, defs, selection, partition_range, run_config=run_config
        )
    split = (
        f"runs of at most {per_run} partitions"
        if per_run
        else "one run (CRYPTO_BACKFILL_PARTITIONS_PER_RUN=0)"
    )
    print(
        f"backfill {backfill_id}: {len(keys)} assets x {n} partitions, {split}; the daemon launches it "
        "(dagster dev or dagster-daemon must be running): UI > Overview > Backfills"
    )


def duckdb_init(settings: PlatformSettings) -> str:
    """SQL that makes a DuckDB session (e.g. the CLI: `duckdb -init <file>`) read the warehouse's views
    of the configured lake: nothing for a local folder; for S3, httpfs loaded offline from the locked
    package and a temporary secret whose credentials DuckDB reads from the AWS_* variables."""
    from crypto_platform.resources.duckdb_s3 import httpfs_extension, secret_sql
    from crypto_platform.resources.lake import lake_resource
    from crypto_platform.resources.lake.s3 import S3Store

    store = lake_resource(settings).store
    if not isinstance(store, S3Store):
        return "-- the lake is a local folder: its views need nothing more\n"
    return f"LOAD '{httpfs_extension()}';\n{secret_sql(store, from_env=True)};\n"


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `crypto-platform` console script."""
    parser = argparse.ArgumentParser(prog="crypto-platform", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_demo = sub.add_parser("demo", help="run the pipeline end to end on the embedded defaults")
    p_demo.add_argument(
        "--days",
        type=int,
        default=4,
        help="complete UTC days: all but the newest train the model, the newest is scored (default 4)",
    )
    p_demo.add_argument(
        "--trials", type=int, default=10, help="Optuna trials for the demo model (default 10)"
    )
    sub.add_parser("settings", help="show the settings in force (the CRYPTO_* environment variables)")
    p_fill = sub.add_parser(
        "backfill",
        help="submit an asset backfill to the daemon: runs of CRYPTO_BACKFILL_PARTITIONS_PER_RUN partitions",
    )
    p_fill.add_argument("--select", required=True, help="asset selection, e.g. 'group:raw or group:bronze'")
    p_fill.add_argument("--partition-range", required=True, help="FIRST...LAST partition keys (a rectangle)")
    p_fill.add_argument(
        "--config-json",
        default=None,
        help="run config of every run, as `dagster asset materialize --config-json` takes it",
    )
    sub.add_parser("duckdb-init", help="print the SQL a DuckDB session needs to read an S3 lake's views")
    args = parser.parse_args(argv)
    if args.cmd == "settings":
        print(settings_table(load_settings()))
        return
    if args.cmd == "backfill":
        ensure_instance_storage()  # before the daemon might be opening a fresh instance at the same time
        backfill(args.select, args.partition_range, args.config_json)
        return
    if args.cmd == "duckdb-init":
        print(duckdb_init(load_settings()), end="")
        return
    os.chdir(PROJECT_DIR)  # dagster.yaml's storage and the default lake are relative to the project
    for name, value in _DEFAULT_ENV.items():
        os.environ.setdefault(name, value)
    if args.cmd == "demo":
        ensure_instance_storage()  # once, before its dagster commands (and a `./run ui` beside it) open it
        demo(args.days, args.trials)


if __name__ == "__main__":
    main()
