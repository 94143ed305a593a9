"""MLflow tracking + model registry as a Dagster resource (local SQLite and artifact folder by default)."""

from __future__ import annotations

import os

import dagster as dg
from pydantic import Field

from crypto_platform.settings import PROJECT_DIR

DEFAULT_MLFLOW_DIR = "data/mlflow"


class MlflowResource(dg.ConfigurableResource):
    """Where models are tracked and registered, and under which registered-model name."""

    tracking_uri: str = Field(
        default="",
        description="MLflow tracking/registry URI; empty: sqlite:///<project>/data/mlflow/mlflow.db.",
        json_schema_extra={"dagster__is_secret": True},  # a server URI may hold credentials
    )
    artifact_location: str = Field(
        default="",
        description="Artifact root for new experiments; empty: an 'artifacts' folder beside a SQLite store.",
    )
    model_name: str = Field(default="crypto_return_lgbm", description="Registered model name.")

    @property
    def uri(self) -> str:
        """The tracking URI: the configured one, else a SQLite store under data/mlflow."""
        if self.tracking_uri:
            return self.tracking_uri
        folder = PROJECT_DIR / DEFAULT_MLFLOW_DIR
        folder.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{folder / 'mlflow.db'}"

    @property
    def artifacts(self) -> str | None:
        """Artifact location for new experiments (None: MLflow's default)."""
        return self.artifact_location or None

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Turn MLflow telemetry off for the run's process before MLflow is imported."""
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
