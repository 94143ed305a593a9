"""The served model, loaded once per process per (tracking URI, model name, version, artifact digest).

Every call still asks the registry which version an alias points at (one small query), so a new
champion is served on the very next call (the next live tick); only the artifact download, checksum
verification and MLflow pyfunc load are skipped while the alias keeps pointing at a version already
loaded. The digest (of the SHA-256 record registration stored with the version) keeps a store that
was reset and re-registered under the same version number from serving the old model.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from crypto_platform.ml.registry import ChampionModel, ModelVersionInfo

MAX_MODELS = 4  # loaded versions kept per process (least recently used evicted)


@dataclass(frozen=True)
class ModelKey:
    """Identity of a loaded model: where, which registered model and version, and its artifact digest."""

    tracking_uri: str
    name: str
    version: str
    digest: str  # SHA-256 of the artifact's recorded file checksums ('' when none were recorded)


@dataclass
class CacheStats:
    """Loads and cache hits of this process (for run metadata and tests)."""

    hits: int = 0
    loads: int = 0


_MODELS: OrderedDict[ModelKey, ChampionModel] = OrderedDict()
_LOCK = threading.Lock()
STATS = CacheStats()


def model_key(tracking_uri: str, info: ModelVersionInfo) -> ModelKey:
    """The cache key of a registered version (digest of its recorded artifact checksums)."""
    from crypto_platform.ml.registry import CHECKSUM_TAG

    recorded = info.tags.get(CHECKSUM_TAG, "")
    digest = hashlib.sha256(recorded.encode()).hexdigest() if recorded else ""
    return ModelKey(tracking_uri, info.name, info.version, digest)


def load_alias(tracking_uri: str, model_name: str, alias: str) -> ChampionModel:
    """`registry.load_alias`, with the loaded model reused while the alias points at the same version.

    Raises what `registry.load_alias` raises (NoChampionError / NoAliasError, ModelArtifactError).
    """
    from crypto_platform.ml import registry

    info = registry.alias_info(tracking_uri, model_name, alias)  # asked every time: a new champion at once
    key = model_key(tracking_uri, info)
    with _LOCK:
        cached = _MODELS.get(key)
        if cached is not None:
            _MODELS.move_to_end(key)
            STATS.hits += 1
            return replace(cached, info=info)  # same model; the alias it is served under now
    loaded = registry.load_info(tracking_uri, info)
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
