"""The code location: every asset, check, job, sensor and resource, assembled in one place.

The settings are read from the environment once, here, when the code location loads
(`load_settings()`: a bad value fails the load with a SettingsError naming the variable); sensors,
schedules, checks and resources receive them, and the UI shows them as the `settings` resource.
Loading it also sets how often this process's cyclic garbage collector runs (`gc_tuning.py`): every
process that loads it goes on to hold ~1 M long-lived objects.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from crypto_platform.assets import gold, history, ingest, monitoring, rolling_evaluation, silver
from crypto_platform.automation.distributed import build_executor
from crypto_platform.automation.freshness import build_live_freshness_sensor
from crypto_platform.automation.jobs import JOBS
from crypto_platform.automation.live import build_live_sensor
from crypto_platform.automation.maintenance import MAINTENANCE_JOBS, build_maintenance_schedules
from crypto_platform.automation.notifications import NOTIFICATION_SENSORS, WebhookResource
from crypto_platform.automation.quality_cadence import build_quality_schedule, quality_suites_job
from crypto_platform.automation.retraining import RETRAINING_JOBS, build_retraining_sensor, build_schedules
from crypto_platform.checks.drift import DRIFT_CHECKS
from crypto_platform.checks.freshness import build_live_data_lag_checks, with_live_freshness
from crypto_platform.checks.quality import QUALITY_CHECKS
from crypto_platform.checks.reconciliation import RECONCILIATION_CHECKS
from crypto_platform.gc_tuning import tune_gc
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
        assets=with_live_freshness(
            dg.load_assets_from_modules([ingest, silver, gold, monitoring, rolling_evaluation])
        ),
        asset_checks=[
            *QUALITY_CHECKS,
            *RECONCILIATION_CHECKS,
            *DRIFT_CHECKS,
            *monitoring.MONITORING_CHECKS,
            *rolling_evaluation.ROLLING_EVALUATION_CHECKS,
            build_live_data_lag_checks(settings),
        ],
        jobs=[*JOBS, *history.HISTORY_JOBS, *RETRAINING_JOBS, *MAINTENANCE_JOBS, quality_suites_job],
        schedules=[
            *build_schedules(settings),
            *build_maintenance_schedules(settings),
            build_quality_schedule(settings),
        ],
        sensors=[
            build_live_sensor(settings),
            build_live_freshness_sensor(settings),
            build_retraining_sensor(settings),
            *NOTIFICATION_SENSORS,
        ],
        resources=build_resources(settings),
        executor=build_executor(settings),
    )


_settings = load_settings()
tune_gc(_settings.gc_young_threshold)
defs = build_definitions(_settings)
