"""Model evaluation on real data through the platform: FTX BTC-PERP 1-minute candles (Jan 2022).

Run from the repository root:

    ./run python -m bench.model_eval            # writes bench/MODEL.md (~5-8 min on 2 shared cores)

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

Before that, `venue_study` trains variants of the model on Binance BTC/USDT klines (December 2021 +
February 2022, and pooled series) and scores them and the gate's baselines on windows they never saw:
another month, another venue (FTX BTC-PERP, January 2022), three years later, another instrument
(report part 1; `venue_markdown`).

Controls that are not platform runs (direct `ml.training.train` calls on the platform's own
gold/training_set table, so the champion and registry are not disturbed): the same training on
shuffled labels, and other seeds.

`measure(Options) -> Result` runs it all, `render(Result) -> str` is the report.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from bench.model_eval.figures import Result
from bench.model_eval.markdown import render
from bench.model_eval.measurement import Options, measure
from bench.model_eval.venue_markdown import render_study
from bench.model_eval.venue_study import run_study
from bench.report import write_report

PROJECT_DIR = Path(__file__).resolve().parents[2]

__all__ = ["Options", "Result", "main", "measure", "render"]


def parse_args(argv: list[str] | None) -> tuple[Options, Path]:
    """The CLI flags as Options, and the report path."""
    ap = argparse.ArgumentParser(prog="python -m bench.model_eval", description=__doc__.splitlines()[0])
    ap.add_argument("--horizon", type=int, default=5)
    ap.add_argument("--n-trials", type=int, default=20)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--holdout", type=float, default=0.2)
    ap.add_argument("--window-days", type=float, default=32.0, help="training window (the file: ~31.3 d)")
    ap.add_argument("--retrain-seed", type=int, default=1, help="seed of the second gold/model run")
    ap.add_argument("--control-seeds", type=int, nargs="*", default=[1, 2, 3])
    ap.add_argument(
        "--study-trials", type=int, default=6, help="Optuna trials per variant of the venue study"
    )
    ap.add_argument("--out", type=Path, default=PROJECT_DIR / "bench" / "MODEL.md")
    a = ap.parse_args(argv)
    opts = Options(
        horizon=a.horizon,
        n_trials=a.n_trials,
        seed=a.seed,
        folds=a.folds,
        holdout=a.holdout,
        window_days=a.window_days,
        retrain_seed=a.retrain_seed,
        control_seeds=tuple(a.control_seeds),
        study_trials=a.study_trials,
    )
    return opts, a.out


def main(argv: list[str] | None = None) -> int:
    """The venue study, then the platform on the FTX month and the controls; write the report."""
    opts, out = parse_args(argv)
    study = run_study(n_trials=opts.study_trials, seed=opts.seed)
    result = measure(opts)
    write_report(out, render_study(study) + "\n\n---\n\n" + render(result))
    print(f"[model_eval] wrote {out} ({study.seconds + result.timings['total']:.1f}s)")
    return 0
