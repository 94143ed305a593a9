"""Which features a model can learn from, and feeding a model exactly the features it learned.

An instrument's features are those its inputs support: on OHLCV-only history (no taker split, no
trade count) `taker_buy_ratio_*` and `trade_intensity_60` are null on every row and `vwap_dist` is
constant 0; with one instrument the cross-symbol features are null. Such a column carries no
information in training, and LightGBM would silently ignore it while the registry claimed the model
used it. `usable_features` splits the candidates into the ones to learn from and the dropped ones
with the reason; the model records the former (model-version tag `feature_cols`), and
`model_features` hands a model those columns only, failing with a clear error when one is absent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl


class MissingFeatureError(ValueError):
    """The input lacks a feature the model learned from."""


@dataclass(frozen=True)
class FeatureSelection:
    """The features a model learns from, and the candidates dropped with why."""

    used: list[str]
    dropped: dict[str, str] = field(default_factory=dict)  # feature -> reason

    def table(self) -> pl.DataFrame:
        """(feature, reason) of every dropped feature, in candidate order."""
        return pl.DataFrame(
            {"feature": list(self.dropped), "reason": list(self.dropped.values())},
            schema={"feature": pl.String, "reason": pl.String},
        )


def usable_features(frame: pl.DataFrame, candidates: list[str]) -> FeatureSelection:
    """Split `candidates` into the columns of `frame` that vary and the ones null (or NaN) on every row
    or constant on every non-null row, with the reason. Fails when no candidate is usable."""
    missing = [c for c in candidates if c not in frame.columns]
    if missing:
        raise ValueError(f"usable_features: the training frame lacks feature columns {missing}")
    if frame.height == 0:
        raise ValueError("usable_features: the training frame has no rows")
    valid = [pl.col(c).cast(pl.Float64).fill_nan(None) for c in candidates]
    stats = frame.select(
        *[v.count().alias(f"n{i}") for i, v in enumerate(valid)],
        *[v.min().alias(f"lo{i}") for i, v in enumerate(valid)],
        *[v.max().alias(f"hi{i}") for i, v in enumerate(valid)],
    ).row(0, named=True)
    used, dropped = [], {}
    for i, c in enumerate(candidates):
        n, lo, hi = stats[f"n{i}"], stats[f"lo{i}"], stats[f"hi{i}"]
        if n == 0:
            dropped[c] = f"null on all {frame.height} training rows (the inputs do not support it)"
        elif lo == hi:
            dropped[c] = f"constant {lo:g} on all {n} non-null training rows"
        else:
            used.append(c)
    if not used:
        raise ValueError(
            f"usable_features: every candidate feature is null or constant in training: {dropped}"
        )
    return FeatureSelection(used, dropped)


def model_features(frame: pl.DataFrame, learned: list[str], *, model: str = "the model") -> pl.DataFrame:
    """Exactly the `learned` columns of `frame`, as Float64, in the model's order (extra columns ignored).

    MissingFeatureError names the model and the absent features.
    """
    if not learned:
        raise MissingFeatureError(f"{model} records no feature list: cannot tell which columns to feed it")
    missing = [c for c in learned if c not in frame.columns]
    if missing:
        raise MissingFeatureError(
            f"{model} learned from features {missing} that the input lacks "
            f"(input columns: {len(frame.columns)}, model features: {len(learned)})"
        )
    return frame.select([pl.col(c).cast(pl.Float64) for c in learned])
