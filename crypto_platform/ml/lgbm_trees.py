"""A LightGBM regression model evaluated with numpy alone, from LightGBM's text model format.

Why: a live run serves the champion in a fresh process every tick, and `import lightgbm` pulls in
scikit-learn, scipy and pandas (seconds per run on this machine). The registered model is a
LightGBM text file (`model.lgb`); its trees are plain numerical splits, so their sum is computed here
exactly as LightGBM's C++ predictor does (same decisions for missing values and zeros, trees summed
in order in float64): the forecasts are bit-identical (tested against `lightgbm.Booster.predict`).
Anything this evaluator does not implement (categorical splits, linear trees, random-forest
averaging, an objective that transforms the raw score, several classes) is an
`UnsupportedModelError`; the caller then serves the model with LightGBM itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ZERO_THRESHOLD = float(np.float32(1e-35))  # LightGBM's kZeroThreshold (a float constant)
# objectives whose prediction is the raw score (ConvertOutput is the identity); *_sqrt variants are not
IDENTITY_OBJECTIVES = {
    "regression",
    "regression_l2",
    "l2",
    "regression_l1",
    "l1",
    "huber",
    "fair",
    "quantile",
}
_MISSING_ZERO, _MISSING_NAN = 1, 2
_CATEGORICAL, _DEFAULT_LEFT = 1, 2


class UnsupportedModelError(ValueError):
    """The LightGBM model uses something this evaluator does not implement (use LightGBM itself)."""


@dataclass(frozen=True)
class Tree:
    """One tree: per internal node its feature, threshold, decision bits and children (< 0: ~leaf)."""

    feature: np.ndarray
    threshold: np.ndarray
    missing_type: np.ndarray
    default_left: np.ndarray
    left: np.ndarray
    right: np.ndarray
    leaf_value: np.ndarray

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The leaf value each row of `x` (zeros already normalised) ends in."""
        n = x.shape[0]
        if self.feature.size == 0:
            return np.full(n, self.leaf_value[0])
        out = np.empty(n)
        node = np.zeros(n, dtype=np.int64)
        active = np.arange(n)
        while active.size:
            nd = node[active]
            value = x[active, self.feature[nd]]
            mt = self.missing_type[nd]
            value = np.where(np.isnan(value) & (mt != _MISSING_NAN), 0.0, value)
            use_default = ((mt == _MISSING_ZERO) & (np.abs(value) <= ZERO_THRESHOLD)) | (
                (mt == _MISSING_NAN) & np.isnan(value)
            )
            go_left = np.where(use_default, self.default_left[nd], value <= self.threshold[nd])
            nxt = np.where(go_left, self.left[nd], self.right[nd])
            leaf = nxt < 0
            out[active[leaf]] = self.leaf_value[~nxt[leaf]]
            node[active] = nxt
            active = active[~leaf]
        return out


@dataclass(frozen=True)
class TreeEnsemble:
    """A parsed LightGBM regression model: its feature names and trees."""

    feature_names: list[str]
    trees: list[Tree]

    @classmethod
    def parse(cls, text: str) -> TreeEnsemble:
        """Parse LightGBM's text model format; UnsupportedModelError for what `predict` cannot do."""
        header, _, body = text.partition("\nTree=")
        head = _fields(header)
        if head.get("version") is None or "feature_names" not in head:
            raise ValueError("not a LightGBM text model: no 'version' / 'feature_names' header")
        objective = head.get("objective", "").split()
        if not objective or objective[0] not in IDENTITY_OBJECTIVES or "sqrt" in objective:
            raise UnsupportedModelError(f"objective {head.get('objective')!r} transforms the raw score")
        if head.get("num_class", "1") != "1" or head.get("num_tree_per_iteration", "1") != "1":
            raise UnsupportedModelError("more than one tree per iteration (multiclass)")
        if "average_output" in head:
            raise UnsupportedModelError("random forest (average_output)")
        blocks = ("Tree=" + body).split("end of trees")[0].split("\nTree=") if body else []
        return cls(head["feature_names"].split(), [_tree(_fields(b)) for b in blocks if b.strip()])

    @property
    def nodes(self) -> int:
        """Internal nodes over all trees (the evaluation's cost grows with them)."""
        return sum(t.feature.size for t in self.trees)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Forecasts for the rows of `x` (float64, the model's feature order; NaN = missing)."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.feature_names):
            raise ValueError(f"expected rows of {len(self.feature_names)} features, got shape {x.shape}")
        # LightGBM's dense-row reader drops |v| <= kZeroThreshold (the value becomes 0.0); NaN is kept
        x = np.where(np.abs(x) <= ZERO_THRESHOLD, 0.0, x)
        out = np.zeros(x.shape[0])
        for tree in self.trees:
            out += tree.predict(x)
        return out


def _fields(block: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in block.splitlines() if "=" in line and not line.startswith("["))


def _array(fields: dict[str, str], key: str, dtype: type) -> np.ndarray:
    raw = fields.get(key, "").split()
    return np.array([float(v) for v in raw] if dtype is float else [int(v) for v in raw], dtype=dtype)


def _tree(fields: dict[str, str]) -> Tree:
    if int(fields.get("num_cat", "0")) or int(fields.get("is_linear", "0")):
        raise UnsupportedModelError("categorical splits or linear trees")
    decision = _array(fields, "decision_type", int)
    if (decision & _CATEGORICAL).any():
        raise UnsupportedModelError("categorical splits")
    return Tree(
        feature=_array(fields, "split_feature", int),
        threshold=_array(fields, "threshold", float),
        missing_type=(decision >> 2) & 3,
        default_left=(decision & _DEFAULT_LEFT).astype(bool),
        left=_array(fields, "left_child", int),
        right=_array(fields, "right_child", int),
        leaf_value=_array(fields, "leaf_value", float),
    )
