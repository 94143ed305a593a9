"""Controls that are not platform runs: direct `ml.training.train` calls on the platform's gold/training_set.

They do not touch the registry, so the champion is not disturbed: the same seed (must reproduce
gold/model), shuffled labels (must not pass the gate), other seeds (how much is the tuning's luck).
"""

from __future__ import annotations

import polars as pl

from bench.model_eval.figures import ControlFigures, SeedRow
from bench.model_eval.platform_run import TrainingOptions


def run_controls(opts: TrainingOptions, control_seeds: list[int], df: pl.DataFrame) -> ControlFigures:
    """Train on `df` (gold/training_set) with the run's settings: same seed, shuffled labels, other seeds."""
    from crypto_platform.ml.evaluation import skill_gate
    from crypto_platform.ml.training import train
    from crypto_platform.transforms.features import FEATURE_COLUMNS

    settings = {
        "horizon": opts.horizon,
        "n_trials": opts.n_trials,
        "n_folds": opts.folds,
        "holdout_fraction": opts.holdout,
        "timeout_s": 900.0,
        "num_threads": 1,
    }
    same = train(df, FEATURE_COLUMNS, seed=opts.seed, **settings)
    shuffled_df = df.with_columns(pl.col("label").shuffle(seed=opts.seed))
    shuffled = train(shuffled_df, FEATURE_COLUMNS, seed=opts.seed, **settings)
    sev = shuffled.evaluation
    # gold/model's gate: the best baseline (zero, momentum, reversal, ridge) beaten with HAC p < 0.05
    decision = skill_gate(sev.model, sev.momentum, None, baselines=sev.best_baseline("rank_ic"))
    seeds = []
    for s in control_seeds:
        r = train(df, FEATURE_COLUMNS, seed=s, **settings)
        ev = r.evaluation
        d = skill_gate(ev.model, ev.momentum, None, baselines=ev.best_baseline("rank_ic"))
        seeds.append(SeedRow(s, r.best_value, r.evaluation.model, d.promote))
    return ControlFigures(
        same_seed=same.evaluation.model,
        shuffled_cv=shuffled.best_value,
        shuffled=sev.model,
        shuffled_promote=decision.promote,
        shuffled_reasons=list(decision.reasons),
        seeds=seeds,
    )
