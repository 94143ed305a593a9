"""What the platform records about a registered model version, without importing MLflow.

The names here (aliases, the checksum tag, the lookup errors, `ModelVersionInfo`) are shared by the
MLflow registry (`ml/registry.py`, which re-exports them) and the light serving path
(`ml/model_cache.py`, `ml/registry_lookup.py`), so a live run resolves and serves the champion
without paying for the MLflow import.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

CHAMPION = "champion"
CHALLENGER = "challenger"
CHECKSUM_TAG = "artifact_sha256"  # model-version tag: JSON {file path in the model artifact: SHA-256}
# the training run's drift reference sample (run-relative path), and the model-version tag with its SHA-256
DRIFT_REFERENCE_ARTIFACT = "drift/reference_features.parquet"
REFERENCE_CHECKSUM_TAG = "drift_reference_sha256"


class NoAliasError(LookupError):
    """The registered model does not exist or has no version with the requested alias."""


class NoChampionError(NoAliasError):
    """The registered model does not exist or has no version with the 'champion' alias."""


@dataclass(frozen=True)
class ModelVersionInfo:
    """One registered model version and what the platform recorded about it."""

    name: str
    version: str
    run_id: str
    model_uri: str  # models:/<name>/<version>
    alias: str | None  # 'champion' | 'challenger' | None
    promoted: bool
    reasons: list[str]
    feature_cols: list[str]
    horizon: int
    eval_window_start: str
    eval_window_end: str
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """How errors name a version: model, version and alias."""
        return f"registered model {self.name!r} version {self.version}" + (
            f" ('{self.alias}')" if self.alias else ""
        )


def info_from_tags(
    name: str, version: str, run_id: str | None, alias: str | None, tags: dict[str, str]
) -> ModelVersionInfo:
    """A `ModelVersionInfo` from a version's registry fields and the tags registration recorded."""
    reasons = tags.get("gate_reasons", "")
    return ModelVersionInfo(
        name=name,
        version=str(version),
        run_id=run_id or tags.get("run_id", ""),
        model_uri=f"models:/{name}/{version}",
        alias=alias,
        promoted=tags.get("gate_promote") == "true",
        reasons=reasons.split("\n") if reasons else [],
        feature_cols=json.loads(tags.get("feature_cols", "[]")),
        horizon=int(tags.get("horizon", "0") or 0),
        eval_window_start=tags.get("eval_window_start", ""),
        eval_window_end=tags.get("eval_window_end", ""),
        tags=dict(tags),
    )


def no_alias_error(alias: str, model_name: str, where: str) -> NoAliasError:
    """NoChampionError for 'champion', else NoAliasError, naming the model, alias and store."""
    error = NoChampionError if alias == CHAMPION else NoAliasError
    return error(f"no '{alias}' version of registered model {model_name!r} at {where}")
