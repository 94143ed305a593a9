"""Great Expectations suite results as Dagster check results and metadata, shared by the quality
checks and by the jobs that validate what they write (the OHLCV import): one way to report a suite."""

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Literal

import dagster as dg
import polars as pl
from pydantic import Field

from crypto_platform.metadata import md_table
from crypto_platform.partitions import DayPartition
from crypto_platform.quality.liquidity import INSTRUMENT_SHARE_OPTION, liquidity_floor
from crypto_platform.quality.suite_result import SuiteResult

BRONZE_SUITE_CHECK = "bronze_trades_suite"
CANDLES_SUITE_CHECK = "candles_1m_suite"
_MAX_EXAMPLE_TEXT = 600


# Which implementation of a suite a check runs: the Great Expectations suite (the reference; ~5 s to
# import per process) or the polars contract of the same rules (quality/contract.py; live runs).
ENGINES = ("great_expectations", "contract")
SuiteEngine = Literal["great_expectations", "contract"]


class SuiteConfig(dg.Config):
    """Run config of a suite check: which engine validates (both block on the same rules)."""

    engine: SuiteEngine = Field(
        default="great_expectations",
        description=(
            "great_expectations: the GX suite (reference, full report); contract: the same rules in "
            "polars (milliseconds, no GX import; what live runs use, CRYPTO_LIVE_QUALITY_ENGINE)."
        ),
    )


class BronzeSuiteConfig(SuiteConfig):
    """Run config of the bronze_trades_suite check."""

    incremental: bool = Field(
        default=True,
        description=(
            "With the contract engine: validate only the files appended since the last validation when "
            "its recorded proof shows they are unchanged and passed (else, and with GX, the whole partition)."
        ),
    )


class CandlesSuiteConfig(SuiteConfig):
    """Run config of the candles_1m_suite check."""

    min_non_empty_share: float | None = Field(
        default=None,
        description=(
            "Minimum share of non-empty (traded) minutes per partition, for every instrument; null (the "
            "default): derived from each instrument's own recent history ('auto', quality/liquidity.py). "
            f"An instrument's own '{INSTRUMENT_SHARE_OPTION}' (a share, 'auto' or null = off) comes first."
        ),
    )
    use_instrument_overrides: bool = Field(
        default=True,
        description=f"Honour per-instrument '{INSTRUMENT_SHARE_OPTION}' from the instruments file.",
    )


def floor_for(
    part: DayPartition,
    config: CandlesSuiteConfig,
    read_candles: Callable[[DayPartition], pl.DataFrame | None],
) -> tuple[float | None, str]:
    """The liquidity floor of a partition under this config, and how it was set."""
    return liquidity_floor(part, config.min_non_empty_share, config.use_instrument_overrides, read_candles)


def suite_check_result(
    context: dg.AssetCheckExecutionContext,
    results: Sequence[tuple[DayPartition, SuiteResult]],
    missing: Sequence[DayPartition],
    *,
    table: str,
    notes: Sequence[str] = (),
) -> dg.AssetCheckResult:
    """One check result over the run's cells: failed if any cell failed its suite or is missing;
    `notes` (e.g. why a liquidity floor failed) lead the description."""
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
    meta.update(validation_metadata(results))
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
    lines = [*notes[:10], *lines]
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


def validation_metadata(results: Sequence[tuple[DayPartition, SuiteResult]]) -> dict[str, object]:
    """Which validation ran (full / incremental, by cells) on how many rows, and why a cell ran full."""
    modes = Counter(_mode(r) for _, r in results)
    whys = [f"{p.key}: {r.parameters['why_full']}" for p, r in results if "why_full" in r.parameters]
    meta: dict[str, object] = {
        "validation_mode": next(iter(modes))
        if len(modes) == 1
        else ", ".join(f"{m}: {n}" for m, n in modes.items()),
        "rows_validated": sum(_validated(r) for _, r in results),
    }
    if whys:
        text = "; ".join(whys)
        meta["why_full"] = text if len(text) <= _MAX_EXAMPLE_TEXT else text[: _MAX_EXAMPLE_TEXT - 1] + "…"
    return meta


def _mode(res: SuiteResult) -> str:
    return res.parameters.get("validation", "full")


def _validated(res: SuiteResult) -> int:
    return int(res.parameters.get("rows_validated", res.row_count))


def _row(part: DayPartition, res: SuiteResult) -> dict[str, object]:
    failed = ", ".join(
        o.name + (f" ({o.unexpected_count})" if o.unexpected_count else "") for o in res.failed
    )
    return {
        "partition": part.key,
        "rows": res.row_count,
        "validated": f"{_validated(res)} ({_mode(res)})",
        "result": "OK" if res.success else "FAILED",
        "failed expectations": failed or "-",
    }
