"""LightGBM return forecaster tuned with Optuna on purged walk-forward folds, scored on a held-out window.

Time layout (unique bar times, oldest first):

    | fold block 0 | block 1 | ... | block n_folds |  gap  |  holdout (holdout_fraction)  |
      fold k trains on blocks < k (minus a gap) and validates on block k (expanding window)

Every train/validation and development/holdout boundary has a purge gap of `gap_minutes` >= the
label horizon h: a training row's label log(close[t+h]/close[t]) must be known (t + h + 1 minute)
no later than the first evaluated bar closes, so no training label overlaps an evaluated one.

The holdout is the final `holdout_fraction` of time, or [eval_from, eval_to) (`splits`). Nothing that
chooses the model sees it (not Optuna, not early stopping, not the fitted baselines), so its rank IC
is the out-of-sample estimate; the best trial's mean CV rank IC minus it is the selection's
optimism (`TrainResult.optimism`). Candidate features null or constant on the development span are
dropped (`feature_availability`); the model learns from, and records, the rest.

Optuna (seeded TPE sampler, MedianPruner) maximises the mean walk-forward rank IC; each fold's score
is reported so unpromising trials are pruned early. Boosting stops early on the fold's validation
correlation; the final model is refitted on the whole development span with the best parameters
and the median best iteration count of the best trial, then evaluated once on the holdout against
the zero and momentum baselines and the fitted ones (`baselines`: reversal and ridge, fitted on the
same development span), with a paired HAC test against each (`evaluation.evaluate`). Training
targets are clipped at the training span's 0.5% / 99.5% quantiles (fat tails otherwise dominate
the squared loss) and centred on the training mean (see `train`); evaluation always uses the raw labels.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import lightgbm as lgb
import numpy as np
import optuna
import polars as pl

from crypto_platform.ml.baselines import fit_reversal, fit_ridge
from crypto_platform.ml.evaluation import EvaluationReport, evaluate, rank_ic
from crypto_platform.ml.feature_availability import usable_features
from crypto_platform.ml.splits import evaluation_split, walk_forward_folds
from crypto_platform.schemas import INDEX_COLUMNS

CLIP_QUANTILE = 0.005
FIXED_PARAMS: dict[str, Any] = {
    "objective": "regression",
    "metric": "None",  # early stopping uses the correlation feval below
    "num_threads": 1,  # see `train(num_threads=...)`
    "deterministic": True,
    "force_row_wise": True,
    "verbose": -1,
    "bagging_freq": 1,
}
_MIN_TIMES_PER_BLOCK = 50  # bar times per walk-forward block (and the holdout) at the least
DATASET_PARAMS: dict[str, Any] = {"max_bin": 63, "feature_pre_filter": False, "verbose": -1}


@dataclass
class TrainResult:
    """The fitted model, how it was chosen (Optuna study, walk-forward CV) and its holdout evaluation."""

    booster: lgb.Booster
    feature_cols: list[str]
    horizon: int
    gap_minutes: int
    best_params: dict[str, Any]  # full LightGBM parameters of the final model
    best_value: float  # the study's best trial value: mean walk-forward rank IC
    best_trial: int
    n_trials: int
    n_pruned: int
    cv_scores: list[float]  # per-fold rank IC of the best trial
    num_boost_round: int
    n_train: int
    n_holdout: int
    train_start: datetime
    train_end: datetime
    holdout_start: datetime
    holdout_end: datetime
    evaluation: EvaluationReport
    holdout: pl.DataFrame  # exchange, symbol, ts, label, prediction, momentum
    seed: int
    folds: list[dict[str, Any]] = field(default_factory=list)  # per fold: train/validation bounds and sizes
    center_target: bool = True  # the model forecasts the deviation from the training span's mean return
    dropped_features: dict[str, str] = field(default_factory=dict)  # candidate -> why it was not learned from

    @property
    def optimism(self) -> float:
        """Selection optimism: the best trial's mean CV rank IC minus the untouched holdout's rank IC."""
        return self.best_value - self.evaluation.model.rank_ic

    def params_for_logging(self) -> dict[str, Any]:
        """Flat parameters describing the training run (for MLflow)."""
        return {
            **{f"lgb_{k}": v for k, v in self.best_params.items()},
            "horizon": self.horizon,
            "gap_minutes": self.gap_minutes,
            "n_trials": self.n_trials,
            "n_folds": len(self.cv_scores),
            "num_boost_round": self.num_boost_round,
            "seed": self.seed,
            "n_features": len(self.feature_cols),
            "n_dropped_features": len(self.dropped_features),
            "center_target": self.center_target,
        }


def train(
    df: pl.DataFrame,
    feature_cols: list[str],
    *,
    horizon: int,
    n_trials: int = 20,
    seed: int = 42,
    n_folds: int = 4,
    holdout_fraction: float = 0.2,
    gap_minutes: int | None = None,
    momentum_col: str | None = None,
    label_col: str = "label",
    max_rounds: int = 300,
    early_stopping_rounds: int = 30,
    timeout_s: float | None = None,
    num_threads: int = 1,
    center_target: bool = True,
    eval_from: datetime | str | None = None,
    eval_to: datetime | str | None = None,
) -> TrainResult:
    """Tune (Optuna, purged walk-forward CV), refit on the development span, evaluate on the holdout.

    With `center_target` the model learns the deviation from the training span's mean return, not
    the drift itself (a few hundredths of a bp per minute that flips between regimes): a fitted
    drift makes nearly every forecast one sign, and the hit rate a bet on the next window's drift.

    The evaluation window is the final `holdout_fraction` of time, or [`eval_from`, `eval_to`) when
    given (`splits.evaluation_split`). `feature_cols` are candidates: those null or constant on the
    development span are dropped (`TrainResult.dropped_features` says why) and the model learns from
    the rest (`TrainResult.feature_cols`).

    `num_threads` defaults to 1: on a shared 2-core host, 2 OpenMP threads were ~25% faster when
    idle but stalled up to ~100x (one 0.3 s fit took 59 s) when another process held a core.
    """
    momentum_col = momentum_col or f"ret_{horizon}"
    gap = max(horizon, gap_minutes if gap_minutes is not None else horizon)
    data = _prepare(df, feature_cols, label_col, momentum_col, n_folds, holdout_fraction)
    purge = timedelta(minutes=gap)
    dev, holdout = evaluation_split(
        data,
        gap=purge,
        holdout_fraction=holdout_fraction,
        eval_from=eval_from,
        eval_to=eval_to,
        min_dev_times=_MIN_TIMES_PER_BLOCK * (n_folds + 1),
    )
    selection = usable_features(dev, feature_cols)
    feature_cols = selection.used
    folds = walk_forward_folds(dev, n_folds, purge)

    x_dev, y_dev = _xy(dev, feature_cols, label_col)
    fold_data = []
    for f in folds:
        tr, va = f.pop("train_idx"), f.pop("val_idx")
        to_target = _target_transform(y_dev[tr], center_target)
        dtrain = lgb.Dataset(
            x_dev[tr],
            to_target(y_dev[tr]),
            feature_name=feature_cols,
            params=DATASET_PARAMS,
            free_raw_data=False,
        )
        dval = lgb.Dataset(
            x_dev[va], to_target(y_dev[va]), reference=dtrain, params=DATASET_PARAMS, free_raw_data=False
        )
        fold_data.append((dtrain, dval, x_dev[va], y_dev[va]))

    fixed = {**FIXED_PARAMS, "num_threads": num_threads, "seed": seed}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(8, max(2, n_trials // 3))),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0),
    )
    study.optimize(
        lambda t: _objective(t, fold_data, fixed, max_rounds, early_stopping_rounds),
        n_trials=n_trials,
        timeout=timeout_s,
    )
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise RuntimeError("train: no Optuna trial completed (all pruned or failed)")
    best = study.best_trial
    params = {**fixed, **best.params}
    rounds = max(10, int(np.median(best.user_attrs["best_iterations"])))

    booster = lgb.train(
        params,
        lgb.Dataset(
            x_dev,
            _target_transform(y_dev, center_target)(y_dev),
            feature_name=feature_cols,
            params=DATASET_PARAMS,
        ),
        num_boost_round=rounds,
    )
    pred = predict(booster, holdout, feature_cols)
    reversal = fit_reversal(dev, label_col=label_col)
    ridge = fit_ridge(dev, feature_cols, label_col=label_col, center_target=center_target)
    report = evaluate(
        holdout,
        pred,
        horizon=horizon,
        momentum_col=momentum_col,
        label_col=label_col,
        booster=booster,
        baselines={"reversal": reversal.predict(holdout), "ridge": ridge.predict(holdout)},
        specs={"reversal": reversal.describe(), "ridge": ridge.describe()},
    )
    scored = holdout.select(
        *INDEX_COLUMNS,
        pl.col(label_col).alias("label"),
        pl.Series("prediction", pred),
        pl.col(momentum_col).alias("momentum"),
    )
    return TrainResult(
        booster=booster,
        feature_cols=list(feature_cols),
        horizon=horizon,
        gap_minutes=gap,
        best_params=params,
        best_value=float(best.value),  # type: ignore[arg-type]
        best_trial=best.number,
        n_trials=len(study.trials),
        n_pruned=sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials),
        cv_scores=list(best.user_attrs["fold_scores"]),
        num_boost_round=rounds,
        n_train=dev.height,
        n_holdout=holdout.height,
        train_start=dev["ts"].min(),  # type: ignore[arg-type]
        train_end=dev["ts"].max(),  # type: ignore[arg-type]
        holdout_start=holdout["ts"].min(),  # type: ignore[arg-type]
        holdout_end=holdout["ts"].max(),  # type: ignore[arg-type]
        evaluation=report,
        holdout=scored,
        seed=seed,
        folds=folds,
        center_target=center_target,
        dropped_features=selection.dropped,
    )


def predict(booster: lgb.Booster, df: pl.DataFrame, feature_cols: list[str]) -> np.ndarray:
    """Model forecasts for the rows of `df` (nulls are passed to LightGBM as missing values)."""
    return np.asarray(booster.predict(_matrix(df, feature_cols)), dtype=float)


# ----------------------------------------------------------------------------------------------


def _prepare(
    df: pl.DataFrame,
    feature_cols: list[str],
    label_col: str,
    momentum_col: str,
    n_folds: int,
    holdout_fraction: float,
) -> pl.DataFrame:
    missing = [c for c in [*INDEX_COLUMNS, label_col, momentum_col, *feature_cols] if c not in df.columns]
    if missing:
        hint = " (momentum: see transforms.labels.past_log_return)" if momentum_col in missing else ""
        raise ValueError(f"train: frame lacks columns {missing}{hint}")
    if not 0.0 < holdout_fraction < 0.9:
        raise ValueError(f"train: holdout_fraction must be in (0, 0.9), got {holdout_fraction}")
    if n_folds < 1:
        raise ValueError(f"train: n_folds must be >= 1, got {n_folds}")
    data = df.filter(pl.col(label_col).is_not_null() & pl.col(label_col).is_finite()).sort(
        ["ts", "exchange", "symbol"]
    )
    n_times = data["ts"].n_unique()
    if n_times < _MIN_TIMES_PER_BLOCK * (n_folds + 2):
        raise ValueError(f"train: {n_times} labelled bar times is too few for {n_folds} folds and a holdout")
    return data


def _matrix(df: pl.DataFrame, feature_cols: list[str]) -> np.ndarray:
    return df.select([pl.col(c).cast(pl.Float64) for c in feature_cols]).to_numpy()


def _xy(df: pl.DataFrame, feature_cols: list[str], label_col: str) -> tuple[np.ndarray, np.ndarray]:
    return _matrix(df, feature_cols), df[label_col].cast(pl.Float64).to_numpy()


def _target_transform(y_train: np.ndarray, center: bool) -> Callable[[np.ndarray], np.ndarray]:
    """Clip at the training quantiles and (optionally) subtract the clipped training mean."""
    lo, hi = np.quantile(y_train, [CLIP_QUANTILE, 1 - CLIP_QUANTILE])
    shift = float(np.clip(y_train, lo, hi).mean()) if center else 0.0

    def transform(y: np.ndarray) -> np.ndarray:
        return np.clip(y, lo, hi) - shift

    return transform


def _corr_feval(preds: np.ndarray, data: lgb.Dataset) -> tuple[str, float, bool]:
    """Pearson correlation of forecast and (clipped) label: cheap per-iteration proxy of the rank IC."""
    y = data.get_label()
    if np.ptp(preds) == 0 or np.ptp(y) == 0:
        return "corr", 0.0, True
    return "corr", float(np.corrcoef(preds, y)[0, 1]), True


def _objective(
    trial: optuna.Trial,
    fold_data: list[tuple[lgb.Dataset, lgb.Dataset, np.ndarray, np.ndarray]],
    fixed: dict[str, Any],
    max_rounds: int,
    early_stopping_rounds: int,
) -> float:
    """Mean walk-forward rank IC of one parameter set; reports each fold so MedianPruner can prune."""
    params = {
        **fixed,
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.2, log=True),
        "num_leaves": trial.suggest_int("num_leaves", 4, 64, log=True),
        "min_data_in_leaf": trial.suggest_int("min_data_in_leaf", 50, 2000, log=True),
        "feature_fraction": trial.suggest_float("feature_fraction", 0.4, 1.0),
        "bagging_fraction": trial.suggest_float("bagging_fraction", 0.4, 1.0),
        "lambda_l2": trial.suggest_float("lambda_l2", 1e-3, 100.0, log=True),
    }
    scores: list[float] = []
    iterations: list[int] = []
    for step, (dtrain, dval, x_val, y_val) in enumerate(fold_data):
        booster = lgb.train(
            params,
            dtrain,
            num_boost_round=max_rounds,
            valid_sets=[dval],
            feval=_corr_feval,
            callbacks=[lgb.early_stopping(early_stopping_rounds, verbose=False)],
        )
        best_iter = booster.best_iteration or max_rounds
        ic = rank_ic(booster.predict(x_val, num_iteration=best_iter), y_val)
        scores.append(0.0 if not math.isfinite(ic) else ic)
        iterations.append(best_iter)
        trial.report(float(np.mean(scores)), step)
        if trial.should_prune():
            raise optuna.TrialPruned()
    trial.set_user_attr("fold_scores", scores)
    trial.set_user_attr("best_iterations", iterations)
    return float(np.mean(scores))
