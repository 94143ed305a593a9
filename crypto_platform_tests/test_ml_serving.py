"""ml.serving: which model is served (champion, else an allowed challenger, else NoChampionError) and
the prediction rows, on exact figures."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from crypto_platform.ml.registry import NoAliasError, NoChampionError
from crypto_platform.ml.serving import Served, choose_model, prediction_rows


class Registry:
    """Aliases set in a registered model: loading an unset one raises the registry's own errors."""

    def __init__(self, **aliases: str) -> None:
        self.aliases, self.asked = aliases, []

    def load(self, alias: str) -> str:
        self.asked.append(alias)
        if alias not in self.aliases:
            raise (NoChampionError if alias == "champion" else NoAliasError)(f"no {alias}")
        return self.aliases[alias]


def _choose(reg: Registry, allow: bool) -> Served[str]:
    return choose_model(reg.load, allow_unqualified=allow, model_name="m", where="file:///r")


def test_the_champion_is_served_whenever_there_is_one() -> None:
    for allow in (False, True):
        reg = Registry(champion="v3", challenger="v4")
        assert _choose(reg, allow) == Served("v3", qualified=True)
        assert reg.asked == ["champion"]  # the challenger is not even loaded


def test_the_challenger_is_served_only_when_allowed_and_then_marked_unqualified() -> None:
    assert _choose(Registry(challenger="v4"), True) == Served("v4", qualified=False)
    with pytest.raises(NoChampionError) as err:
        _choose(Registry(challenger="v4"), False)
    assert str(err.value).startswith(
        "registered model 'm' has no 'champion' version at file:///r: no trained model has passed the "
        "promotion gate"
    )
    assert "set allow_unqualified_model: true to serve the challenger" in str(err.value)


def test_nothing_to_serve_is_a_no_champion_error_even_when_unqualified_models_are_allowed() -> None:
    with pytest.raises(NoChampionError) as err:
        _choose(Registry(), True)
    assert str(err.value) == (
        "registered model 'm' has neither a 'champion' nor a 'challenger' version at file:///r: nothing "
        "to serve; materialize gold/model first."
    )
    assert isinstance(err.value.__cause__, NoAliasError)


class Info:
    name, version, horizon = "m", "7", 5


def test_prediction_rows_imply_the_price_from_the_minutes_close() -> None:
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    keys = {"exchange": ["x", "x"], "symbol": ["A", "A"], "ts": [t0, t0 + timedelta(minutes=1)]}
    feats = pl.DataFrame({**keys, "f": [1.0, 2.0]})
    candles = pl.DataFrame({**keys, "close": [100.0, 200.0]})
    at = datetime(2024, 1, 2, tzinfo=UTC)
    got = prediction_rows(feats, candles, [0.01, -0.02], Info(), False, predicted_at=at)
    assert got.columns == [
        "exchange", "symbol", "ts", "horizon", "predicted_return", "close", "implied_price", "target_ts",
        "model_name", "model_version", "qualified", "predicted_at",
    ]  # fmt: skip
    assert got.drop("implied_price").rows() == [
        ("x", "A", t0, 5, 0.01, 100.0, t0 + timedelta(minutes=5), "m", 7, False, at),
        ("x", "A", t0 + timedelta(minutes=1), 5, -0.02, 200.0, t0 + timedelta(minutes=6), "m", 7, False, at),
    ]
    assert got["implied_price"].to_list() == pytest.approx([100 * math.exp(0.01), 200 * math.exp(-0.02)])
