"""`crypto-platform` command line: the end-to-end demo on the embedded defaults, and small utilities.

The demo drives Dagster exactly as a user would from a terminal (`dagster asset materialize` with a
`--partition-range`, one single run per range), so what it shows is what the CLI backfill does.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

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
PRED_QUERY = """
select symbol, ts, round(close, 2) as close, round(predicted_return * 1e4, 2) as predicted_bp,
       round(implied_price, 2) as implied_price, model_name, model_version, qualified
from gold.predictions order by ts desc, symbol limit 6
""".strip()


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("DAGSTER_HOME", str(PROJECT_DIR))
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    env.setdefault("GX_ANALYTICS_ENABLED", "false")
    env.setdefault("DO_NOT_TRACK", "1")
    env.setdefault("PYTHONWARNINGS", "ignore")
    return env


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
    """Run `dagster asset materialize` for a selection (and partition range) in this environment."""
    cmd = materialize_command(selection, partition_range, config)
    shown = "\n$ dagster " + " ".join(f"'{a}'" if " " in a or "|" in a else a for a in cmd[3:])
    print(shown, flush=True)
    started = time.monotonic()
    log = PROJECT_DIR / "data" / "logs" / "demo.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as fh:
        fh.write(shown.strip() + "\n")
        fh.flush()
        proc = subprocess.run(cmd, cwd=PROJECT_DIR, env=_env(), stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-25:])
        sys.exit(f"{tail}\n\ndemo: the step above failed (exit {proc.returncode}); full log: {log}")
    print(f"  done in {time.monotonic() - started:.1f} s (log: data/logs/demo.log)", flush=True)


def demo(days: int, trials: int) -> None:
    """Materialize the last `days` complete UTC days of every synthetic instrument, end to end."""
    universe = load_universe()
    sim = [i.key for i in universe.instruments if i.source == "synthetic"]
    if not sim:
        sys.exit(f"demo: no synthetic instrument in {universe.path}; the demo runs offline on those")
    keys = universe.keys
    if keys[keys.index(sim[0]) : keys.index(sim[-1]) + 1] != sim:
        sys.exit("demo: list the synthetic instruments next to each other so one range covers them")
    last = datetime.now(UTC).date() - timedelta(days=1)
    first = last - timedelta(days=days - 1)
    rng = f"{multi_key(first, sim[0])}...{multi_key(last, sim[-1])}"
    print(f"crypto_platform demo: {len(sim)} synthetic instruments x {days} days ({first} .. {last})")
    materialize("group:raw or group:bronze or group:silver", partition_range=rng)
    materialize("key:gold/features or key:gold/labels", partition_range=rng)
    materialize(
        "key:gold/training_set or key:gold/training_set_summary"
        " or key:gold/model or key:gold/model_evaluations",
        config={"ops": {"gold_model": {"config": {"n_trials": trials}}}},
    )
    print(
        "  (demo: predictions may use the latest 'challenger' if no model passed the promotion gate;"
        " production runs never do unless allow_unqualified_model is set)"
    )
    materialize(
        "key:gold/predictions",
        partition_range=rng,
        config={"ops": {"gold__predictions": {"config": {"allow_unqualified_model": True}}}},
    )
    show(DEMO_QUERY)
    show(EVAL_QUERY)
    show(PRED_QUERY)
    print(
        "\nQuery the warehouse yourself:\n"
        '  ./run duckdb data/warehouse.duckdb "select * from silver.candles_1m limit 5"\n'
        "Open the Dagster UI (runs, asset lineage, partitions, metadata):\n"
        "  ./run ui      then browse http://127.0.0.1:3000"
    )


def show(sql: str) -> None:
    """Print a query over the warehouse views."""
    import duckdb

    con = duckdb.connect(str(PROJECT_DIR / "data" / "warehouse.duckdb"), read_only=True)
    print(f'\n$ duckdb data/warehouse.duckdb "{" ".join(sql.split())}"')
    con.sql(sql).show(max_width=200)
    con.close()


def settings_table(settings: PlatformSettings) -> str:
    """The settings in force as an aligned text table (secrets show only whether they are set)."""
    rows = [("variable", "value", "meaning"), *settings.rows()]
    widths = [max(len(r[i]) for r in rows) for i in range(2)]
    return "\n".join(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]}".rstrip() for r in rows)


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
    p_demo.add_argument("--days", type=int, default=3, help="complete UTC days to materialize (default 3)")
    p_demo.add_argument(
        "--trials", type=int, default=10, help="Optuna trials for the demo model (default 10)"
    )
    sub.add_parser("settings", help="show the settings in force (the CRYPTO_* environment variables)")
    sub.add_parser("duckdb-init", help="print the SQL a DuckDB session needs to read an S3 lake's views")
    args = parser.parse_args(argv)
    if args.cmd == "settings":
        print(settings_table(load_settings()))
        return
    if args.cmd == "duckdb-init":
        print(duckdb_init(load_settings()), end="")
        return
    os.chdir(PROJECT_DIR)
    os.environ.update({k: v for k, v in _env().items() if k not in os.environ})
    if args.cmd == "demo":
        demo(args.days, args.trials)
