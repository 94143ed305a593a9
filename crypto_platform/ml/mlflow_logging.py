"""What one training run logs to MLflow besides the model: metrics, tables, gate summary, extra files,
the pinned runtime requirements. Called inside the active run opened by `registry.log_and_register`."""

from __future__ import annotations

import json
import tempfile
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import lightgbm as lgb
import mlflow
import numpy as np
import pandas as pd
import polars as pl
import scipy

from crypto_platform.ml.feature_availability import model_features
from crypto_platform.ml.model_info import DRIFT_REFERENCE_ARTIFACT

if TYPE_CHECKING:  # types only: serving a model never imports training (optuna)
    from crypto_platform.ml.evaluation import GateDecision
    from crypto_platform.ml.training import TrainResult

HOLDOUT_ARTIFACT = "holdout_predictions.parquet"  # exchange, symbol, ts, label, prediction, momentum


def model_input(
    features: pl.DataFrame | pd.DataFrame, feature_cols: list[str], model: str = "the model"
) -> pd.DataFrame:
    """pandas float64 frame of exactly the model's columns (nulls -> NaN); MissingFeatureError names
    `model` and the absent features."""
    frame = features if isinstance(features, pl.DataFrame) else pl.from_pandas(features)
    return model_features(frame, feature_cols, model=model).to_pandas()


def run_metrics(result: TrainResult, decision: GateDecision) -> dict[str, float]:
    metrics: dict[str, float] = {
        "cv_mean_rank_ic": result.best_value,
        "optimism_rank_ic": result.optimism,  # CV (selected) minus untouched holdout
        "n_features": float(len(result.feature_cols)),
        "n_dropped_features": float(len(result.dropped_features)),
        "best_trial_value": result.best_value,
        "n_train": float(result.n_train),
        "n_holdout": float(result.n_holdout),
        "n_pruned_trials": float(result.n_pruned),
        "gate_promote": 1.0 if decision.promote else 0.0,
    }
    metrics.update({f"cv_fold{k + 1}_rank_ic": s for k, s in enumerate(result.cv_scores)})
    for name, m in result.evaluation.forecasts().items():
        metrics.update({f"{name}_{k}": v for k, v in m.as_dict().items()})
    return {k: float(v) for k, v in metrics.items() if np.isfinite(v)}


def run_tags(result: TrainResult) -> dict[str, str]:
    """Tags of the run and the model version: how honest the CV estimate was, what the model learned from."""
    ic = result.evaluation.model.rank_ic
    return {
        "optimism": (
            f"{result.optimism:+.4f} rank IC: mean CV {result.best_value:.4f} (best of {result.n_trials} "
            f"trials) vs untouched holdout {ic:.4f} ({result.holdout_start:%Y-%m-%d %H:%M} .. "
            f"{result.holdout_end:%Y-%m-%d %H:%M} UTC)"
        ),
        "dropped_features": ", ".join(result.dropped_features) or "none",
    }


def log_tables(
    result: TrainResult, decision: GateDecision, reference: pl.DataFrame, feature_cols: list[str]
) -> bytes:
    """Log the importance, evaluation, holdout and gate tables and the drift reference sample; the
    reference file's bytes as logged (registration records their SHA-256)."""
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        result.evaluation.importance.write_csv(d / "feature_importance.csv")
        result.evaluation.table().write_csv(d / "evaluation.csv")
        result.holdout.write_parquet(d / HOLDOUT_ARTIFACT)
        keep = [c for c in reference.columns if c in {"exchange", "symbol", "ts", *feature_cols}]
        (d / "drift").mkdir()
        reference.select(keep).write_parquet(d / DRIFT_REFERENCE_ARTIFACT)
        summary = {
            "promote": decision.promote,
            "primary": decision.primary,
            "reasons": decision.reasons,
            "best_trial": result.best_trial,
            "best_value": result.best_value,
            "best_params": result.best_params,
            "cv_scores": result.cv_scores,
            "folds": [{k: jsonable(v) for k, v in f.items()} for f in result.folds],
        }
        (d / "gate.json").write_text(json.dumps(summary, indent=2, default=str))
        for name in ["feature_importance.csv", "evaluation.csv", "gate.json", HOLDOUT_ARTIFACT]:
            mlflow.log_artifact(str(d / name))
        mlflow.log_artifact(str(d / DRIFT_REFERENCE_ARTIFACT), artifact_path="drift")
        return (d / DRIFT_REFERENCE_ARTIFACT).read_bytes()


def log_files(files: dict[str, bytes]) -> None:
    """Log raw files into the active run under their run-relative paths."""
    with tempfile.TemporaryDirectory() as tmp:
        for i, (rel, data) in enumerate(files.items()):
            path = Path(rel)
            if path.is_absolute() or ".." in path.parts:
                raise ValueError(f"log_and_register: artifact path {rel!r} must be relative, inside the run")
            local = Path(tmp) / str(i) / path.name
            local.parent.mkdir()
            local.write_bytes(data)
            parent = path.parent.as_posix()
            mlflow.log_artifact(str(local), artifact_path=None if parent == "." else parent)


def jsonable(v: object) -> object:
    return v.isoformat() if isinstance(v, datetime) else v


def pip_requirements() -> list[str]:
    """Pinned runtime requirements of the pyfunc model (explicit: no slow environment inference)."""
    return [
        f"mlflow=={mlflow.__version__}",
        f"lightgbm=={lgb.__version__}",
        f"numpy=={np.__version__}",
        f"pandas=={pd.__version__}",
        f"scipy=={scipy.__version__}",
    ]
