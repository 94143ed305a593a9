"""Markdown that gold/model shows in the UI about a training run: how honest its estimate is, and
which features the model learned from (and which it could not, and why)."""

from __future__ import annotations

from crypto_platform.metadata import frame_markdown
from crypto_platform.ml.feature_availability import FeatureSelection
from crypto_platform.ml.training import TrainResult


def estimate_markdown(result: TrainResult) -> str:
    """The tuning's CV score, the untouched holdout's score, and their difference (the optimism)."""
    ic = result.evaluation.model.rank_ic
    folds = ", ".join(f"{s:.4f}" for s in result.cv_scores)
    return "\n".join(
        [
            "| estimate | rank IC |",
            "|---|---|",
            f"| mean walk-forward CV of the selected trial (best of {result.n_trials}; folds {folds}) "
            f"| {result.best_value:.4f} |",
            f"| untouched holdout {result.holdout_start:%Y-%m-%d %H:%M} .. "
            f"{result.holdout_end:%Y-%m-%d %H:%M} UTC ({result.n_holdout} rows) | {ic:.4f} |",
            f"| **optimism** (CV - holdout) | **{result.optimism:+.4f}** |",
            "",
            "The holdout is after every tuning fold (purged by the horizon) and is used neither by Optuna, "
            "nor by early stopping, nor by the fitted baselines: its figure is the out-of-sample estimate. "
            "The CV figure is the maximum over the trials, so it is biased upwards.",
        ]
    )


def features_markdown(result: TrainResult) -> str:
    """The features the model learned from, and the dropped candidates with the reason."""
    selection = FeatureSelection(result.feature_cols, result.dropped_features)
    used = f"learned from {len(result.feature_cols)} features: " + ", ".join(
        f"`{c}`" for c in result.feature_cols
    )
    if not result.dropped_features:
        return used + "\n\nno candidate feature was dropped"
    return (
        f"{used}\n\ndropped {len(result.dropped_features)} (not learned from, never fed to the model):\n\n"
        + (frame_markdown(selection.table()))
    )
