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

The version's drift reference sample (`load_reference`, what the drift checks compare with) is kept
in the same file cache, checked against the SHA-256 recorded at registration. The process that
registers a version puts both files there (`prime`), so the runs after it on the same machine, the
next live tick's, serve and check the new model without MLflow at all.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from crypto_platform.ml.artifacts import LIGHTGBM_FILE
from crypto_platform.ml.feature_availability import model_features
from crypto_platform.ml.lgbm_trees import TreeEnsemble, UnsupportedModelError
from crypto_platform.ml.model_info import CHECKSUM_TAG, REFERENCE_CHECKSUM_TAG, ModelVersionInfo

MAX_MODELS = 4  # loaded versions kept per process (least recently used evicted)
REFERENCE_FILE = "drift_reference.parquet"  # the drift reference's name in a version's cache folder
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


def load_reference(
    tracking_uri: str, info: ModelVersionInfo, *, cache_dir: Path | None = None
) -> pl.DataFrame:
    """The drift reference sample of version `info`: from the file cache when it matches the SHA-256
    recorded at registration, else through MLflow (`drift_reference`, verified), then cached."""

    def download() -> bytes:
        from crypto_platform.ml import drift_reference  # MLflow: only when the file cache cannot answer

        return drift_reference.reference_file(tracking_uri, info)

    path = _version_dir(cache_dir or default_cache_dir(), model_key(tracking_uri, info)) / REFERENCE_FILE
    data, _ = _through_cache(path, info.tags.get(REFERENCE_CHECKSUM_TAG), download)
    return pl.read_parquet(io.BytesIO(data))


def prime(
    tracking_uri: str, info: ModelVersionInfo, model_file: bytes | None, reference: bytes | None
) -> None:
    """Keep a version's files, as the process that just registered it holds them, in this machine's file
    cache (each only if it matches what registration recorded); a cache that cannot be written is skipped."""
    folder = _version_dir(default_cache_dir(), model_key(tracking_uri, info))
    recorded = json.loads(info.tags.get(CHECKSUM_TAG) or "{}").get(LIGHTGBM_FILE)
    files = [
        (LIGHTGBM_FILE, model_file, recorded),
        (REFERENCE_FILE, reference, info.tags.get(REFERENCE_CHECKSUM_TAG)),
    ]
    for name, data, expected in files:
        if data is not None and expected and hashlib.sha256(data).hexdigest() == expected:
            try:
                _write_atomic(folder / name, data)
            except OSError:  # only a cache: the runs then read the registry
                return


def _version_dir(cache_dir: Path, key: ModelKey) -> Path:
    """A version's folder in the file cache (tracking URI, name, version and digest in its name)."""
    ident = hashlib.sha256("\n".join([key.tracking_uri, key.name, key.version, key.digest]).encode())
    return cache_dir / f"{key.name}-v{key.version}-{ident.hexdigest()[:24]}"


def _through_cache(path: Path, expected: str | None, download: Callable[[], bytes]) -> tuple[bytes, bool]:
    """A version's file and whether the file cache had it: the cached copy while its SHA-256 is `expected`
    (recorded at registration), else `download()`, kept at `path` when there is a checksum to check it."""
    if expected and path.is_file():
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() == expected:
            return data, True
    data = download()
    if expected:  # only a file whose checksum was recorded can be checked when read back
        _write_atomic(path, data)
    return data, False


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _model_text(tracking_uri: str, info: ModelVersionInfo, key: ModelKey, cache_dir: Path) -> tuple[str, str]:
    """The version's verified LightGBM text, from the file cache when it matches the recorded SHA-256."""

    def download() -> bytes:
        from crypto_platform.ml import registry  # MLflow: only when the file cache cannot answer

        return registry.model_file_text(tracking_uri, info).encode()

    expected = json.loads(info.tags.get(CHECKSUM_TAG) or "{}").get(LIGHTGBM_FILE)
    data, cached = _through_cache(_version_dir(cache_dir, key) / LIGHTGBM_FILE, expected, download)
    if cached:
        STATS.file_hits += 1
    else:
        STATS.downloads += 1
    return data.decode(), "file cache" if cached else "registry"


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
