"""The code location: every asset, check, job, sensor and resource, assembled in one place.

The settings are read from the environment once, here, when the code location loads
(`load_settings()`: a bad value fails the load with a SettingsError naming the variable); sensors,
schedules, checks and resources receive them, and the UI shows them as the `settings` resource.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from crypto_platform.assets import gold, history, ingest, monitoring, silver
from crypto_platform.automation.freshness import build_live_freshness_sensor
from crypto_platform.automation.jobs import JOBS
from crypto_platform.automation.live import build_live_sensor
from crypto_platform.automation.maintenance import MAINTENANCE_JOBS, build_maintenance_schedules
from crypto_platform.automation.notifications import NOTIFICATION_SENSORS, WebhookResource
from crypto_platform.automation.retraining import RETRAINING_JOBS, build_retraining_sensor, build_schedules
from crypto_platform.checks.drift import DRIFT_CHECKS
from crypto_platform.checks.freshness import build_live_data_lag_checks, with_live_freshness
from crypto_platform.checks.quality import QUALITY_CHECKS
from crypto_platform.checks.reconciliation import RECONCILIATION_CHECKS
from crypto_platform.platform_settings import PlatformSettings, load_settings
from crypto_platform.resources.lake import lake_resource
from crypto_platform.resources.mlflow import MlflowResource
from crypto_platform.resources.settings import secret, settings_resource
from crypto_platform.resources.sources import TradeSourcesResource
from crypto_platform.resources.warehouse import WarehouseResource


def build_resources(settings: PlatformSettings | None = None) -> dict[str, Any]:
    """The resources of the code location, configured from `settings` (default: the loaded ones)."""
    settings = settings or load_settings()
    return {
        "lake": lake_resource(settings),
        "warehouse": WarehouseResource(path=settings.warehouse_path),
        "trade_sources": TradeSourcesResource(),
        "mlflow_registry": MlflowResource(tracking_uri=secret(settings, "mlflow_tracking_uri")),
        "webhook": WebhookResource(url=secret(settings, "webhook_url")),
        "settings": settings_resource(settings),
    }


def build_definitions(settings: PlatformSettings) -> dg.Definitions:
    """Every definition of the code location, for one settings object."""
    return dg.Definitions(
        assets=with_live_freshness(dg.load_assets_from_modules([ingest, silver, gold, monitoring])),
        asset_checks=[
            *QUALITY_CHECKS,
            *RECONCILIATION_CHECKS,
            *DRIFT_CHECKS,
            *monitoring.MONITORING_CHECKS,
            build_live_data_lag_checks(settings),
        ],
        jobs=[*JOBS, *history.HISTORY_JOBS, *RETRAINING_JOBS, *MAINTENANCE_JOBS],
        schedules=[*build_schedules(settings), *build_maintenance_schedules(settings)],
        sensors=[
            build_live_sensor(settings),
            build_live_freshness_sensor(settings),
            build_retraining_sensor(settings),
            *NOTIFICATION_SENSORS,
        ],
        resources=build_resources(settings),
        executor=dg.in_process_executor,
    )


defs = build_definitions(load_settings())
