"""The numpy evaluation of a LightGBM text model gives exactly LightGBM's own forecasts."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest

from crypto_platform.ml import model_cache
from crypto_platform.ml.lgbm_trees import TreeEnsemble, UnsupportedModelError


def _data(rng: np.random.Generator, n: int) -> np.ndarray:
    """Features with missing values, exact zeros and values LightGBM's reader rounds to zero."""
    x = rng.normal(size=(n, 6))
    x[rng.random(x.shape) < 0.1] = np.nan
    x[rng.random(x.shape) < 0.1] = 0.0
    x[:7, 2] = 1e-40
    x[7:9, 3] = -1e-36
    return x


def _target(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    z = np.nan_to_num(x)
    return 2 * z[:, 0] + z[:, 1] ** 2 - (z[:, 2] == 0) + rng.normal(size=len(x)) * 0.1


@pytest.mark.parametrize(
    "params",
    [
        {"objective": "regression"},
        {"objective": "regression", "zero_as_missing": True},
        {"objective": "huber", "use_missing": False},
        {"objective": "regression_l1", "num_leaves": 4, "learning_rate": 0.3},
    ],
)
def test_forecasts_are_bit_identical_to_lightgbm(params: dict) -> None:
    rng = np.random.default_rng(7)
    x = _data(rng, 3000)
    booster = lgb.train({**params, "verbose": -1}, lgb.Dataset(x, _target(x, rng)), num_boost_round=60)
    ensemble = TreeEnsemble.parse(booster.model_to_string())
    assert len(ensemble.trees) == booster.num_trees()
    fresh = _data(rng, 2000)
    assert np.array_equal(ensemble.predict(fresh), booster.predict(fresh))
    with pytest.raises(ValueError, match="expected rows of 6 features"):
        ensemble.predict(fresh[:, :5])


def test_what_it_does_not_implement_is_served_by_lightgbm() -> None:
    rng = np.random.default_rng(3)
    x = _data(rng, 500)
    y = (np.nan_to_num(x[:, 0]) > 0).astype(float)
    binary = lgb.train({"objective": "binary", "verbose": -1}, lgb.Dataset(x, y), num_boost_round=5)
    with pytest.raises(UnsupportedModelError, match="transforms the raw score"):
        TreeEnsemble.parse(binary.model_to_string())
    served = model_cache._predictor(binary.model_to_string())
    assert isinstance(served, lgb.Booster)
    assert np.array_equal(served.predict(x), binary.predict(x))
    cat = np.column_stack([rng.integers(0, 5, 500).astype(float), x[:, 1]])
    categorical = lgb.train(
        {"objective": "regression", "verbose": -1, "min_data_per_group": 5},
        lgb.Dataset(cat, y, categorical_feature=[0]),
        num_boost_round=5,
    )
    with pytest.raises(UnsupportedModelError, match="categorical"):
        TreeEnsemble.parse(categorical.model_to_string())
    deep = {"objective": "regression", "verbose": -1, "num_leaves": 63, "min_data_in_leaf": 2}
    big = lgb.train(deep, lgb.Dataset(x, _target(x, rng)), num_boost_round=200)
    assert TreeEnsemble.parse(big.model_to_string()).nodes > model_cache.NUMPY_MAX_NODES
    assert isinstance(model_cache._predictor(big.model_to_string()), lgb.Booster)  # LightGBM is faster
    with pytest.raises(ValueError, match="not a LightGBM text model"):
        TreeEnsemble.parse("hello")
