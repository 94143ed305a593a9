"""The sensor that records the live data-lag checks every minute, without launching a run."""

from datetime import UTC, datetime

import dagster as dg

from crypto_platform.automation.live import sensor_default_status
from crypto_platform.checks.freshness import CHECK_NAME, FRESHNESS_SENSOR_NAME, evaluations
from crypto_platform.platform_settings import PlatformSettings
from crypto_platform.resources.lake import LakeResource


def build_live_freshness_sensor(settings: PlatformSettings) -> dg.SensorDefinition:
    """The sensor recording `live_data_lag` every minute; on with the live sensor (CRYPTO_LIVE_SENSOR)."""
    max_lag = settings.freshness_max_lag_seconds

    @dg.sensor(
        name=FRESHNESS_SENSOR_NAME,
        minimum_interval_seconds=60,
        default_status=sensor_default_status(settings),
        description=(
            "Every minute, records the live_data_lag checks of silver/candles_1m and gold/predictions "
            "(runless check evaluations: no run is launched)."
        ),
    )
    def live_freshness_sensor(context: dg.SensorEvaluationContext, lake: LakeResource) -> dg.SensorResult:
        events = evaluations(lake, datetime.now(UTC), max_lag)
        for e in events:
            context.log.info(
                f"{e.asset_key.to_user_string()}: {'PASS' if e.passed else 'WARN'} {e.description}"
            )
        if not events:
            return dg.SensorResult(skip_reason="no live instrument configured")
        verdicts = ", ".join(
            f"{e.asset_key.to_user_string()} {'pass' if e.passed else 'WARN'}" for e in events
        )
        return dg.SensorResult(
            asset_events=events, skip_reason=f"recorded {CHECK_NAME} (no run needed): {verdicts}"
        )

    return live_freshness_sensor
