"""MLflow tracking and model registry: log a training run, register the model, keep the champion alias.

Each call of `log_and_register` makes one MLflow run (parameters, model and baseline metrics, the
Optuna best trial, gain importance, the evaluation table, the holdout predictions, the gate decision
and a drift reference sample of the training features) and one new version of the registered model.
The version gets the alias 'champion' when the skill gate promotes it, else 'challenger' (with the
gate's reasons in its description and tags). Consumers load the champion with nothing but the tracking URI:

    mlflow.set_tracking_uri(uri); mlflow.pyfunc.load_model("models:/<name>@champion")

Registration records the SHA-256 of every file of the model artifact (model-version tag
'artifact_sha256'); every load here copies the artifact, verifies it against that record and only
then hands it to LightGBM, whose parser aborts the whole process on a truncated file. A missing or
corrupt artifact raises ModelArtifactError naming the model, version and file instead.

Local tracking URIs (sqlite:///dir/mlflow.db) keep their artifacts next to the database
(dir/artifacts). Nothing here talks to the network; MLflow's telemetry is disabled.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import mlflow
import mlflow.lightgbm
import numpy as np
import pandas as pd
import polars as pl
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.tracking._model_registry import utils as _registry_utils
from mlflow.tracking._tracking_service import utils as _tracking_utils

from crypto_platform.ml import mlflow_logging, mlflow_store, model_cache
from crypto_platform.ml.artifacts import (
    LIGHTGBM_FILE,
    ModelArtifactError,
    artifact_checksums,
    verify_artifact,
)
from crypto_platform.ml.evaluation import ForecastMetrics, GateDecision, forecast_metrics
from crypto_platform.ml.feature_availability import model_features
from crypto_platform.ml.model_info import (  # noqa: F401 (re-exported: the registry's names)
    CHALLENGER,
    CHAMPION,
    CHECKSUM_TAG,
    DRIFT_REFERENCE_ARTIFACT,
    REFERENCE_CHECKSUM_TAG,
    ModelVersionInfo,
    NoAliasError,
    NoChampionError,
    info_from_tags,
    no_alias_error,
)

if TYPE_CHECKING:  # types only: loading a model to serve never imports training (optuna)
    from crypto_platform.ml.training import TrainResult

DEFAULT_EXPERIMENT = "crypto_platform-models"
MODEL_ARTIFACT = "model"
from crypto_platform.ml.mlflow_logging import HOLDOUT_ARTIFACT  # noqa: E402, F401


@dataclass
class ChampionModel:
    """A loaded model version (MLflow pyfunc) with its version info; `predict` selects its features."""

    model: mlflow.pyfunc.PyFuncModel
    info: ModelVersionInfo

    def predict(self, features: pl.DataFrame | pd.DataFrame) -> np.ndarray:
        """Forecasts for feature rows: exactly the features the version learned from, in its order (extra
        columns are ignored, nulls are missing values); MissingFeatureError when one is absent."""
        cols = self.info.feature_cols
        return np.asarray(self.model.predict(mlflow_logging.model_input(features, cols, _label(self.info))))


def log_and_register(
    result: TrainResult,
    *,
    tracking_uri: str,
    model_name: str,
    feature_cols: list[str],
    reference_features: pl.DataFrame,
    input_example: pl.DataFrame | pd.DataFrame,
    decision: GateDecision,
    experiment_name: str = DEFAULT_EXPERIMENT,
    artifact_location: str | None = None,
    run_name: str | None = None,
    extra_artifacts: dict[str, bytes] | None = None,
) -> ModelVersionInfo:
    """Log the run (params, metrics, importance, drift reference, model), register it and set its alias.

    `feature_cols` are the candidate features (the drift reference keeps them); the model version records
    the ones the model learned from (`result.feature_cols`, tag 'feature_cols') and the dropped ones
    with the reason (tag 'dropped_features'). `extra_artifacts` maps run-relative paths (e.g.
    'plots/predicted_vs_realized.png') to file bytes.
    """
    unknown = [c for c in result.feature_cols if c not in feature_cols]
    if unknown:
        raise ValueError(f"log_and_register: the model learned from {unknown}, which are not in feature_cols")
    client = mlflow_store.client(tracking_uri)
    with _tracking(tracking_uri):
        location = artifact_location or _default_artifacts(tracking_uri)
        experiment_id = _experiment(client, experiment_name, location)
        example = mlflow_logging.model_input(input_example, result.feature_cols)
        with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
            mlflow.log_params(result.params_for_logging())
            mlflow.log_params(
                {
                    "best_trial_number": result.best_trial,
                    "train_start": str(result.train_start),
                    "train_end": str(result.train_end),
                    "eval_window_start": str(result.holdout_start),
                    "eval_window_end": str(result.holdout_end),
                }
            )
            mlflow.log_metrics(mlflow_logging.run_metrics(result, decision))
            mlflow.set_tags(mlflow_logging.run_tags(result))
            reference_file = mlflow_logging.log_tables(result, decision, reference_features, feature_cols)
            mlflow_logging.log_files(extra_artifacts or {})
            signature = infer_signature(example, result.booster.predict(example.to_numpy()))
            model_info = mlflow.lightgbm.log_model(
                result.booster,
                name=MODEL_ARTIFACT,
                signature=signature,
                input_example=example,
                pip_requirements=mlflow_logging.pip_requirements(),
            )
            run_id = run.info.run_id
        version = mlflow.register_model(model_info.model_uri, model_name)
    # what the store holds, fetched as every load fetches it (not through models:/, which adds a file)
    where = client.get_model_version_download_uri(model_name, version.version)
    with tempfile.TemporaryDirectory() as tmp:
        stored = Path(mlflow.artifacts.download_artifacts(artifact_uri=where, dst_path=tmp))
        checksums = artifact_checksums(stored)
        model_file = stored / LIGHTGBM_FILE
        model_bytes = model_file.read_bytes() if model_file.is_file() else None
    tags = {
        CHECKSUM_TAG: json.dumps(checksums, sort_keys=True),
        REFERENCE_CHECKSUM_TAG: hashlib.sha256(reference_file).hexdigest(),
        "run_id": run_id,
        "horizon": str(result.horizon),
        "feature_cols": json.dumps(list(result.feature_cols)),
        "dropped_features": json.dumps(result.dropped_features),  # {feature: reason}
        "optimism": mlflow_logging.run_tags(result)["optimism"],
        "eval_window_start": result.holdout_start.isoformat(),
        "eval_window_end": result.holdout_end.isoformat(),
        "train_window_start": result.train_start.isoformat(),
        "train_window_end": result.train_end.isoformat(),
        "drift_reference": f"runs:/{run_id}/{DRIFT_REFERENCE_ARTIFACT}",
        "gate_promote": str(decision.promote).lower(),
        "gate_primary": decision.primary,
        "gate_reasons": "\n".join(decision.reasons),
    }
    for k, v in tags.items():
        client.set_model_version_tag(model_name, version.version, k, v)
    alias = CHAMPION if decision.promote else CHALLENGER
    verdict = "promoted to champion" if decision.promote else "not promoted (challenger)"
    client.update_model_version(
        model_name, version.version, description=f"{verdict}:\n" + "\n".join(decision.reasons)
    )
    client.set_registered_model_alias(model_name, alias, version.version)
    info = _info(client.get_model_version(model_name, version.version), alias)
    model_cache.prime(tracking_uri, info, model_bytes, reference_file)  # this machine's next runs: no MLflow
    return info


def load_champion(tracking_uri: str, model_name: str) -> ChampionModel:
    """Load `models:/<name>@champion` as a pyfunc model; NoChampionError when there is none."""
    return load_alias(tracking_uri, model_name, CHAMPION)


def load_alias(tracking_uri: str, model_name: str, alias: str) -> ChampionModel:
    """Load `models:/<name>@<alias>` (e.g. 'challenger'); NoAliasError / NoChampionError if absent.

    ModelArtifactError when the version's artifact is missing or corrupt.
    """
    return load_info(tracking_uri, alias_info(tracking_uri, model_name, alias))


def load_version(tracking_uri: str, model_name: str, version: str | int) -> ChampionModel:
    """Load one registered version (whatever its alias) as a pyfunc model, after verifying its artifact."""
    return load_info(tracking_uri, version_info(tracking_uri, model_name, version))


def load_info(tracking_uri: str, info: ModelVersionInfo) -> ChampionModel:
    """Load the version `info` describes as a pyfunc model, after verifying its artifact."""
    with _verified_model(tracking_uri, info) as path, _tracking(tracking_uri):
        model = mlflow.pyfunc.load_model(str(path))
    return ChampionModel(model=model, info=info)


def model_file_text(tracking_uri: str, info: ModelVersionInfo) -> str:
    """The version's LightGBM model file (text), from its artifact verified against the registration."""
    with _verified_model(tracking_uri, info) as path:
        model_file = path / LIGHTGBM_FILE
        if not model_file.is_file():
            raise ModelArtifactError(
                f"{info.label}: its artifact has no {LIGHTGBM_FILE} (not a LightGBM model)"
            )
        return model_file.read_text()


def version_info(tracking_uri: str, model_name: str, version: str | int) -> ModelVersionInfo:
    """The info of one registered version; `alias` is its current alias (None if it has none)."""
    client = mlflow_store.client(tracking_uri)
    mv = client.get_model_version(model_name, str(version))
    return _info(mv, next(iter(mv.aliases or []), None))


def champion_info(tracking_uri: str, model_name: str) -> ModelVersionInfo:
    """The version info of the current champion; NoChampionError when there is none."""
    return alias_info(tracking_uri, model_name, CHAMPION)


def alias_info(tracking_uri: str, model_name: str, alias: str) -> ModelVersionInfo:
    """The version info behind an alias; NoChampionError ('champion') / NoAliasError when unset."""
    client = mlflow_store.client(tracking_uri)
    return _info(_version_by_alias(client, tracking_uri, model_name, alias), alias)


def champion_metrics(
    tracking_uri: str, model_name: str, frame: pl.DataFrame, *, label_col: str = "label"
) -> ForecastMetrics | None:
    """Score the current champion on `frame` (the challenger's evaluation window); None if no champion."""
    try:
        info = champion_info(tracking_uri, model_name)
    except NoChampionError:
        return None
    missing = [c for c in [*info.feature_cols, label_col] if c not in frame.columns]
    if missing:
        raise ValueError(f"champion_metrics: evaluation frame lacks the champion's columns {missing}")
    with _verified_model(tracking_uri, info) as path, _tracking(tracking_uri):
        booster = mlflow.lightgbm.load_model(str(path))
    x = model_features(frame, info.feature_cols, model=_label(info)).to_numpy()
    pred = np.asarray(booster.predict(x), dtype=float)
    return forecast_metrics(pred, frame[label_col].cast(pl.Float64).to_numpy(), overlap=info.horizon)


@dataclass(frozen=True)
class ChampionComparison:
    """The current champion scored on a challenger's evaluation window, or why it cannot be.

    `metrics` is None with `incomparable` None when there is no champion; with `incomparable` set
    when there is one that cannot be scored on the window (the gate must not treat that as 'nothing
    to beat'). `notes` flag a comparison that is fair in form but favours the champion.
    """

    info: ModelVersionInfo | None
    metrics: ForecastMetrics | None
    incomparable: str | None = None
    notes: list[str] = field(default_factory=list)


def compare_champion(
    tracking_uri: str, model_name: str, window: pl.DataFrame, *, horizon: int, label_col: str = "label"
) -> ChampionComparison:
    """Re-score the current champion on `window` (the challenger's evaluation rows, labels of `horizon`).

    The champion is scored with its own feature columns, so a champion trained on other (available)
    features is still compared; it is incomparable only when it forecasts another horizon or the
    window lacks one of its features.
    """
    try:
        info = champion_info(tracking_uri, model_name)
    except NoChampionError:
        return ChampionComparison(None, None)
    if info.horizon != horizon:
        what = f"forecasts {info.horizon}-minute returns, this model {horizon}-minute ones"
        return ChampionComparison(info, None, incomparable=f"v{info.version} {what}")
    missing = [c for c in info.feature_cols if c not in window.columns]
    if missing or not info.feature_cols:
        what = f"features {missing} are not in the evaluation window" if missing else "has no feature list"
        return ChampionComparison(info, None, incomparable=f"v{info.version} {what}")
    try:
        metrics = champion_metrics(tracking_uri, model_name, window, label_col=label_col)
    except ModelArtifactError as exc:  # a broken champion must not stop training its replacement
        return ChampionComparison(info, None, incomparable=f"v{info.version} cannot be loaded: {exc}")
    notes = []
    trained_to = info.tags.get("train_window_end")
    start = window["ts"].min() if "ts" in window.columns and window.height else None
    if trained_to and start is not None and datetime.fromisoformat(trained_to) >= start:
        notes.append(
            f"NOTE champion v{info.version} was trained on data up to {trained_to}, inside this evaluation "
            f"window (from {start}): its score there is partly in-sample, which favours it"
        )
    return ChampionComparison(info, metrics, None, notes)


# ----------------------------------------------------------------------------------------------


@contextmanager
def _tracking(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API (tracking + registry) at `uri`, then restore the previous state exactly.

    MLflow keeps these in module globals and mirrors them into MLFLOW_TRACKING_URI /
    MLFLOW_REGISTRY_URI; both are put back as they were, so callers' defaults are never pinned.
    """
    saved_tracking = getattr(_tracking_utils, "_tracking_uri", None)
    saved_registry = getattr(_registry_utils, "_registry_uri", None)
    saved_env = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow_store.ensure_schema(uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(saved_tracking)  # type: ignore[arg-type]  # None = unset
        _registry_utils._registry_uri = saved_registry
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def _verified_model(tracking_uri: str, info: ModelVersionInfo) -> Iterator[Path]:
    """A local copy of the version's model artifact, verified (ModelArtifactError otherwise).

    The copy, not the store, is loaded: what was verified is what LightGBM parses.
    """
    client = mlflow_store.client(tracking_uri)
    where = client.get_model_version_download_uri(info.name, info.version)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=where, dst_path=tmp))
        except (MlflowException, OSError) as exc:
            raise ModelArtifactError(
                f"{_label(info)}: its model artifact at {where} is missing "
                f"({type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[-1]})"
            ) from exc
        recorded = info.tags.get(CHECKSUM_TAG)
        verify_artifact(local, json.loads(recorded) if recorded else None, _label(info), where)
        yield local


def _label(info: ModelVersionInfo) -> str:
    return info.label


def _version_by_alias(client: MlflowClient, tracking_uri: str, model_name: str, alias: str) -> ModelVersion:
    """The aliased version, or NoChampionError / NoAliasError naming the model, alias and store."""
    try:
        return client.get_model_version_by_alias(model_name, alias)
    except MlflowException as exc:
        raise no_alias_error(alias, model_name, tracking_uri) from exc


def _default_artifacts(tracking_uri: str) -> str | None:
    """sqlite:///dir/mlflow.db -> dir/artifacts (absolute), so artifacts never land in the CWD."""
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri.removeprefix("sqlite:///"))
        if not db.is_absolute():
            db = Path.cwd() / db
        return (db.parent / "artifacts").resolve().as_uri()
    return None


def _experiment(client: MlflowClient, name: str, artifact_location: str | None) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    return client.create_experiment(name, artifact_location=artifact_location)


def _info(mv: ModelVersion, alias: str | None) -> ModelVersionInfo:
    return info_from_tags(mv.name, str(mv.version), mv.run_id, alias, dict(mv.tags or {}))
