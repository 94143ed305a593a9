"""bench.model_eval's venue study: the variant kept by rule, the windows a variant may be scored on, the
volatility scale, and the report's figures (from real `evaluate` reports on small frames)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from bench.model_eval.venue_markdown import IN_PERIOD, render_study
from bench.model_eval.venue_study import (
    TEST,
    VALIDATION,
    VARIANTS,
    Score,
    Study,
    VariantResult,
    candidates,
    kept_variant,
    vol_scale,
)
from crypto_platform.ml.evaluation import evaluate


def _frame(n: int = 400, seed: int = 1) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    label = rng.normal(0, 1e-3, n)
    return pl.DataFrame(
        {
            "ts": [datetime(2022, 1, 3, tzinfo=UTC) + timedelta(minutes=i) for i in range(n)],
            "label": label,
            "ret_5": rng.normal(0, 1e-3, n),
        }
    )


def _report(strength: float, seed: int = 1):
    f = _frame(seed=seed)
    rng = np.random.default_rng(seed + 10)
    model = strength * f["label"].to_numpy() + rng.normal(0, 1e-3, f.height)
    reversal = -f["ret_5"].to_numpy()
    return evaluate(
        f,
        model,
        horizon=5,
        momentum_col="ret_5",
        baselines={
            "reversal": reversal,
            "ridge": 0.1 * f["label"].to_numpy() + rng.normal(0, 1e-3, f.height),
        },
        specs={"reversal": "reversal: -ret_5", "ridge": "ridge (alpha 1)"},
    )


def _result(i: int, ics: dict[str, float | None]) -> VariantResult:
    """A variant result whose windows carry real reports with the given rough strengths."""
    r = VariantResult(VARIANTS[i], cv_rank_ic=0.05, n_train=1000, n_features=20, dropped={"vwap_dist": "x"})
    for w, strength in ics.items():
        r.scores[w] = Score(w, _report(strength) if strength is not None else None, "period trained on")
    return r


def test_the_kept_variant_is_chosen_on_the_validation_window_only() -> None:
    a = _result(0, {VALIDATION: 0.2, TEST: 5.0})
    b = _result(1, {VALIDATION: 0.5, TEST: 0.0})  # better on validation, worse on the test: still kept
    c = _result(2, {VALIDATION: 0.3, TEST: 9.0})  # worse on validation than b: not kept
    assert b.ic(VALIDATION) > a.ic(VALIDATION) > 0 and c.ic(VALIDATION) < b.ic(VALIDATION)
    assert kept_variant([a, b, c]) == VARIANTS[1].name
    d = _result(3, {VALIDATION: None})  # not scorable on validation: never kept
    assert math.isnan(d.ic(VALIDATION)) and kept_variant([a, d]) == VARIANTS[0].name


def test_candidate_features_and_the_volatility_scale() -> None:
    from crypto_platform.transforms.features import FEATURE_COLUMNS

    price = candidates("price")
    assert "taker_buy_ratio_5" not in price and "vwap_dist" not in price and "zret_5" in price
    assert candidates("all") == FEATURE_COLUMNS
    assert "atr_14" in price and "atr_14" not in candidates("scale-free")
    f = pl.DataFrame({"rv_60": [0.001, None, 0.0, 0.002]})
    np.testing.assert_allclose(vol_scale(f)[[0, 3]], [0.001 * math.sqrt(5), 0.002 * math.sqrt(5)], rtol=1e-15)
    assert np.isnan(vol_scale(f)[[1, 2]]).all()


def test_render_states_the_target_verdict_and_the_shortfall() -> None:
    kept = _result(0, {IN_PERIOD: 0.3, VALIDATION: 0.2, TEST: 0.05})
    study = Study(windows={VALIDATION: 400, TEST: 400}, results=[kept], kept=VARIANTS[0].name, seconds=12.0)
    md = render_study(study)
    e = kept.scores[TEST].report
    assert e is not None
    m = e.model
    assert f"rank IC **{m.rank_ic:.4f}**" in md and f"hit rate **{m.hit_rate:.4f}**" in md
    assert "**MISSED**" in md
    assert f"rank IC {m.rank_ic:.4f} is {0.07 - m.rank_ic:.4f} short of 0.07" in md
    optimism = 0.05 - kept.ic(IN_PERIOD)
    assert f"(optimism {optimism:+.4f})" in md
    assert f"| `base` (kept) | price features, raw target | 1,000 | 20 (1) | 0.0500 | {optimism:+.4f} |" in md
    best = e.best_baseline("rank_ic")
    assert f"vs {best.baseline} {best.baseline_value:.4f} (p " in md


def test_a_strong_model_meets_the_target() -> None:
    kept = _result(0, {IN_PERIOD: 3.0, VALIDATION: 3.0, TEST: 3.0})
    e = kept.scores[TEST].report
    assert e is not None and e.model.rank_ic > 0.07 and e.model.hit_rate > 0.53
    assert e.best_baseline("rank_ic").p_value < 0.05
    md = render_study(Study({TEST: 400}, [kept], VARIANTS[0].name, 1.0))
    assert "**MET**." in md


@pytest.mark.parametrize("window", [VALIDATION, TEST])
def test_a_window_in_a_trained_period_is_not_scored(window: str) -> None:
    r = _result(0, {window: None})
    assert "n/a (period trained on)" in render_study(Study({window: 1}, [r], VARIANTS[0].name, 1.0))
