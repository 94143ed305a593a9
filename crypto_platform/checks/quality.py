"""Blocking data-quality checks: the Great Expectations suites on bronze trades and silver 1m candles.

Each check runs either the Great Expectations suite (the default: backfills, jobs, the cadence
schedule) or, with config `engine: contract`, the same rules in polars (quality/contract.py: what
live runs use every minute, without GX's import cost); both report the same expectation names.
With the contract, the bronze check of an open day validates only the tick's new delta when a proof
recorded by the previous validation shows that everything before it passed (checks/bronze_cells.py);
its metadata says which validation ran (`validation_mode`) and on how many rows (`rows_validated`).

Both are correctness guards (`blocking=True`): when a suite fails in a run, no asset downstream of
the checked table runs in that run (for a range run: for the whole range). Each (instrument, day)
cell of the run is validated against its own half-open UTC window; the metadata carries, summed
over the cells, the unexpected count of every expectation, the failed expectations, up to five
example values per failed expectation (prefixed with the cell) and a per-cell table.

`min_non_empty_share` (candles) is the liquidity floor: the share of minutes that must hold at least
one trade. By default 'auto', derived from the instrument's own recent history (quality/liquidity.py);
the check config can fix one for all, and an instrument can set its own in the instruments file
(`min_non_empty_share: 0.95` for a liquid market, `auto`, or `null` to skip the expectation, see
bench/MONITORING.md). A failure names the threshold, how it was set and the measured share.
"""

import dagster as dg

from crypto_platform import tables
from crypto_platform.checks.bronze_cells import validate_bronze_cell
from crypto_platform.partitions import DayPartition, last_materialized_partitions, run_partitions
from crypto_platform.quality.check_results import (
    BRONZE_SUITE_CHECK,
    CANDLES_SUITE_CHECK,
    BronzeSuiteConfig,
    CandlesSuiteConfig,
    floor_for,
    suite_check_result,
)
from crypto_platform.quality.contract import check_bronze, check_candles
from crypto_platform.quality.expectations import validate_bronze, validate_candles
from crypto_platform.quality.liquidity import floor_note
from crypto_platform.resources.lake import LakeResource


@dg.asset_check(
    asset=tables.BRONZE_TRADES.key,
    name=BRONZE_SUITE_CHECK,
    blocking=True,
    description=(
        "Great Expectations suite 'bronze_trades' on every partition of the run: exact columns and "
        "dtypes, non-null keys, positive price and amount, side in (buy, sell), unique trade ids, "
        "timestamps inside the partition's UTC day. Blocking: a failure stops the candles downstream."
    ),
)
def bronze_trades_suite(
    context: dg.AssetCheckExecutionContext, config: BronzeSuiteConfig, lake: LakeResource
) -> dg.AssetCheckResult:
    """Great Expectations suite (or its polars contract) on every bronze trades partition of the run."""
    contract = config.engine == "contract"
    validate = check_bronze if contract else validate_bronze
    results, missing = [], []
    for part in _parts(context, tables.BRONZE_TRADES.key):
        result = validate_bronze_cell(lake, part, validate, incremental=contract and config.incremental)
        if result is None:
            missing.append(part)
        else:
            results.append((part, result))
    return suite_check_result(context, results, missing, table=str(tables.BRONZE_TRADES))


@dg.asset_check(
    asset=tables.CANDLES_1M.key,
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
    """Great Expectations suite (or its polars contract) on every silver 1m candles partition of the run."""
    validate = check_candles if config.engine == "contract" else validate_candles
    parts = _parts(context, tables.CANDLES_1M.key)
    results, missing, notes = [], [], []
    for part in parts:
        df = lake.read_partition(tables.CANDLES_1M, part)
        if df is None:
            missing.append(part)
            continue
        share, how = floor_for(part, config, lambda p: lake.read_partition(tables.CANDLES_1M, p))
        results.append((part, validate(df, part.start, part.end, min_non_empty_share=share)))
        notes += [note] if (note := floor_note(part, df, share, how)) else []
    return suite_check_result(context, results, missing, table=str(tables.CANDLES_1M), notes=notes)


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
