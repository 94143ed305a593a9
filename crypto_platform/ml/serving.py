"""Serving: which registered model gold/predictions uses, and the prediction rows it writes.

The policy: the 'champion' (a version that passed the promotion gate) is served; when there is
none, the latest 'challenger' only if the caller explicitly allows an unqualified model; otherwise
nothing is served and `NoChampionError` says why. No Dagster here: the asset turns the error into
a run failure.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

import polars as pl

from crypto_platform.schemas import INDEX_COLUMNS

if TYPE_CHECKING:
    import numpy as np

M = TypeVar("M")


class ServedModelInfo(Protocol):
    """What a prediction row records about the model (registry.ModelVersionInfo has it)."""

    name: str
    version: str
    horizon: int


@dataclass(frozen=True)
class Served(Generic[M]):
    """The model to serve, and whether it qualified (False: an allowed, unqualified challenger)."""

    model: M
    qualified: bool


def choose_model(
    load: Callable[[str], M], *, allow_unqualified: bool, model_name: str, where: str
) -> Served[M]:
    """The champion, else the challenger when `allow_unqualified`; else `NoChampionError`.

    `load(alias)` loads the version behind an alias and raises the registry's `NoChampionError` /
    `NoAliasError` when it is unset; `model_name` and `where` (the tracking URI) name the registry
    in the error.
    """
    from crypto_platform.ml.model_info import CHALLENGER, CHAMPION, NoAliasError, NoChampionError

    try:
        return Served(load(CHAMPION), qualified=True)
    except NoChampionError as exc:
        if not allow_unqualified:
            raise NoChampionError(
                f"registered model {model_name!r} has no 'champion' version at {where}: no trained model "
                "has passed the promotion gate (skill vs baselines), so nothing is served. Materialize "
                "gold/model (see its 'gate' metadata for why a version was not promoted), or set "
                "allow_unqualified_model: true to serve the challenger."
            ) from exc
    try:
        return Served(load(CHALLENGER), qualified=False)
    except NoAliasError as exc:
        raise NoChampionError(
            f"registered model {model_name!r} has neither a 'champion' nor a 'challenger' version at "
            f"{where}: nothing to serve; materialize gold/model first."
        ) from exc


def prediction_rows(
    feats: pl.DataFrame,
    candles: pl.DataFrame,
    pred: np.ndarray | Sequence[float],
    info: ServedModelInfo,
    qualified: bool,
    *,
    predicted_at: datetime | None = None,
) -> pl.DataFrame:
    """gold/predictions rows: forecast per feature row, the price it implies from the minute's close
    (exp(forecast) x close), the bar whose close is forecast (ts + horizon), and the model's identity."""
    close = candles.select(*INDEX_COLUMNS, "close")
    return (
        feats.select(INDEX_COLUMNS)
        .with_columns(
            pl.lit(int(info.horizon), pl.Int32).alias("horizon"),
            pl.Series("predicted_return", pred, dtype=pl.Float64),
        )
        .join(close, on=INDEX_COLUMNS, how="left")
        .with_columns(
            (pl.col("close") * pl.col("predicted_return").exp()).alias("implied_price"),
            (pl.col("ts") + pl.duration(minutes=pl.col("horizon"))).alias("target_ts"),
            pl.lit(info.name).alias("model_name"),
            pl.lit(int(info.version)).alias("model_version"),
            pl.lit(qualified).alias("qualified"),
            pl.lit(predicted_at or datetime.now(UTC)).alias("predicted_at"),
        )
    )
