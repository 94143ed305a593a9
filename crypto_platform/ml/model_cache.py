"""The served model: resolved by alias at every call, loaded without MLflow whenever it can be.

Every call asks which version the alias points at (`registry_lookup`: a read-only query of a local
SQLite store, no MLflow import; MLflow itself for other stores), so a new champion is served on the
very next call (the next live tick). The model is then taken from, in order:

1. this process: the same (tracking URI, model name, version, artifact digest) loaded before;
2. the local file cache: the version's LightGBM file, used only if its SHA-256 equals the one recorded
   at registration (so a store reset and re-registered under the same version number, or a damaged
   cache file, is never served);
3. the registry: the artifact downloaded and verified through MLflow (`registry.model_file_text`),
   then written to the file cache (atomic rename) for the next processes.

The LightGBM file is evaluated by `lgbm_trees` (numpy only, bit-identical forecasts), or by LightGBM
for a model that evaluator does not implement or that is too large for it (`NUMPY_MAX_NODES`). A
fresh live-run process thus serves the champion without importing MLflow (nor, for a model of up
to that size, LightGBM, scikit-learn or scipy).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from crypto_platform.ml.artifacts import LIGHTGBM_FILE
from crypto_platform.ml.feature_availability import model_features
from crypto_platform.ml.lgbm_trees import TreeEnsemble, UnsupportedModelError
from crypto_platform.ml.model_info import CHECKSUM_TAG, ModelVersionInfo

MAX_MODELS = 4  # loaded versions kept per process (least recently used evicted)
# Above this many tree nodes LightGBM serves the model: numpy's per-level steps then cost more than
# importing LightGBM once per run (measured on 30 day partitions of 1,200 rows: 200 trees of 31 leaves
# ~ 6,000 nodes is where they meet on this machine).
NUMPY_MAX_NODES = 6_000


@dataclass(frozen=True)
class ModelKey:
    """Identity of a loaded model: where, which registered model and version, and its artifact digest."""

    tracking_uri: str
    name: str
    version: str
    digest: str  # SHA-256 of the artifact's recorded file checksums ('' when none were recorded)


@dataclass(frozen=True)
class ServedModel:
    """A loaded model version; `predict` feeds it exactly the features it learned, in its order."""

    model: Any  # lgbm_trees.TreeEnsemble, or a lightgbm.Booster for what that does not implement
    info: ModelVersionInfo
    source: str = "registry"  # where this call found it: 'process' | 'file cache' | 'registry'

    @property
    def engine(self) -> str:
        """What evaluates it: 'numpy' (lgbm_trees) or 'lightgbm'."""
        return "numpy" if isinstance(self.model, TreeEnsemble) else "lightgbm"

    def predict(self, features: pl.DataFrame | Any) -> np.ndarray:
        """Forecasts for feature rows (polars or pandas; extra columns ignored, nulls are missing)."""
        frame = features if isinstance(features, pl.DataFrame) else pl.from_pandas(features)
        x = model_features(frame, self.info.feature_cols, model=self.info.label).to_numpy()
        return np.asarray(self.model.predict(x), dtype=np.float64)


@dataclass
class CacheStats:
    """This process's model loads (cache misses), hits, file-cache reads and registry downloads."""

    hits: int = 0
    loads: int = 0
    file_hits: int = 0
    downloads: int = 0


_MODELS: OrderedDict[ModelKey, ServedModel] = OrderedDict()
_LOCK = threading.Lock()
STATS = CacheStats()


def default_cache_dir() -> Path:
    """Where verified model files are kept between processes (one machine; keyed by version and digest)."""
    return Path(tempfile.gettempdir()) / "crypto_platform_models"


def model_key(tracking_uri: str, info: ModelVersionInfo) -> ModelKey:
    """The cache key of a registered version (digest of its recorded artifact checksums)."""
    recorded = info.tags.get(CHECKSUM_TAG, "")
    digest = hashlib.sha256(recorded.encode()).hexdigest() if recorded else ""
    return ModelKey(tracking_uri, info.name, info.version, digest)


def load_alias(
    tracking_uri: str, model_name: str, alias: str, *, cache_dir: Path | None = None
) -> ServedModel:
    """The model behind `alias` now (see the module docstring for where it comes from).

    Raises NoChampionError / NoAliasError when the alias is unset, ModelArtifactError when the
    version's artifact is missing or differs from what registration recorded.
    """
    from crypto_platform.ml import registry_lookup

    info = registry_lookup.resolve(tracking_uri, model_name, alias)
    key = model_key(tracking_uri, info)
    with _LOCK:
        cached = _MODELS.get(key)
        if cached is not None:
            _MODELS.move_to_end(key)
            STATS.hits += 1
            return replace(cached, info=info, source="process")  # same model; its alias now
    text, source = _model_text(tracking_uri, info, key, cache_dir or default_cache_dir())
    loaded = ServedModel(_predictor(text), info, source)
    with _LOCK:
        STATS.loads += 1
        _MODELS[key] = loaded
        while len(_MODELS) > MAX_MODELS:
            _MODELS.popitem(last=False)
    return loaded


def clear() -> None:
    """Forget every loaded model (tests; a process that wants to free the memory)."""
    with _LOCK:
        _MODELS.clear()


def _model_text(tracking_uri: str, info: ModelVersionInfo, key: ModelKey, cache_dir: Path) -> tuple[str, str]:
    """The version's verified LightGBM text, from the file cache when it matches the recorded SHA-256."""
    expected = json.loads(info.tags.get(CHECKSUM_TAG) or "{}").get(LIGHTGBM_FILE)
    ident = hashlib.sha256("\n".join([key.tracking_uri, key.name, key.version, key.digest]).encode())
    path = cache_dir / f"{key.name}-v{key.version}-{ident.hexdigest()[:24]}" / LIGHTGBM_FILE
    if expected and path.is_file():
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() == expected:
            STATS.file_hits += 1
            return data.decode(), "file cache"
    from crypto_platform.ml import registry  # MLflow: only when the file cache cannot answer

    text = registry.model_file_text(tracking_uri, info)
    STATS.downloads += 1
    if expected:  # only a file whose checksum was recorded can be checked when read back
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode())
        os.replace(tmp, path)
    return text, "registry"


def _predictor(text: str) -> Any:
    """The numpy evaluator of a LightGBM text model; LightGBM itself for what that does not implement
    or for a model too large for it to be the faster (`NUMPY_MAX_NODES`)."""
    try:
        ensemble = TreeEnsemble.parse(text)
        if ensemble.nodes <= NUMPY_MAX_NODES:
            return ensemble
    except UnsupportedModelError:
        pass
    import lightgbm as lgb

    return lgb.Booster(model_str=text)
