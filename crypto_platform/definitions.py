"""The code location: every asset, check, job, sensor and resource, assembled in one place.

Resources use the embedded defaults (local Parquet lake, DuckDB file, local MLflow) unless an
environment variable points them elsewhere; the variables are shown as such in the UI.
"""

from __future__ import annotations

import os
from typing import Any

import dagster as dg

from crypto_platform.assets import gold, history, ingest, monitoring, silver
from crypto_platform.automation.freshness import FRESHNESS_SENSORS
from crypto_platform.automation.jobs import JOBS
from crypto_platform.automation.live import SENSORS as LIVE_SENSORS
from crypto_platform.automation.maintenance import MAINTENANCE_JOBS, MAINTENANCE_SCHEDULES
from crypto_platform.automation.notifications import NOTIFICATION_SENSORS, WebhookResource
from crypto_platform.automation.retraining import RETRAINING_JOBS, RETRAINING_SCHEDULES, RETRAINING_SENSORS
from crypto_platform.checks.drift import DRIFT_CHECKS
from crypto_platform.checks.freshness import FRESHNESS_CHECKS, with_live_freshness
from crypto_platform.checks.quality import QUALITY_CHECKS
from crypto_platform.monitoring.notify import WEBHOOK_ENV
from crypto_platform.resources.lake import LAKE_ROOT_ENV, LakeResource
from crypto_platform.resources.mlflow import MLFLOW_URI_ENV, MlflowResource
from crypto_platform.resources.sources import TradeSourcesResource
from crypto_platform.resources.warehouse import WAREHOUSE_ENV, WarehouseResource


def _env_or(name: str, default: str) -> Any:
    """An EnvVar when the variable is set, else the embedded default."""
    return dg.EnvVar(name) if os.environ.get(name) else default


def build_resources() -> dict[str, Any]:
    """The resources of the code location."""
    return {
        "lake": LakeResource(root=_env_or(LAKE_ROOT_ENV, "data/lake")),
        "warehouse": WarehouseResource(path=_env_or(WAREHOUSE_ENV, "data/warehouse.duckdb")),
        "trade_sources": TradeSourcesResource(),
        "mlflow_registry": MlflowResource(tracking_uri=_env_or(MLFLOW_URI_ENV, "")),
        "webhook": WebhookResource(url=_env_or(WEBHOOK_ENV, "")),
    }


defs = dg.Definitions(
    assets=with_live_freshness(dg.load_assets_from_modules([ingest, silver, gold, monitoring])),
    asset_checks=[*QUALITY_CHECKS, *DRIFT_CHECKS, *monitoring.MONITORING_CHECKS, *FRESHNESS_CHECKS],
    jobs=[*JOBS, *history.HISTORY_JOBS, *RETRAINING_JOBS, *MAINTENANCE_JOBS],
    schedules=[*RETRAINING_SCHEDULES, *MAINTENANCE_SCHEDULES],
    sensors=[*LIVE_SENSORS, *FRESHNESS_SENSORS, *RETRAINING_SENSORS, *NOTIFICATION_SENSORS],
    resources=build_resources(),
    executor=dg.in_process_executor,
)
