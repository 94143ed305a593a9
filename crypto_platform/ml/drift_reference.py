"""A model version's drift reference sample, read back through MLflow and checked.

The sample (the candidate features as seen in training) is logged with the training run
(`mlflow_logging.log_tables`) and its SHA-256 recorded on the version at registration (tag
`drift_reference_sha256`). The drift checks read it through `model_cache.load_reference`, which keeps a
verified copy per machine, so a run reads it here, with MLflow, only when that copy is missing.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import mlflow
from mlflow.exceptions import MlflowException

from crypto_platform.ml import mlflow_store
from crypto_platform.ml.artifacts import ModelArtifactError
from crypto_platform.ml.model_info import DRIFT_REFERENCE_ARTIFACT, REFERENCE_CHECKSUM_TAG, ModelVersionInfo


def reference_file(tracking_uri: str, info: ModelVersionInfo) -> bytes:
    """The version's drift reference file from its run; ModelArtifactError when it is missing or differs
    from the SHA-256 recorded at registration (a version registered before that was recorded: as stored)."""
    mlflow_store.ensure_schema(tracking_uri)
    where = f"runs:/{info.run_id}/{DRIFT_REFERENCE_ARTIFACT}"
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(where, dst_path=tmp, tracking_uri=tracking_uri)
            data = Path(local).read_bytes()
        except (MlflowException, OSError) as exc:
            raise ModelArtifactError(
                f"{info.label}: its drift reference at {where} is missing ({exc})"
            ) from exc
    if (expected := info.tags.get(REFERENCE_CHECKSUM_TAG)) and hashlib.sha256(data).hexdigest() != expected:
        raise ModelArtifactError(
            f"{info.label}: its drift reference at {where} differs from the one registered (SHA-256 "
            f"{hashlib.sha256(data).hexdigest()[:12]}, recorded {expected[:12]})"
        )
    return data
