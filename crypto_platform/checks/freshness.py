"""Freshness of the live layers (silver/candles_1m, gold/predictions), visible in the Dagster UI.

Two complementary signals:

* **Freshness policy** (Dagster 1.13's `FreshnessPolicy.time_window`, evaluated by the daemon's
  freshness loop without any run): the asset was materialized (any partition) within the last
  2 minutes = PASS, within 5 = WARN, later = FAIL. Shown as the asset's "Freshness" status.
  `with_live_freshness(assets)` attaches it.
* **`live_data_lag` asset checks**: how far the *data* of every live instrument lags behind the
  clock (now - end of the newest 1-minute bar in today's partition); passes while every live
  instrument is within `CRYPTO_FRESHNESS_MAX_LAG_SECONDS` (default 180 s = a minute of bar
  accumulation + the 120 s delivery target). A policy on materialization times cannot see a run that
  succeeds without new data (a stalled source); this check can. `live_freshness_sensor`
  (automation/freshness.py) evaluates it every minute and records the result without launching a
  run (runless check evaluations), so the check costs no run slot on a small machine; it can also
  be executed from the UI.

Dagster's factory checks were considered: `build_time_partition_freshness_checks` needs a
time-window partitions definition (ours is day x instrument multi-partitions), and
`build_last_update_freshness_checks` + `build_sensor_for_freshness_checks` launch a run per
evaluation and measure materialization time only (what the freshness policy already shows).
"""

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg

from crypto_platform import tables
from crypto_platform.partitions import DayPartition
from crypto_platform.platform_settings import PlatformSettings, env_name
from crypto_platform.resources.lake import LakeResource
from crypto_platform.settings import load_universe

FRESHNESS_TABLES = [tables.CANDLES_1M, tables.PREDICTIONS]
FRESHNESS_KEYS = [t.key for t in FRESHNESS_TABLES]
CHECK_NAME = "live_data_lag"
MAX_LAG_ENV = env_name("freshness_max_lag_seconds")
FRESHNESS_SENSOR_NAME = "live_freshness_sensor"

LIVE_FRESHNESS_POLICY = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(minutes=5), warn_window=timedelta(minutes=2)
)


def _with_policy(spec: dg.AssetSpec) -> dg.AssetSpec:
    return dg.apply_freshness_policy(spec, LIVE_FRESHNESS_POLICY) if spec.key in FRESHNESS_KEYS else spec


def with_live_freshness(assets: Sequence[Any]) -> list[Any]:
    """The assets, with the live freshness policy on silver/candles_1m and gold/predictions."""
    return list(dg.map_asset_specs(_with_policy, assets))


def newest_bar_end(lake: LakeResource, key: dg.AssetKey, part: DayPartition) -> datetime | None:
    """End (ts + 1 minute) of the newest 1-minute row of one partition of a lake table, or None."""
    newest = lake.partition_max(tables.by_key(key), part, "ts")
    return None if newest is None else newest + timedelta(minutes=1)


def lag_report(
    lake: LakeResource, key: dg.AssetKey, now: datetime, max_lag: float
) -> tuple[bool, str, dict[str, Any]] | None:
    """(passed, description, metadata) of the data lag of `key` over the live instruments; None if none."""
    live = [i for i in load_universe().instruments if i.is_live]
    if not live:
        return None
    today = now.astimezone(UTC).date()
    lags: dict[str, float | None] = {}
    for inst in live:
        ends = [newest_bar_end(lake, key, DayPartition(inst, today - timedelta(days=d))) for d in (0, 1)]
        end = max((e for e in ends if e is not None), default=None)
        lags[inst.key] = None if end is None else round((now - end).total_seconds(), 1)
    missing = sorted(k for k, v in lags.items() if v is None)
    late = sorted(k for k, v in lags.items() if v is not None and v > max_lag)
    known = [v for v in lags.values() if v is not None]
    passed = not missing and not late
    if passed:
        desc = f"all {len(lags)} live instruments within {max_lag:g} s (worst {max(known):g} s)"
    else:
        parts = []
        if late:
            parts.append("lagging: " + ", ".join(f"{k} {lags[k]:g} s" for k in late))
        if missing:
            parts.append("no data today or yesterday: " + ", ".join(missing))
        desc = f"data older than {max_lag:g} s — " + "; ".join(parts)
    metadata: dict[str, Any] = {
        "max_lag_seconds": dg.MetadataValue.float(float(max_lag)),
        "evaluated_at": dg.MetadataValue.timestamp(now),
        "lag_by_instrument": dg.MetadataValue.json(lags),
    }
    if known:
        metadata["worst_lag_seconds"] = dg.MetadataValue.float(float(max(known)))
    return passed, desc, metadata


def evaluations(lake: LakeResource, now: datetime, max_lag: float) -> list[dg.AssetCheckEvaluation]:
    """The `live_data_lag` evaluations the sensor records (none without live instruments)."""
    out = []
    for key in FRESHNESS_KEYS:
        report = lag_report(lake, key, now, max_lag)
        if report is None:
            continue
        passed, desc, meta = report
        out.append(
            dg.AssetCheckEvaluation(
                asset_key=key,
                check_name=CHECK_NAME,
                passed=passed,
                metadata=meta,
                severity=dg.AssetCheckSeverity.WARN,
                description=desc,
            )
        )
    return out


def build_live_data_lag_checks(settings: PlatformSettings) -> dg.AssetChecksDefinition:
    """The `live_data_lag` checks, failing above the configured maximum lag."""
    max_lag = settings.freshness_max_lag_seconds

    @dg.multi_asset_check(
        name="live_data_lag_checks",
        specs=[
            dg.AssetCheckSpec(
                CHECK_NAME,
                asset=key,
                description=(
                    "Live data lag: now minus the end of the newest 1-minute bar of every live instrument "
                    f"(synthetic, ccxt); fails above {max_lag:g} s ({MAX_LAG_ENV}). "
                    f"Evaluated every minute by {FRESHNESS_SENSOR_NAME} (no run needed)."
                ),
            )
            for key in FRESHNESS_KEYS
        ],
        can_subset=True,
    )
    def live_data_lag_checks(context: dg.AssetCheckExecutionContext, lake: LakeResource):
        now = datetime.now(UTC)
        for check_key in context.selected_asset_check_keys:
            report = lag_report(lake, check_key.asset_key, now, max_lag)
            passed, desc, meta = report or (True, "no live instrument configured: not applicable", {})
            yield dg.AssetCheckResult(
                asset_key=check_key.asset_key,
                check_name=CHECK_NAME,
                passed=passed,
                severity=dg.AssetCheckSeverity.WARN,
                description=desc,
                metadata=meta,
            )

    return live_data_lag_checks
