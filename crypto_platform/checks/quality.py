"""Blocking data-quality checks: the Great Expectations suites on bronze trades and silver 1m candles.

Both are correctness guards (`blocking=True`): when a suite fails in a run, no asset downstream of
the checked table runs in that run (for a range run: for the whole range). Each (instrument, day)
cell of the run is validated against its own half-open UTC window; the metadata carries, summed
over the cells, the unexpected count of every expectation, the failed expectations, up to five
example values per failed expectation (prefixed with the cell) and a per-cell table.

`min_non_empty_share` (candles) is the liquidity floor: the share of minutes that must hold at least
one trade. Default 0.5 from the check config; an instrument can override it in the instruments file
(`min_non_empty_share: 0.95` for a liquid market, `null` to skip the expectation for an illiquid one,
see bench/MONITORING.md).
"""

from collections.abc import Sequence

import dagster as dg
from pydantic import Field

from crypto_platform.assets.ingest import BRONZE
from crypto_platform.assets.silver import CANDLES_1M
from crypto_platform.checks import last_materialized_partitions, md_table, run_partitions
from crypto_platform.partitions import DayPartition
from crypto_platform.quality.expectations import (
    DEFAULT_MIN_NON_EMPTY_SHARE,
    SuiteResult,
    validate_bronze,
    validate_candles,
)
from crypto_platform.resources.lake import LakeResource

BRONZE_SUITE_CHECK = "bronze_trades_suite"
CANDLES_SUITE_CHECK = "candles_1m_suite"
INSTRUMENT_SHARE_OPTION = "min_non_empty_share"
_MAX_EXAMPLE_TEXT = 600


class CandlesSuiteConfig(dg.Config):
    """Run config of the candles_1m_suite check."""

    min_non_empty_share: float | None = Field(
        default=DEFAULT_MIN_NON_EMPTY_SHARE,
        description=(
            "Minimum share of non-empty (traded) minutes per partition; null skips the expectation. "
            f"An instrument's own '{INSTRUMENT_SHARE_OPTION}' in the instruments file takes precedence."
        ),
    )
    use_instrument_overrides: bool = Field(
        default=True,
        description=f"Honour per-instrument '{INSTRUMENT_SHARE_OPTION}' from the instruments file.",
    )


def min_share_for(part: DayPartition, config: CandlesSuiteConfig) -> float | None:
    """The liquidity floor for an instrument: its own option when set (null disables), else the config."""
    if config.use_instrument_overrides and INSTRUMENT_SHARE_OPTION in part.instrument.options:
        value = part.instrument.options[INSTRUMENT_SHARE_OPTION]
        return None if value is None else float(value)
    return config.min_non_empty_share


@dg.asset_check(
    asset=BRONZE,
    name=BRONZE_SUITE_CHECK,
    blocking=True,
    description=(
        "Great Expectations suite 'bronze_trades' on every partition of the run: exact columns and "
        "dtypes, non-null keys, positive price and amount, side in (buy, sell), unique trade ids, "
        "timestamps inside the partition's UTC day. Blocking: a failure stops the candles downstream."
    ),
)
def bronze_trades_suite(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
    """Great Expectations suite on every bronze trades partition of the run."""
    parts = _parts(context, BRONZE)
    results, missing = [], []
    for part in parts:
        df = lake.read_partition("bronze", "trades", part)
        if df is None:
            missing.append(part)
            continue
        results.append((part, validate_bronze(df, part.start, part.end)))
    return suite_check_result(context, results, missing, table="bronze/trades")


@dg.asset_check(
    asset=CANDLES_1M,
    name=CANDLES_SUITE_CHECK,
    blocking=True,
    description=(
        "Great Expectations suite 'candles_1m' on every partition of the run: exact columns and dtypes, "
        "non-null keys, one row per minute, high >= low, open/close inside [low, high] on traded bars, "
        "non-negative volume, bars inside the partition's UTC day and a minimum share of traded "
        "minutes. Blocking: a failure stops features, labels and roll-ups downstream."
    ),
)
def candles_1m_suite(
    context: dg.AssetCheckExecutionContext, config: CandlesSuiteConfig, lake: LakeResource
) -> dg.AssetCheckResult:
    """Great Expectations suite on every silver 1m candles partition of the run."""
    parts = _parts(context, CANDLES_1M)
    results, missing = [], []
    for part in parts:
        df = lake.read_partition("silver", "candles_1m", part)
        if df is None:
            missing.append(part)
            continue
        share = min_share_for(part, config)
        results.append((part, validate_candles(df, part.start, part.end, min_non_empty_share=share)))
    return suite_check_result(context, results, missing, table="silver/candles_1m")


QUALITY_CHECKS: list[dg.AssetChecksDefinition] = [bronze_trades_suite, candles_1m_suite]


# ----------------------------------------------------------------------------------------------


def _parts(context: dg.AssetCheckExecutionContext, asset_key: dg.AssetKey) -> list[DayPartition]:
    parts = run_partitions(context)
    if parts is None:  # check-only run without a partition: the latest materialized cells
        parts = last_materialized_partitions(context, asset_key)
        context.log.info(
            f"no partition in the run: validating the latest materialization ({len(parts)} cells)"
        )
    return parts


def suite_check_result(
    context: dg.AssetCheckExecutionContext,
    results: Sequence[tuple[DayPartition, SuiteResult]],
    missing: Sequence[DayPartition],
    *,
    table: str,
) -> dg.AssetCheckResult:
    """One check result over the run's cells: failed if any cell failed its suite or is missing."""
    if not results and not missing:
        return dg.AssetCheckResult(
            passed=True,
            description=f"{table} has no materialized partition yet: nothing to validate",
            metadata={"partitions": 0},
        )
    failed = [(p, r) for p, r in results if not r.success]
    for p, r in results:
        (context.log.info if r.success else context.log.error)(f"{p}: {r.summary()}")
    meta = aggregate_metadata(results)
    meta["partitions"] = len(results) + len(missing)
    bad = [p.key for p, _ in failed] + [p.key for p in missing]
    meta["failed_partitions"] = ", ".join(bad) or "-"
    if len(results) + len(missing) == 1:
        meta["partition"] = (results[0][0] if results else missing[0]).key
    if missing:
        meta["missing_partitions"] = ", ".join(p.key for p in missing)
    if len(results) > 1:
        meta["per_partition"] = dg.MetadataValue.md(md_table([_row(p, r) for p, r in results]))
    lines = [f"{p}: {r.summary()}" for p, r in failed[:10]]
    lines += [f"{p}: {table} partition not materialized" for p in missing[:10]]
    if len(failed) + len(missing) > 20:
        lines.append(f"… and {len(failed) + len(missing) - 20} more failed partitions")
    description = "\n".join(lines) or f"{len(results)} partition(s) of {table} passed every expectation"
    return dg.AssetCheckResult(
        passed=not failed and not missing,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata=meta,
        description=description,
    )


def aggregate_metadata(results: Sequence[tuple[DayPartition, SuiteResult]]) -> dict[str, object]:
    """SuiteResult.to_metadata summed over cells: counts add up, texts are prefixed with their cell."""
    meta: dict[str, object] = {}
    if not results:
        return meta
    single = len(results) == 1
    failed_names: list[str] = []
    texts: dict[str, list[str]] = {}
    for part, res in results:
        for key, value in res.to_metadata().items():
            if key in {"suite", "expectations"}:
                meta[key] = value
            elif key == "success":
                meta[key] = bool(meta.get(key, True)) and bool(value)
            elif key == "failed_expectations":
                failed_names += [n for n in str(value).split(", ") if n != "-" and n not in failed_names]
            elif key == "duration_s":
                meta[key] = round(float(meta.get(key, 0.0)) + float(value), 4)  # type: ignore[arg-type]
            elif key == "row_count" or key.endswith(".unexpected_count"):
                meta[key] = int(meta.get(key, 0)) + int(value)  # type: ignore[call-overload]
            else:  # observed values, examples, errors: per cell
                texts.setdefault(key, []).append(str(value) if single else f"{part.key}: {value}")
    meta["failed_expectations"] = ", ".join(failed_names) or "-"
    for key, values in texts.items():
        text = "; ".join(values)
        meta[key] = text if len(text) <= _MAX_EXAMPLE_TEXT else text[: _MAX_EXAMPLE_TEXT - 1] + "…"
    meta["suite_parameters"] = dg.MetadataValue.json({p.key: r.parameters for p, r in results[:50]})
    return meta


def _row(part: DayPartition, res: SuiteResult) -> dict[str, object]:
    failed = ", ".join(
        o.name + (f" ({o.unexpected_count})" if o.unexpected_count else "") for o in res.failed
    )
    return {
        "partition": part.key,
        "rows": res.row_count,
        "result": "OK" if res.success else "FAILED",
        "failed expectations": failed or "-",
    }
