"""What a data-quality suite returns, whichever engine ran it, and the rules' shared vocabulary.

Both engines of the same suites, Great Expectations (`quality.expectations`, the reference) and the
polars contract of live runs (`quality.contract`), return a `SuiteResult` of `ExpectationOutcome`s under
the same stable expectation names, so the checks report either one the same way. Here: the suites'
names, key columns and allowed values, the result types, and the helpers both engines use (the exact
polars dtype check, example text, UTC window bounds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import polars as pl

BRONZE_SUITE = "bronze_trades"
CANDLES_SUITE = "candles_1m"
BRONZE_KEY_COLUMNS: tuple[str, ...] = ("exchange", "symbol", "trade_id", "ts", "price", "amount", "side")
CANDLE_KEY_COLUMNS: tuple[str, ...] = ("exchange", "symbol", "ts", "volume", "is_empty")
# Prices must be present on traded bars. Empty bars carry the previous close, which does not exist
# before the first trade an instrument ever had (a first ingested day that starts quiet, a new
# listing): those leading bars honestly have no price, and must not fail the partition.
CANDLE_PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")
TRADE_SIDES: tuple[str, ...] = ("buy", "sell")
DEFAULT_MIN_NON_EMPTY_SHARE = 0.5
MAX_EXAMPLES = 5
_ALWAYS_OBSERVED = frozenset({"non_empty_share"})


@dataclass(frozen=True)
class ExpectationOutcome:
    """One expectation's verdict and figures, free of GX objects."""

    name: str  # stable id, e.g. 'price_positive'
    expectation: str  # GX expectation type, e.g. 'expect_column_values_to_be_between'
    success: bool
    column: str | None = None
    # rows violating it (columns, for dtypes_match_contract); None for table-level expectations
    unexpected_count: int | None = None
    element_count: int | None = None  # rows it was evaluated on
    unexpected_examples: tuple[str, ...] = ()
    observed_value: str | None = None  # table-level figure (column set, share, ...)
    error: str | None = None  # exception raised while evaluating (the outcome then fails)


@dataclass(frozen=True)
class SuiteResult:
    """The result of one suite on one frame: overall success plus every expectation's outcome."""

    suite: str
    success: bool
    row_count: int
    outcomes: tuple[ExpectationOutcome, ...]
    duration_s: float
    parameters: dict[str, str] = field(default_factory=dict)

    @property
    def failed(self) -> tuple[ExpectationOutcome, ...]:
        """The outcomes that did not pass."""
        return tuple(o for o in self.outcomes if not o.success)

    def outcome(self, name: str) -> ExpectationOutcome:
        """The outcome with this name (KeyError if the suite has none)."""
        for o in self.outcomes:
            if o.name == name:
                return o
        raise KeyError(f"{self.suite}: no expectation named {name!r} ({[o.name for o in self.outcomes]})")

    def to_metadata(self) -> dict[str, bool | int | float | str]:
        """Flat figures for Dagster check metadata: counts per expectation and the failed names."""
        out: dict[str, bool | int | float | str] = {
            "suite": self.suite,
            "success": self.success,
            "row_count": self.row_count,
            "expectations": len(self.outcomes),
            "failed_expectations": ", ".join(o.name for o in self.failed) or "-",
            "duration_s": round(self.duration_s, 4),
        }
        for o in self.outcomes:
            if o.unexpected_count is not None:
                out[f"{o.name}.unexpected_count"] = o.unexpected_count
            if o.observed_value is not None and (not o.success or o.name in _ALWAYS_OBSERVED):
                out[f"{o.name}.observed"] = o.observed_value
            if not o.success and o.unexpected_examples:
                out[f"{o.name}.examples"] = "; ".join(o.unexpected_examples)
            if o.error:
                out[f"{o.name}.error"] = o.error
        return out

    def summary(self) -> str:
        """One line: suite, verdict, failed expectations with their unexpected counts."""
        if self.success:
            return f"{self.suite}: OK ({len(self.outcomes)} expectations, {self.row_count} rows)"
        parts = [
            f"{o.name}" + (f" ({o.unexpected_count} unexpected)" if o.unexpected_count else "")
            for o in self.failed
        ]
        return f"{self.suite}: FAILED {', '.join(parts)} ({self.row_count} rows)"


def check_non_empty_share(min_non_empty_share: float | None) -> None:
    """Refuse a liquidity floor outside [0, 1] (None: the rule is skipped) — for both suite engines."""
    if min_non_empty_share is not None and not 0.0 <= min_non_empty_share <= 1.0:
        raise ValueError(f"min_non_empty_share must be in [0, 1], got {min_non_empty_share}")


def dtype_outcome(df: pl.DataFrame, contract: dict[str, pl.DataType]) -> ExpectationOutcome:
    """Exact polars dtypes vs the contract (time unit and zone included, which pandas types blur)."""
    bad = [f"{c}: {df.schema[c]} != {t}" for c, t in contract.items() if c in df.schema and df.schema[c] != t]
    return ExpectationOutcome(
        name="dtypes_match_contract",
        expectation="polars_schema_equals_contract",
        success=not bad,
        unexpected_count=len(bad),
        element_count=sum(c in df.schema for c in contract),
        unexpected_examples=tuple(bad[:MAX_EXAMPLES]),
    )


def example_text(value: Any) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "null"
    if isinstance(value, dict):
        return ", ".join(f"{k}={example_text(v)}" for k, v in value.items())
    if isinstance(value, tuple | list):
        return "(" + ", ".join(example_text(v) for v in value) + ")"
    text = str(value)
    return "null" if text in {"nan", "NaT", "<NA>", "None"} else text


def utc_bound(value: datetime, what: str) -> datetime:
    if value.tzinfo is None:
        raise ValueError(f"{what} must be timezone-aware (UTC), got naive {value}")
    return value.astimezone(UTC)
