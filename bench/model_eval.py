"""Model evaluation on real data through the platform: FTX BTC-PERP 1-minute candles (Jan 2022).

Run from the repository root:

    ./run python -m bench.model_eval            # writes bench/MODEL.md (~2-3 min on 2 cores)

Everything the report says about the model comes from what the platform produced, in a temporary
project (lake, DuckDB warehouse, MLflow SQLite store, ephemeral Dagster instance, and an instruments
file whose `candles` entry is the FTX file, start_date 2021-12-01):

1. `import_candles_job` imports the CSV into silver/candles_1m (one partition per UTC day);
2. gold/features and gold/labels are materialized over all the days in one single-run backfill;
3. gold/training_set + gold/model (+ gold/model_evaluations) are materialized with a config:
   Optuna on purged walk-forward CV, holdout vs the zero and momentum baselines, skill gate, MLflow
   run + registered version + alias;
4. the report reads gold.model_evaluations through the DuckDB warehouse, the model's Dagster
   materialization metadata, and the MLflow run (parameters, metrics, gate.json, importance, holdout
   predictions) and loads the registered model back by alias;
5. gold/model is materialized a second time (seed 1) on the same training set, so the gate has a
   champion to beat on the same evaluation window.

Controls that are not platform runs (direct `ml.training.train` calls on the platform's own
gold/training_set table, so the champion and registry are not disturbed): the same training on
shuffled labels, and other seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import duckdb
import numpy as np
import polars as pl

from crypto_platform import tables

PROJECT_DIR = Path(__file__).resolve().parent.parent
DATA_REL = Path("../shared/data/candles/ftx_btcperp_1m_2022-01.csv")
FTX = "ftx.BTC-USD-USD"
INSTRUMENTS_YAML = f"""\
# model_eval: one instrument, history only as imported 1-minute OHLCV
start_date: "2021-12-01"
instruments:
  - exchange: ftx
    symbol: BTC/USD:USD
    source: candles
    path: {DATA_REL.as_posix()}
    format: csv
    volume_unit: quote
"""


@dataclass
class PlatformRun:
    """What the platform produced, read back from the warehouse, the Dagster instance and MLflow."""

    silver: dict[str, Any]
    n_days: int
    training_meta: dict[str, Any]
    training_set: pl.DataFrame
    evals: pl.DataFrame  # gold.model_evaluations rows of the first version
    model_meta: dict[str, Any]
    version: Any  # registry.ModelVersionInfo of the first version
    params: dict[str, str]
    metrics: dict[str, float]
    gate: dict[str, Any]
    importance: pl.DataFrame
    holdout: pl.DataFrame
    mlflow_check: str
    second: dict[str, Any]  # the seed-1 retrain: metadata and its evaluations rows
    second_evals: pl.DataFrame
    artifacts: list[str]
    model_name: str


def main(argv: list[str] | None = None) -> int:
    """Run the platform on the FTX month, the controls, and write the report."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--horizon", type=int, default=5)
    ap.add_argument("--n-trials", type=int, default=20)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--holdout", type=float, default=0.2)
    ap.add_argument("--window-days", type=float, default=32.0, help="training window (the file: ~31.3 d)")
    ap.add_argument("--retrain-seed", type=int, default=1, help="seed of the second gold/model run")
    ap.add_argument("--control-seeds", type=int, nargs="*", default=[1, 2, 3, 4, 5])
    ap.add_argument("--out", type=Path, default=PROJECT_DIR / "bench" / "MODEL.md")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        now = time.perf_counter()
        timings[name] = now - since
        print(f"[model_eval] {name}: {now - since:.1f}s", flush=True)
        return now

    with tempfile.TemporaryDirectory(prefix="model_eval_") as tmp:
        project = Path(tmp)
        (project / "instruments.yaml").write_text(INSTRUMENTS_YAML)
        (project / "dagster_home").mkdir()
        (project / "mlflow").mkdir()
        # Set before any crypto_platform import: partitions come from the instruments file at import,
        # and the code location's resources read these variables (as a deployment would set them).
        os.environ.update(
            {
                "CRYPTO_PLATFORM_INSTRUMENTS": str(project / "instruments.yaml"),
                "CRYPTO_LAKE_ROOT": str(project / "lake"),
                "CRYPTO_WAREHOUSE_PATH": str(project / "warehouse.duckdb"),
                "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow' / 'mlflow.db'}",
                "DAGSTER_HOME": str(project / "dagster_home"),
            }
        )
        run = _run_platform(args, lap)
        t = time.perf_counter()
        controls = _controls(args, run)
        lap("controls (direct train calls)", t)
    timings["total"] = time.perf_counter() - t_start

    report = _report(args=args, run=run, controls=controls, timings=timings)
    args.out.write_text(report)
    print(f"[model_eval] wrote {args.out} ({timings['total']:.1f}s)")
    return 0


def _run_platform(args: argparse.Namespace, lap) -> PlatformRun:
    """Import -> features/labels -> training set -> model (twice), then read back what was produced."""
    import dagster as dg

    from crypto_platform.assets import gold, history
    from crypto_platform.definitions import build_resources
    from crypto_platform.partitions import multi_key
    from crypto_platform.resources.lake import LakeResource
    from crypto_platform.resources.warehouse import WarehouseResource
    from crypto_platform.settings import load_universe

    if load_universe().keys != [FTX]:
        raise RuntimeError(f"model_eval: expected the temporary universe [{FTX}], got {load_universe().keys}")
    resources = build_resources()  # the code location's resources, pointed at the temp project by env
    lake, warehouse, mlflow_res = resources["lake"], resources["warehouse"], resources["mlflow_registry"]
    uri = os.environ["MLFLOW_TRACKING_URI"]  # what the resource resolves (its EnvVar)
    assets = dg.load_assets_from_modules([gold])
    training = [
        tables.TRAINING_SET.key,
        tables.TRAINING_SUMMARY.key,
        tables.MODEL.key,
        tables.MODEL_EVALUATIONS.key,
    ]

    def materialize(instance, selection, *, tags=None, config=None) -> dg.ExecuteInProcessResult:
        result = dg.materialize(
            assets,
            selection=selection,
            resources=resources,
            instance=instance,
            tags=tags,
            run_config={"ops": config or {}},
        )
        if not result.success:
            raise RuntimeError(f"model_eval: materializing {selection} failed")
        return result

    def model_config(seed: int) -> dict:
        return {
            "gold_training_set": {
                "config": {
                    "window_days": args.window_days,
                    "horizon_minutes": args.horizon,
                    "instruments": [FTX],
                }
            },
            "gold_model": {
                "config": {
                    "n_trials": args.n_trials,
                    "seed": seed,
                    "n_folds": args.folds,
                    "holdout_fraction": args.holdout,
                    "num_threads": 1,
                }
            },
        }

    def latest_meta(instance, key) -> dict[str, Any]:
        event = instance.get_latest_materialization_event(key)
        return {k: v.value for k, v in event.asset_materialization.metadata.items()}

    with dg.DagsterInstance.ephemeral() as instance:
        t = time.perf_counter()
        imported = history.import_candles_job.execute_in_process(
            run_config=history.run_config(FTX),
            instance=instance,
            resources={"lake": lake, "warehouse": warehouse},
        )
        if not imported.success:
            raise RuntimeError("model_eval: import_candles_job failed")
        t = lap("import_candles_job -> silver", t)
        days = sorted(
            {
                date.fromisoformat(k.split("|")[0])
                for k in instance.get_materialized_partitions(dg.AssetKey(["silver", "candles_1m"]))
            }
        )
        tags = {
            "dagster/asset_partition_range_start": multi_key(days[0], FTX),
            "dagster/asset_partition_range_end": multi_key(days[-1], FTX),
        }
        materialize(instance, [tables.FEATURES.key, tables.LABELS.key], tags=tags)
        t = lap("gold features + labels", t)
        materialize(instance, training, config=model_config(args.seed))
        t = lap("gold training_set + model", t)
        training_meta = latest_meta(instance, tables.TRAINING_SET.key)
        model_meta = latest_meta(instance, tables.MODEL.key)
        # the model alone: same training set, so the same evaluation window for the champion comparison
        materialize(
            instance,
            [tables.MODEL.key, tables.MODEL_EVALUATIONS.key],
            config={"gold_model": model_config(args.retrain_seed)["gold_model"]},
        )
        t = lap(f"gold model again (seed {args.retrain_seed})", t)
        second_meta = latest_meta(instance, tables.MODEL.key)
    t = time.perf_counter()
    # the same locations as plain resources (the code location's hold EnvVars, resolved only in runs)
    read_lake = LakeResource(root=os.environ["CRYPTO_LAKE_ROOT"])
    read_warehouse = WarehouseResource(path=os.environ["CRYPTO_WAREHOUSE_PATH"])
    out = _read_back(
        uri, mlflow_res.model_name, read_warehouse, read_lake, days, training_meta, model_meta, second_meta
    )
    lap("read back: warehouse, MLflow run, load by alias", t)
    return out


def _read_back(
    uri: str,
    model_name: str,
    warehouse,
    lake,
    days: list[date],
    training_meta: dict,
    model_meta: dict,
    second_meta: dict,
) -> PlatformRun:
    """The evaluation as the platform recorded it: warehouse views, MLflow run, registered model."""
    from mlflow import MlflowClient
    from mlflow.artifacts import download_artifacts

    from crypto_platform.ml import registry

    def sql(query: str) -> pl.DataFrame:
        con = duckdb.connect(str(warehouse.file), read_only=True)
        try:
            return con.sql(query).pl()
        finally:
            con.close()

    silver = sql(
        "select count(*) as n, min(ts) as first, max(ts) as last, sum(is_empty::int) as empty, "
        "count(distinct origin) as n_origins, min(origin) as origin, "
        "sum((abs(vwap - close) > 1e-9 * close)::int) as vwap_not_close, "
        "count(buy_volume) as with_taker_split, count(trade_count) as with_trade_count "
        "from silver.candles_1m"
    ).row(0, named=True)
    version = int(model_meta["version"])
    evals = sql(f"select * from gold.model_evaluations where model_version = {version}")
    second_version = int(second_meta["version"])
    second_evals = sql(f"select * from gold.model_evaluations where model_version = {second_version}")
    info = registry.version_info(uri, model_name, version)
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(info.run_id)
    artifacts = sorted(
        f.path
        for top in client.list_artifacts(info.run_id)
        for f in ([top] if not top.is_dir else client.list_artifacts(info.run_id, top.path))
    )
    with tempfile.TemporaryDirectory() as dst:

        def artifact(name: str) -> Path:
            return Path(
                download_artifacts(run_id=info.run_id, artifact_path=name, dst_path=dst, tracking_uri=uri)
            )

        gate = json.loads(artifact("gate.json").read_text())
        importance = pl.read_csv(artifact("feature_importance.csv"))
        holdout = pl.read_parquet(artifact(registry.HOLDOUT_ARTIFACT))
    training_set = lake.read_table(tables.TRAINING_SET)
    # The registered version, loaded back from MLflow, reproduces the holdout predictions of its run.
    loaded = registry.load_version(uri, model_name, version)
    key = ["ts", "exchange", "symbol"]
    rows = training_set.join(holdout.select(key), on=key, how="semi").sort(key)
    got = loaded.predict(rows)
    want = holdout.sort(key)["prediction"].to_numpy()
    same = got.shape == want.shape and bool(np.allclose(got, want, rtol=1e-12, atol=0))
    check = (
        f"`{info.model_uri}` loaded back as an MLflow pyfunc model: its predictions on the {rows.height:,} "
        f"holdout rows of gold/training_set {'equal' if same else 'DIFFER FROM'} the run's "
        f"`{registry.HOLDOUT_ARTIFACT}`."
    )
    return PlatformRun(
        silver=silver,
        n_days=len(days),
        training_meta=training_meta,
        training_set=training_set,
        evals=evals,
        model_meta=model_meta,
        version=info,
        params=dict(run.data.params),
        metrics=dict(run.data.metrics),
        gate=gate,
        importance=importance,
        holdout=holdout,
        mlflow_check=check,
        second=second_meta,
        second_evals=second_evals,
        artifacts=artifacts,
        model_name=model_name,
    )


# ----------------------------------------------------------------------------------------------
# controls: direct train calls on the platform's gold/training_set (no registry involved)


@dataclass
class Controls:
    direct_same_seed: Any  # TrainResult: train(seed) on gold/training_set, as gold/model ran it
    shuffled: Any
    shuffled_decision: Any
    seed_rows: list


def _controls(args: argparse.Namespace, run: PlatformRun) -> Controls:
    from crypto_platform.ml.evaluation import skill_gate
    from crypto_platform.ml.training import train
    from crypto_platform.transforms.features import FEATURE_COLUMNS

    df = run.training_set
    settings = {
        "horizon": args.horizon,
        "n_trials": args.n_trials,
        "n_folds": args.folds,
        "holdout_fraction": args.holdout,
        "timeout_s": 900.0,
        "num_threads": 1,
    }
    same = train(df, FEATURE_COLUMNS, seed=args.seed, **settings)
    shuffled_df = df.with_columns(pl.col("label").shuffle(seed=args.seed))
    shuffled = train(shuffled_df, FEATURE_COLUMNS, seed=args.seed, **settings)
    sev = shuffled.evaluation
    shuffled_decision = skill_gate(sev.model, sev.momentum, None)
    seed_rows = []
    for s in args.control_seeds:
        r = train(df, FEATURE_COLUMNS, seed=s, **settings)
        d = skill_gate(r.evaluation.model, r.evaluation.momentum, None)
        seed_rows.append((s, r.best_value, r.evaluation.model, d.promote))
    return Controls(same, shuffled, shuffled_decision, seed_rows)


# ----------------------------------------------------------------------------------------------
# report


def _bp(x: float) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x * 1e4:.3f}"


def _num(x: float | None, fmt: str = "{:.4f}") -> str:
    return "n/a" if x is None or not np.isfinite(x) else fmt.format(x)


def _p(x: float | None) -> str:
    if x is None or not np.isfinite(x):
        return "n/a"
    return f"{x:.2e}" if x < 1e-3 else f"{x:.4f}"


def _metrics(evals: pl.DataFrame, forecast: str):
    """One forecast's ForecastMetrics from gold.model_evaluations rows (None if absent)."""
    from crypto_platform.ml.evaluation import METRIC_NAMES, ForecastMetrics

    rows = evals.filter(pl.col("forecast") == forecast)
    if rows.is_empty():
        return None
    row = rows.row(0, named=True)
    vals = {k: (float("nan") if row[k] is None else float(row[k])) for k in METRIC_NAMES}
    return ForecastMetrics(**{**vals, "n": int(vals["n"]), "n_directional": int(vals["n_directional"])})


def _metrics_row(name: str, m) -> str:
    return (
        f"| {name} | {m.n:,} | {_bp(m.mae)} | {_bp(m.rmse)} | {_num(m.hit_rate)} | {_num(m.hit_rate_null)} | "
        f"{m.n_directional:,} | {_p(m.hit_p_value)} | {_p(m.hit_p_value_naive)} | {_num(m.rank_ic)} |"
    )


def _ts(text: str, fmt: str = "%Y-%m-%d %H:%M") -> str:
    return datetime.fromisoformat(str(text)).strftime(fmt)


def _report(
    *, args: argparse.Namespace, run: PlatformRun, controls: Controls, timings: dict[str, float]
) -> str:
    from crypto_platform.ml.calibration import bins_markdown, rank_bins
    from crypto_platform.ml.evaluation import rank_ic
    from crypto_platform.transforms.features import FEATURE_COLUMNS, LOOKBACK_MINUTES

    m, z, mo = (_metrics(run.evals, f) for f in ("model", "zero", "momentum"))
    prm, gate = run.params, run.gate
    h = int(prm["horizon"])
    reasons = str(run.evals["gate_reasons"][0]).split("\n")
    promoted = bool(run.evals["promoted"][0])
    alias = str(run.evals["alias"][0])
    n_train, n_holdout = int(run.metrics["n_train"]), int(run.metrics["n_holdout"])
    n_trials, n_pruned = int(prm["n_trials"]), int(run.metrics["n_pruned_trials"])
    seed = int(prm["seed"])
    hold = run.holdout.with_columns(pl.col("ts").dt.date().alias("day"))
    daily = (
        hold.group_by("day")
        .agg(pl.len().alias("n"), pl.col("prediction"), pl.col("label"), pl.col("momentum"))
        .sort("day")
    )
    daily_rows = [
        f"| {day} | {n:,} | {_num(rank_ic(np.array(p), np.array(lb)))} | "
        f"{_num(rank_ic(np.array(mm), np.array(lb)))} |"
        for day, n, p, lb, mm in daily.iter_rows()
    ]
    daily_ics = [rank_ic(np.array(p), np.array(lb)) for _, n, p, lb, _ in daily.iter_rows() if n >= 300]
    positive_days = sum(ic > 0 for ic in daily_ics)
    qbins = rank_bins(run.holdout, 5, overlap=h)
    quintiles = bins_markdown(qbins, label="quintile")
    real_q = qbins["realized_bp"]
    spread = float(real_q[-1] - real_q[0])
    spread_se = float(np.sqrt(qbins["realized_se_bp"][0] ** 2 + qbins["realized_se_bp"][-1] ** 2))
    monotonic = real_q.is_sorted()

    imp = run.importance.head(10)
    importance = [
        f"| {i + 1} | `{f}` | {g:.4g} | {share:.1%} | {sp} |"
        for i, (f, g, share, sp) in enumerate(
            imp.select("feature", "gain", "gain_share", "splits").iter_rows()
        )
    ]
    unused = run.importance.filter(pl.col("splits") == 0)["feature"].to_list()
    folds = [
        f"| {f['fold']} | {_ts(f['train_start'], '%m-%d %H:%M')} – {_ts(f['train_end'], '%m-%d %H:%M')} | "
        f"{f['n_train']:,} | {_ts(f['val_start'], '%m-%d %H:%M')} – {_ts(f['val_end'], '%m-%d %H:%M')} | "
        f"{f['n_val']:,} | {_num(s)} |"
        for f, s in zip(gate["folds"], gate["cv_scores"], strict=True)
    ]
    bp = gate["best_params"]
    params = {
        k: bp[k]
        for k in (
            "learning_rate",
            "num_leaves",
            "min_data_in_leaf",
            "feature_fraction",
            "bagging_fraction",
            "lambda_l2",
        )
        if k in bp
    }
    param_text = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
    c = controls
    same = c.direct_same_seed.evaluation.model
    reproduced = np.isclose(same.rank_ic, m.rank_ic, rtol=1e-9, atol=0) and same.n == m.n
    seeds = [
        f"| {s} | {_num(cv)} | {_num(mm.rank_ic)} | {_num(mm.hit_rate)} | {_p(mm.hit_p_value)} | "
        f"{'yes' if ok else 'no'} |"
        for s, cv, mm, ok in c.seed_rows
    ]
    n_promoted = sum(1 for *_, ok in c.seed_rows if ok)
    sm = c.shuffled.evaluation.model
    mae_gap = (m.mae - z.mae) / z.mae
    sv = run.silver
    span = f"{sv['first']:%Y-%m-%d %H:%M} – {sv['last']:%Y-%m-%d %H:%M} UTC"
    verdict = f"**PROMOTE** (alias `{alias}`)" if promoted else f"**DO NOT PROMOTE** (alias `{alias}`)"
    t0, t1 = _ts(prm["train_start"]), _ts(prm["train_end"])
    h0, h1 = _ts(prm["eval_window_start"]), _ts(prm["eval_window_end"])
    now = f"{datetime.now(UTC):%Y-%m-%d %H:%M}"
    # the second gold/model run (another seed) against the first as champion
    s2 = run.second
    s2_model, s2_champ = _metrics(run.second_evals, "model"), _metrics(run.second_evals, "champion")
    s2_reasons = str(run.second_evals["gate_reasons"][0]).split("\n")
    tm = run.training_meta
    lines = [
        f"# Model evaluation: {h}-minute return forecaster, FTX BTC-PERP, January 2022",
        "",
        f"Generated by `./run python -m bench.model_eval` ({now} UTC, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, total {timings['total']:.0f} s). The data goes through the platform in a "
        "temporary project (`import_candles_job` → silver → gold/features + gold/labels → gold/training_set "
        "→ gold/model + gold/model_evaluations, Dagster `materialize` on an ephemeral instance, MLflow in a "
        "temporary SQLite store); every number below is read back from what the platform wrote "
        "(gold.model_evaluations in DuckDB, the model's materialization metadata, the MLflow run) or "
        "computed from it by the script; nothing is edited by hand.",
        "",
        "## Headline",
        "",
        f"- Holdout ({n_holdout:,} rows, {h0} – {h1} UTC): model rank IC **{_num(m.rank_ic)}** vs "
        f"momentum {_num(mo.rank_ic)}; hit rate **{_num(m.hit_rate)}** on {m.n_directional:,} directional "
        f"rows, one-sided binomial p = {_p(m.hit_p_value)} after the overlap adjustment "
        f"({_p(m.hit_p_value_naive)} naive).",
        f"- MAE: model {_bp(m.mae)} bp vs zero forecast {_bp(z.mae)} bp ({mae_gap:+.2%}); RMSE "
        f"{_bp(m.rmse)} vs {_bp(z.rmse)} bp. As expected for {h}-minute returns the zero forecast is almost "
        f"MAE-optimal; momentum is {'far worse' if mo.mae > 1.2 * z.mae else 'no better'} on both.",
        f"- Gate (gold/model, fresh registry): {verdict}, `{run.model_name}` version {run.version.version}.",
        f"- Controls: shuffled labels → rank IC {_num(sm.rank_ic)}, gate "
        f"{'PROMOTES (bad!)' if c.shuffled_decision.promote else 'rejects'}; other seeds promote "
        f"{n_promoted}/{len(c.seed_rows)}; holdout rank IC > 0 on {positive_days}/{len(daily_ics)} full "
        "days.",
        "",
        "## Data",
        "",
        f"- File `{DATA_REL.as_posix()}` imported by `import_candles_job` (instrument `{FTX}`, a `candles` "
        f"entry of the temporary instruments file) into silver/candles_1m: {sv['n']:,} one-minute candles in "
        f"{run.n_days} UTC-day partitions, {span}, {sv['empty']} empty bars, origin `{sv['origin']}`.",
        "- The file's `volume` is quote (USD) volume; base volume is derived as quote / close "
        f"(approximation: `vwap` differs from the close on {sv['vwap_not_close']} bars, so `vwap_dist` is "
        f"{'identically 0' if sv['vwap_not_close'] == 0 else 'informative'}). Bars with a taker split: "
        f"{sv['with_taker_split']}, with a trade count: {sv['with_trade_count']}, so `taker_buy_ratio_*` and "
        "`trade_intensity_60` are null where those are (unknown, not zero); one instrument, so the "
        "cross-symbol features are null too. LightGBM treats them as missing.",
        f"- gold/features: {len(FEATURE_COLUMNS)} causal features (`transforms.features`, lookback "
        f"{LOOKBACK_MINUTES} min); gold/labels: label = log(close[t+{h}] / close[t]), known at t+{h + 1} "
        "min. "
        f"gold/training_set (window {tm['window_days']} days, horizon {tm['horizon_minutes']} min): "
        f"{tm['rows']:,} rows, {_ts(tm['time_from'])} – {_ts(tm['time_to'])} UTC.",
        "",
        "## Split (time-ordered, purged)",
        "",
        "| part | bars (UTC) | rows |",
        "|---|---|---|",
        f"| development (tuning + final fit) | {t0} – {t1} | {n_train:,} |",
        f"| purge gap | {prm['gap_minutes']} min (≥ horizon {h} min): no development label overlaps a "
        "holdout label | — |",
        f"| holdout (evaluated once) | {h0} – {h1} | {n_holdout:,} |",
        "",
        f"Walk-forward CV inside the development span ({len(gate['folds'])} expanding folds, each validation "
        f"block preceded by the same {prm['gap_minutes']}-minute purge); rank IC of the best trial per fold:",
        "",
        "| fold | train bars | train rows | validation bars | validation rows | rank IC |",
        "|---|---|---|---|---|---|",
        *folds,
        "",
        "## Tuning",
        "",
        f"gold/model config: n_trials={args.n_trials}, seed={args.seed}, n_folds={args.folds}, "
        f"holdout_fraction={args.holdout}, num_threads=1. Optuna: {n_trials} trials (TPE sampler, seed "
        f"{seed}), {n_pruned} pruned by the MedianPruner on per-fold reports; best trial "
        f"#{gate['best_trial']} with mean CV rank IC {_num(gate['best_value'])}. Best parameters: "
        f"{param_text}; final model refitted on the whole development span with {prm['num_boost_round']} "
        "boosting rounds (median early-stopping round of the best trial's folds). Targets are clipped at "
        "the 0.5/99.5% training quantiles and centred on the training mean "
        f"(center_target={prm['center_target']}: the model forecasts the deviation from the month's drift, "
        "so its forecasts are not nearly all one sign); evaluation uses the raw labels.",
        "",
        "## Holdout evaluation",
        "",
        "From `gold.model_evaluations` (DuckDB view). MAE/RMSE in basis points of log return. Hit rate over "
        "rows where forecast and outcome are both non-zero; tested one-sided against the chance level (max "
        "of 50% and the level implied by the sign frequencies). p (adj.) divides hits and trials by the "
        f"label overlap ({h}: a {h}-minute label every minute), p (naive) treats every row as independent. "
        f"Baselines: zero = no move; momentum = the last observed {h}-minute log return, "
        f"log(close[t] / close[t-{h}]), known at the same time as the features.",
        "",
        "| forecast | n | MAE (bp) | RMSE (bp) | hit rate | chance level | directional n | p (adj.) "
        "| p (naive) | rank IC |",
        "|---|---|---|---|---|---|---|---|---|---|",
        _metrics_row("model", m),
        _metrics_row("zero", z),
        _metrics_row(f"momentum ({h} min)", mo),
        "",
        "Holdout by predicted quintile: equal-count bins by forecast rank (`ml.calibration.rank_bins`; tied "
        f"forecasts are split by time order, so neighbouring bins can share a forecast), mean predicted and "
        f"realised return in bp, standard error of the realised mean on n/{h} effective rows, share of up "
        "moves. (gold/model's `predicted_vs_realized` metadata has the same by decile, and the run a PNG.)",
        "",
        quintiles,
        "",
        "## Gate decision",
        "",
        f"{verdict}: gold/model's `skill_gate(model, momentum, champion, primary='rank_ic')`; the registry "
        "was empty, so there was no champion to beat:",
        "",
        *[f"- {r}" for r in reasons],
        "",
        "## Champion gate: a second gold/model run",
        "",
        f"gold/model materialized again on the same gold/training_set with seed {args.retrain_seed} "
        f"(version {s2['version']}): the current champion is re-scored on the new version's evaluation "
        f"window ({s2['eval_window']}), the same window as its own holdout. New version rank IC "
        f"{_num(s2_model.rank_ic)}, hit rate {_num(s2_model.hit_rate)} (p {_p(s2_model.hit_p_value)}); "
        + (f"champion re-scored: rank IC {_num(s2_champ.rank_ic)}. " if s2_champ else "champion not scored. ")
        + f"Result: alias `{s2['alias']}` ({s2['decision']}).",
        "",
        *[f"- {r}" for r in s2_reasons],
        "",
        "Picking the better of two seeds by their rank IC on this window is a selection on the holdout: "
        "the winner's number is optimistic, which is why the seed table below matters more than either run.",
        "",
        "## Controls",
        "",
        f"Direct `ml.training.train` calls on the platform's gold/training_set table (not through the "
        f"registry, so the champion is untouched). The same call with seed {seed} "
        f"{'reproduces' if reproduced else 'DOES NOT reproduce'} gold/model's holdout rank IC "
        f"({_num(same.rank_ic)} vs {_num(m.rank_ic)}).",
        "",
        "- **Shuffled labels** (same data and settings, labels permuted): CV rank IC "
        f"{_num(c.shuffled.best_value)}, holdout rank IC {_num(sm.rank_ic)}, hit rate {_num(sm.hit_rate)} vs "
        f"chance {_num(sm.hit_rate_null)} (p = {_p(sm.hit_p_value)}) → gate "
        f"{'promotes' if c.shuffled_decision.promote else 'rejects'}:",
        *[f"  - {r}" for r in c.shuffled_decision.reasons],
        "- **Other seeds** (sampler and LightGBM seed; same split):",
        "",
        "| seed | CV rank IC | holdout rank IC | hit rate | p (adj.) | gate |",
        "|---|---|---|---|---|---|",
        f"| {seed} (gold/model) | {_num(gate['best_value'])} | {_num(m.rank_ic)} | {_num(m.hit_rate)} | "
        f"{_p(m.hit_p_value)} | {'yes' if promoted else 'no'} |",
        *seeds,
        "",
        "- **Holdout day by day** (rank IC of model and momentum; partial first/last days included):",
        "",
        "| day | rows | model rank IC | momentum rank IC |",
        "|---|---|---|---|",
        *daily_rows,
        "",
        "## Top-10 features by gain",
        "",
        "From the run's `feature_importance.csv`.",
        "",
        "| # | feature | gain | share | splits |",
        "|---|---|---|---|---|",
        *importance,
        "",
        f"Never used (0 splits): {', '.join(f'`{u}`' for u in unused) or 'none'}.",
        "",
        "## MLflow",
        "",
        f"gold/model logged a run to the temporary store (`sqlite:///<tmp>/mlflow/mlflow.db`, artifacts "
        f"beside it) and registered `{run.model_name}` version {run.version.version} "
        f"(alias `{alias}` when trained). The run holds {len(prm)} parameters, {len(run.metrics)} metrics "
        f"(model and baseline metrics, CV folds, gate) and the artifacts "
        f"{', '.join(f'`{a}`' for a in run.artifacts)}. {run.mlflow_check}",
        "",
        "## Reading these numbers",
        "",
        "- One month of one instrument on one (now defunct) exchange; the holdout is "
        f"~{n_holdout / 1440:.1f} days. With overlapping labels the effective sample is about "
        f"1/{h} of the row count, so the standard error of a rank IC is roughly 1/sqrt(n/h) "
        f"≈ {1 / np.sqrt(max(1, n_holdout / h)):.3f}.",
        "- Whatever edge there is, is small in return terms: in the quintile table the realised return of "
        f"the top minus the bottom quintile is {spread:+.2f} bp (s.e. ≈ {spread_se:.2f} bp) and it is "
        f"{'monotonic' if monotonic else 'not monotonic'} across the bins; the forecast takes only "
        f"{run.holdout['prediction'].n_unique()} distinct values on the holdout. This report has no "
        "transaction costs or latency: it says nothing about tradability.",
        f"- The largest gains are {', '.join(f'`{f}`' for f in run.importance['feature'].head(3))}. Where "
        "these are volatility levels or time of day rather than return features, the model is mapping a "
        "regime to the sign of the next minutes' drift: plausible in a month of sell-offs, not evidence "
        "that it persists beyond it.",
        "- Not a pristine holdout: an earlier version of this script (targets not centred) was run on the "
        "same split; its forecasts were 2–41% positive depending on the seed, so its hit rate mostly "
        "measured the holdout's drift (gate passed for 2 of 6 seeds, rank IC 0.038–0.060 unchanged, since "
        "centring only shifts forecasts by a constant). Centring the target was decided after seeing that. "
        "Features, horizon and search space were not changed. The seed table shows how much depends on "
        "the tuning's luck.",
        "",
        "Timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()) + ".",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
