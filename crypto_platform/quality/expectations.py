"""Great Expectations suites for bronze trades and silver 1-minute candles, run in-process.

GX 1.x runs against an *ephemeral* data context (nothing on disk) with a pandas datasource; a
partition's polars frame is converted to pandas at the boundary. The context, datasource, batch
definition and suites are built once per process and reused (building them costs ~10 ms; importing
great_expectations itself costs ~5 s, so the import is deferred to the first validation and never
slows down loading the Dagster code location). Partition windows are passed as suite parameters, so
one suite object serves every partition.

GX 1.24 ships no usage-statistics client; analytics are disabled anyway (GX_ANALYTICS_ENABLED=false
and the context's `analytics_enabled`), and nothing here touches the network.

Suites (expectation names are stable ids, used in metadata keys):
  bronze_trades  columns (exact set), <col>_type per contract column, dtypes_match_contract (exact polars
                 dtypes incl. time unit/zone), <key>_not_null (exchange symbol trade_id ts price amount
                 side), price_positive, amount_positive, side_in_set, trade_id_unique (exchange, symbol,
                 trade_id), ts_in_window [window_start, window_end)
  candles_1m     columns, <col>_type, dtypes_match_contract, <key>_not_null (exchange symbol ts volume
                 is_empty; o h l c on traded bars: empty bars before an instrument's first known price
                 have none to carry forward), minute_unique (exchange, symbol, ts), high_ge_low (all bars),
                 open_ge_low / open_le_high / close_ge_low / close_le_high (non-empty bars),
                 low_positive (low > 0, hence every price), volume_non_negative, ts_in_window,
                 non_empty_share (share of non-empty bars >= min_non_empty_share; omitted when None,
                 e.g. for illiquid instruments)
Uniqueness counts follow GX: every row of a duplicated key is unexpected (a doubled minute counts 2).

Each call returns a plain `SuiteResult` (no GX objects) whose figures can go straight into Dagster
asset-check metadata. Measured per call after warm-up: ~0.2 s for a day of candles, ~0.1 s for 17k
trades, ~1.3 s for 1 M trades (bench/MONITORING.md); first call ~5-7 s (GX import).
"""

from __future__ import annotations

import os
import threading
import time
from datetime import datetime
from typing import Any

import polars as pl

from crypto_platform.quality.suite_result import (
    BRONZE_KEY_COLUMNS,
    BRONZE_SUITE,
    CANDLE_KEY_COLUMNS,
    CANDLE_PRICE_COLUMNS,
    CANDLES_SUITE,
    DEFAULT_MIN_NON_EMPTY_SHARE,
    MAX_EXAMPLES,
    TRADE_SIDES,
    ExpectationOutcome,
    SuiteResult,
    check_non_empty_share,
    dtype_outcome,
    example_text,
    utc_bound,
)
from crypto_platform.schemas import BRONZE_TRADES, CANDLES

# the result types and the rules' names live in quality.suite_result; imported from here too
__all__ = [
    "BRONZE_KEY_COLUMNS",
    "BRONZE_SUITE",
    "CANDLES_SUITE",
    "CANDLE_KEY_COLUMNS",
    "CANDLE_PRICE_COLUMNS",
    "DEFAULT_MIN_NON_EMPTY_SHARE",
    "MAX_EXAMPLES",
    "TRADE_SIDES",
    "ExpectationOutcome",
    "SuiteResult",
    "check_non_empty_share",
    "validate_bronze",
    "validate_candles",
    "warm_up",
]

# Name of the dtype's scalar type as GX's pandas type check sees it (`dtype.type.__name__`).
_PANDAS_TYPE_NAMES: dict[type[pl.DataType], str] = {
    pl.String: "str",
    pl.Float64: "float64",
    pl.Int64: "int64",
    pl.Boolean: "bool",
    pl.Datetime: "Timestamp",  # tz-aware datetime64 (unit and zone are checked by dtypes_match_contract)
    pl.Enum: "CategoricalDtypeType",
}


def validate_bronze(df: pl.DataFrame, window_start: datetime, window_end: datetime) -> SuiteResult:
    """Run the bronze-trades suite on one partition's trades; ts must lie in [window_start, window_end)."""
    return _run(BRONZE_SUITE, BRONZE_TRADES, df, window_start, window_end, None)


def validate_candles(
    df: pl.DataFrame,
    window_start: datetime,
    window_end: datetime,
    *,
    min_non_empty_share: float | None = DEFAULT_MIN_NON_EMPTY_SHARE,
) -> SuiteResult:
    """Run the silver 1m-candles suite; min_non_empty_share=None skips the liquidity expectation."""
    check_non_empty_share(min_non_empty_share)
    return _run(CANDLES_SUITE, CANDLES, df, window_start, window_end, min_non_empty_share)


def warm_up() -> float:
    """Import GX and build the cached context and suites now; returns the seconds it took."""
    t0 = time.perf_counter()
    rt = _runtime()
    rt.suite(BRONZE_SUITE, None)
    rt.suite(CANDLES_SUITE, DEFAULT_MIN_NON_EMPTY_SHARE)
    return time.perf_counter() - t0


# ----------------------------------------------------------------------------------------------
# suites


def _bronze_expectations(gxe: Any) -> list[Any]:
    meta = _named
    return [
        meta(gxe.ExpectTableColumnsToMatchSet(column_set=list(BRONZE_TRADES), exact_match=True), "columns"),
        *_type_expectations(gxe, BRONZE_TRADES),
        *[meta(gxe.ExpectColumnValuesToNotBeNull(column=c), f"{c}_not_null") for c in BRONZE_KEY_COLUMNS],
        *[
            meta(gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0, strict_min=True), f"{c}_positive")
            for c in ("price", "amount")
        ],
        meta(gxe.ExpectColumnValuesToBeInSet(column="side", value_set=list(TRADE_SIDES)), "side_in_set"),
        meta(
            gxe.ExpectCompoundColumnsToBeUnique(column_list=["exchange", "symbol", "trade_id"]),
            "trade_id_unique",
        ),
        _window_expectation(gxe),
    ]


def _candle_expectations(gxe: Any, col: Any, min_non_empty_share: float | None) -> list[Any]:
    meta = _named
    traded = col("is_empty") == False  # noqa: E712 (a GX row condition, not a Python comparison)
    pair = gxe.ExpectColumnPairValuesAToBeGreaterThanB
    out = [
        meta(gxe.ExpectTableColumnsToMatchSet(column_set=list(CANDLES), exact_match=True), "columns"),
        *_type_expectations(gxe, CANDLES),
        *[meta(gxe.ExpectColumnValuesToNotBeNull(column=c), f"{c}_not_null") for c in CANDLE_KEY_COLUMNS],
        *[
            meta(gxe.ExpectColumnValuesToNotBeNull(column=c, row_condition=traded), f"{c}_not_null")
            for c in CANDLE_PRICE_COLUMNS
        ],
        meta(gxe.ExpectCompoundColumnsToBeUnique(column_list=["exchange", "symbol", "ts"]), "minute_unique"),
        meta(pair(column_A="high", column_B="low", or_equal=True), "high_ge_low"),
        meta(pair(column_A="open", column_B="low", or_equal=True, row_condition=traded), "open_ge_low"),
        meta(pair(column_A="high", column_B="open", or_equal=True, row_condition=traded), "open_le_high"),
        meta(pair(column_A="close", column_B="low", or_equal=True, row_condition=traded), "close_ge_low"),
        meta(pair(column_A="high", column_B="close", or_equal=True, row_condition=traded), "close_le_high"),
        # with low <= open/close/high above, a positive low means every price is positive
        meta(gxe.ExpectColumnValuesToBeBetween(column="low", min_value=0, strict_min=True), "low_positive"),
        meta(gxe.ExpectColumnValuesToBeBetween(column="volume", min_value=0), "volume_non_negative"),
        _window_expectation(gxe),
    ]
    if min_non_empty_share is not None:
        # 'mostly' = the share of rows that must be non-empty bars; unexpected_count = empty minutes.
        non_empty = gxe.ExpectColumnValuesToBeInSet(
            column="is_empty", value_set=[False], mostly=min_non_empty_share
        )
        out.append(meta(non_empty, "non_empty_share"))
    return out


def _window_expectation(gxe: Any) -> Any:
    return _named(
        gxe.ExpectColumnValuesToBeBetween(
            column="ts",
            min_value={"$PARAMETER": "window_start"},
            max_value={"$PARAMETER": "window_end"},
            strict_max=True,
        ),
        "ts_in_window",
    )


def _type_expectations(gxe: Any, schema: dict[str, pl.DataType]) -> list[Any]:
    return [
        _named(gxe.ExpectColumnValuesToBeOfType(column=c, type_=_pandas_type_name(t)), f"{c}_type")
        for c, t in schema.items()
    ]


def _pandas_type_name(dtype: pl.DataType) -> str:
    for base, name in _PANDAS_TYPE_NAMES.items():
        if isinstance(dtype, base):
            return name
    raise TypeError(f"no pandas type check defined for polars dtype {dtype}")


def _named(expectation: Any, name: str) -> Any:
    expectation.meta = {"name": name}
    return expectation


# ----------------------------------------------------------------------------------------------
# cached GX runtime


class _Runtime:
    """The process-wide ephemeral GX context, its pandas batch definition and the built suites."""

    def __init__(self) -> None:
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig
        from great_expectations.expectations.row_conditions import Column

        self.gx = gx
        self.column = Column
        self.context = gx.get_context(mode="ephemeral")
        self.context.config.analytics_enabled = False
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False)
        datasource = self.context.data_sources.add_pandas("crypto_platform_quality")
        asset = datasource.add_dataframe_asset("partition")
        self.batch_definition = asset.add_batch_definition_whole_dataframe("whole_partition")
        self._suites: dict[tuple[str, float | None], Any] = {}
        self.lock = threading.Lock()

    def suite(self, name: str, min_non_empty_share: float | None) -> Any:
        key = (name, min_non_empty_share)
        if key not in self._suites:
            gxe = self.gx.expectations
            if name == BRONZE_SUITE:
                expectations = _bronze_expectations(gxe)
            else:
                expectations = _candle_expectations(gxe, self.column, min_non_empty_share)
            suite_name = name if min_non_empty_share is None else f"{name}__share_{min_non_empty_share}"
            suite = self.context.suites.add(self.gx.ExpectationSuite(name=suite_name))
            for e in expectations:
                suite.add_expectation(e)
            self._suites[key] = suite
        return self._suites[key]


_RUNTIME: _Runtime | None = None
_RUNTIME_LOCK = threading.Lock()


def _runtime() -> _Runtime:
    global _RUNTIME
    with _RUNTIME_LOCK:
        if _RUNTIME is None:
            _RUNTIME = _Runtime()
        return _RUNTIME


# ----------------------------------------------------------------------------------------------
# running


def _run(
    suite_name: str,
    contract: dict[str, pl.DataType],
    df: pl.DataFrame,
    window_start: datetime,
    window_end: datetime,
    min_non_empty_share: float | None,
) -> SuiteResult:
    t0 = time.perf_counter()
    start, end = utc_bound(window_start, "window_start"), utc_bound(window_end, "window_end")
    if end <= start:
        raise ValueError(f"empty window [{start}, {end})")
    rt = _runtime()
    pdf = _to_pandas(df)
    with rt.lock:
        suite = rt.suite(suite_name, min_non_empty_share)
        names = [e.meta["name"] for e in suite.expectations]
        batch = rt.batch_definition.get_batch(batch_parameters={"dataframe": pdf})
        # BASIC holds every figure an outcome reads (counts, examples, observed value, missing columns);
        # SUMMARY only adds value counts and index lists nobody reads, and cost ~45% more CPU per call.
        result = batch.validate(
            suite,
            result_format={"result_format": "BASIC", "partial_unexpected_count": MAX_EXAMPLES},
            expectation_parameters={"window_start": start, "window_end": end},
        )
    outcomes = [_outcome(r) for r in result.results]
    outcomes.append(dtype_outcome(df, contract))
    last_type = max(i for i, n in enumerate(names) if n.endswith("_type"))
    names.insert(last_type + 1, "dtypes_match_contract")  # the exact-dtype check follows the type checks
    order = {n: i for i, n in enumerate(names)}
    outcomes.sort(key=lambda o: order.get(o.name, len(order)))
    params = {"window_start": start.isoformat(), "window_end": end.isoformat()}
    if suite_name == CANDLES_SUITE:
        params["min_non_empty_share"] = str(min_non_empty_share)
    return SuiteResult(
        suite=suite_name,
        success=all(o.success for o in outcomes),
        row_count=df.height,
        outcomes=tuple(outcomes),
        duration_s=time.perf_counter() - t0,
        parameters=params,
    )


def _to_pandas(df: pl.DataFrame) -> Any:
    """polars -> pandas; nullable Int64/Boolean stay integer/boolean (pandas extension dtypes)."""
    import pandas as pd
    import pyarrow as pa

    mapping = {pa.int64(): pd.Int64Dtype(), pa.bool_(): pd.BooleanDtype()}
    return df.to_pandas(types_mapper=mapping.get)


def _outcome(r: Any) -> ExpectationOutcome:
    cfg = r.expectation_config
    kwargs = cfg.kwargs
    res = r.result or {}
    exc = r.exception_info or {}
    raised = bool(exc.get("raised_exception"))
    column = kwargs.get("column")
    if column is None and "column_A" in kwargs:
        column = f"{kwargs['column_A']},{kwargs['column_B']}"
    if column is None and "column_list" in kwargs:
        column = ",".join(kwargs["column_list"])
    unexpected = res.get("unexpected_count")
    examples = res.get("partial_unexpected_list") or []
    observed = res.get("observed_value")
    if cfg.type == "expect_table_columns_to_match_set" and not r.success:
        mismatched = (res.get("details") or {}).get("mismatched") or {}
        observed = f"missing={mismatched.get('missing', [])} unexpected={mismatched.get('unexpected', [])}"
    if cfg.type == "expect_column_values_to_be_in_set" and kwargs.get("mostly") is not None:
        n, bad = res.get("element_count") or 0, unexpected or 0
        observed = f"{(n - bad) / n:.4f}" if n else "n/a"
    return ExpectationOutcome(
        name=(cfg.meta or {}).get("name", cfg.type),
        expectation=cfg.type,
        success=bool(r.success) and not raised,
        column=column,
        unexpected_count=None if unexpected is None else int(unexpected),
        element_count=None if res.get("element_count") is None else int(res["element_count"]),
        unexpected_examples=tuple(example_text(v) for v in examples[:MAX_EXAMPLES]),
        observed_value=None if observed is None else str(observed),
        error=str(exc.get("exception_message")) if raised else None,
    )
