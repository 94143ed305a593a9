"""Long history into silver: the `import_candles_job` writes 1-minute OHLCV bars into silver/candles_1m.

Models need months of data; tick history is rarely available for that long, 1-minute bars are. This
job imports them into the SAME table the trades pipeline fills (silver/candles_1m, one partition per
UTC day x instrument), so everything downstream (roll-ups, features, labels, training) is unchanged:

* sources: OHLCV files (CSV with a header, Kraken OHLCVT exports, Parquet; a file or a glob) or a
  live exchange's `fetch_ohlcv` through ccxt (`sources.ccxt_candles`: paginated forward from `since`,
  `api_url` override);
* bars are validated and conformed by `transforms.ohlcv_import` (origin 'import:<file name>' or
  'import:ccxt'; what the source does not say, e.g. the taker split, stays null); only 1-minute
  bars on the UTC minute grid are accepted, and absent minutes inside a file's span (sparse exports
  list only minutes with trades) become explicit empty bars;
* each UTC day is written atomically through LakeResource and reported as an AssetMaterialization of
  silver/candles_1m for that (day x instrument) partition, so the UI shows the days as materialized;
  the warehouse view is refreshed at the end;
* re-importing replaces the bars of the imported span and keeps the partition's other imported bars
  (`transforms.candle_import.merge_day`; idempotent; importing a day in two halves works); a
  partition built from trades is never overwritten unless `overwrite_trades` is set (trades are the
  better source);
* days outside the partition grid (before the universe's start_date, after today) are skipped and
  listed, never silently dropped; an import with no day inside the grid fails, naming the instrument,
  the start_date and the bars' date span;
* the job then runs the `candles_1m_suite` (the Great Expectations suite of the blocking asset check
  on silver/candles_1m, same config) on every written partition and records the result as that
  check's evaluation: a failed expectation fails the job (the bars stay written, as after a
  materialization whose check fails; gold refuses structurally broken candles on its own).

The instrument must be in the instruments file. Instruments with `source: candles` have no trades at
all (raw/bronze are not for them); their entry may carry the import defaults (`path`, `format`,
`volume_unit`). Instruments with a trade source can take imported history too (the days their
trades do not cover).
"""

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import polars as pl
from pydantic import Field

from crypto_platform import tables
from crypto_platform.partitions import DATE_DIM, INSTRUMENT_DIM, DayPartition, parse_key
from crypto_platform.quality.check_results import (
    CANDLES_SUITE_CHECK,
    CandlesSuiteConfig,
    floor_for,
    suite_check_result,
)
from crypto_platform.quality.expectations import validate_candles
from crypto_platform.quality.liquidity import floor_note
from crypto_platform.resources.lake import LakeResource
from crypto_platform.resources.warehouse import WarehouseResource
from crypto_platform.settings import (
    CANDLE_IMPORT_FORMATS,
    VOLUME_UNITS,
    Instrument,
    SettingsError,
    load_universe,
)
from crypto_platform.transforms.candle_import import (
    ImportCandlesError,
    ccxt_candles,
    merge_day,
    outside_grid,
    parse_instant,
    read_candle_files,
    require_days_in_grid,
    resolve_paths,
)
from crypto_platform.transforms.ohlcv_import import split_by_day

TABLE = tables.CANDLES_1M
IMPORT_SOURCES = ("file", "ccxt")


class ImportCandlesConfig(dg.Config):
    """What to import into silver/candles_1m (empty fields fall back to the instrument's options)."""

    instrument: str = Field(
        description="Instrument partition key, e.g. 'ftx.BTC-USD-USD'; must be in the instruments file."
    )
    source: str = Field(
        default="file",
        description="'file' (CSV / Kraken OHLCVT / Parquet, a file or glob) or 'ccxt' (fetch_ohlcv).",
    )
    path: str = Field(
        default="",
        description="File or glob (relative to the project folder); empty: the instrument's 'path' option.",
    )
    file_format: str = Field(
        default="",
        description=(
            "auto | csv | kraken | binance | parquet | feather; empty: the instrument's 'format' option, "
            "else auto."
        ),
    )
    volume_unit: str = Field(
        default="",
        description="What a file's 'volume' column is: base | quote; empty: instrument option, else base.",
    )
    since: str = Field(
        default="",
        description="First instant to import, UTC (YYYY-MM-DD or ISO datetime). Required for ccxt; "
        "empty for files: from the file's first bar.",
    )
    until: str = Field(
        default="",
        description="End of the import (exclusive), UTC. Empty: the file's last bar / for ccxt now "
        "(the still-open minute is never imported).",
    )
    api_url: str = Field(
        default="", description="ccxt API base-URL override; empty: the instrument's 'api_url' option."
    )
    page_limit: int = Field(
        default=1000, description="ccxt fetch_ohlcv page size (Binance spot: at most 1000)."
    )
    overwrite_trades: bool = Field(
        default=False,
        description="Replace bars of partitions built from trades (default: keep them, skip the day).",
    )


# ----------------------------------------------------------------------------------------------
# reading


def fetch_ccxt_candles(
    inst: Instrument,
    since: datetime,
    until: datetime,
    *,
    api_url: str | None = None,
    page_limit: int = 1000,
    now: datetime | None = None,
) -> tuple[pl.DataFrame, int]:
    """1-minute bars in [since, min(until, now floored to the minute)) via ccxt fetch_ohlcv, paginated
    forward from `since`; returns (CANDLES with origin 'import:ccxt', number of requests)."""
    from crypto_platform.sources.base import SourceError
    from crypto_platform.sources.ccxt_candles import CcxtCandles

    now = now or datetime.now(UTC)
    end = min(until, now.replace(second=0, microsecond=0))  # the open minute is not a finished bar
    if end <= since:
        raise ImportCandlesError(f"ccxt import of {inst.key}: nothing to fetch in [{since}, {end})")
    try:
        got = CcxtCandles.for_instrument(inst, api_url=api_url, page_limit=page_limit).fetch(
            inst.symbol, since, end
        )
    except SourceError as exc:
        raise ImportCandlesError(str(exc)) from exc
    return ccxt_candles(inst, got.rows, since, end), got.requests


# ----------------------------------------------------------------------------------------------
# writing


def write_days(
    lake: LakeResource, inst: Instrument, candles: pl.DataFrame, *, overwrite_trades: bool = False
) -> list[dict[str, Any]]:
    """Write imported bars per UTC day into silver/candles_1m; one status row per day.

    Existing bars of a partition outside the imported span are kept; a partition holding bars built
    from trades is skipped unless `overwrite_trades`. Days outside the partition grid are skipped.
    """
    first_day, last_day = load_universe().start_date, datetime.now(UTC).date()  # today: the open day
    out: list[dict[str, Any]] = []
    for day, bars in split_by_day(candles).items():
        part = DayPartition(inst, day)
        row: dict[str, Any] = {"partition": part.key, "day": day, "rows": 0, "empty_bars": 0, "bytes": 0}
        row.update({"from": None, "to": None})
        if skip := outside_grid(day, first_day, last_day):
            merged, status = None, skip
        else:
            existing = lake.read_partition(TABLE, part)
            merged, status = merge_day(existing, bars, overwrite_trades=overwrite_trades)
        row["status"] = status
        if merged is not None:
            info = lake.write_partition(merged, TABLE, part)
            row.update(
                rows=info.rows,
                empty_bars=int(merged["is_empty"].sum()),
                bytes=info.bytes,
                imported=bars.height,
                origin=", ".join(sorted(merged["origin"].unique().to_list())),
                path=info.path,
                **{"from": merged["ts"].min(), "to": merged["ts"].max()},
            )
        out.append(row)
    return out


def partition_tags(part: DayPartition) -> dict[str, str]:
    """The per-dimension tags Dagster puts on a multi-partition materialization (UI partition status
    by dimension reads them); an op logging an AssetMaterialization has to add them itself."""
    mk = dg.MultiPartitionKey({DATE_DIM: part.day.isoformat(), INSTRUMENT_DIM: part.instrument.key})
    return {f"dagster/partition/{dim}": key for dim, key in mk.keys_by_dimension.items()}


def materialization(
    part: DayPartition, row: dict[str, Any], source: str, extra: dict[str, str] | None = None
) -> dg.AssetMaterialization:
    """The AssetMaterialization of silver/candles_1m for one imported (day x instrument) partition."""
    return dg.AssetMaterialization(
        asset_key=tables.CANDLES_1M.key,
        partition=part.key,
        tags=partition_tags(part),
        description=f"OHLCV history imported from {source}",
        metadata={
            "rows": dg.MetadataValue.int(int(row["rows"])),
            "imported_bars": dg.MetadataValue.int(int(row.get("imported", 0))),
            "empty_bars": dg.MetadataValue.int(int(row["empty_bars"])),
            "bytes": dg.MetadataValue.int(int(row["bytes"])),
            "status": row["status"],
            "origin": row.get("origin", ""),
            "time_from": str(row["from"]),
            "time_to": str(row["to"]),
            "source": source,
            "path": dg.MetadataValue.path(row["path"]),
            **(extra or {}),
        },
    )


# ----------------------------------------------------------------------------------------------
# the op and job


def _option(config_value: str, inst: Instrument, name: str, default: str) -> str:
    return config_value or str(inst.options.get(name) or default)


def load_candles(config: ImportCandlesConfig, inst: Instrument) -> tuple[pl.DataFrame, str, int]:
    """The configured bars of `inst` within [since, until): (CANDLES, description of the source, requests)."""
    if config.source not in IMPORT_SOURCES:
        raise ImportCandlesError(f"source {config.source!r} is not one of {', '.join(IMPORT_SOURCES)}")
    since, until = parse_instant(config.since, "since"), parse_instant(config.until, "until")
    if since and until and until <= since:
        raise ImportCandlesError(f"until {until} is not after since {since}")
    if config.source == "ccxt":
        if since is None:
            raise ImportCandlesError(
                "a ccxt import needs 'since' (the exchange's history is paged forward from it)"
            )
        df, requests = fetch_ccxt_candles(
            inst,
            since,
            until or datetime.now(UTC),
            api_url=config.api_url or None,
            page_limit=config.page_limit,
        )
        return df, f"ccxt {inst.exchange} fetch_ohlcv", requests
    pattern = config.path or str(inst.options.get("path") or "")
    if not pattern:
        raise ImportCandlesError(
            f"instrument {inst.key}: no file to import; set 'path' in the job config or the instruments entry"
        )
    fmt = _option(config.file_format, inst, "format", "auto")
    unit = _option(config.volume_unit, inst, "volume_unit", "base")
    if fmt not in CANDLE_IMPORT_FORMATS:
        raise ImportCandlesError(f"file_format {fmt!r} is not one of {', '.join(CANDLE_IMPORT_FORMATS)}")
    if unit not in VOLUME_UNITS:
        raise ImportCandlesError(f"volume_unit {unit!r} is not one of {', '.join(VOLUME_UNITS)}")
    paths = resolve_paths(pattern)
    df = read_candle_files(inst, paths, fmt, unit)
    if since is not None:
        df = df.filter(pl.col("ts") >= since)
    if until is not None:
        df = df.filter(pl.col("ts") < until)
    if df.is_empty():
        raise ImportCandlesError(f"{pattern}: no bars in [{since or 'start'}, {until or 'end'})")
    return df, ", ".join(p.name for p in paths), 0


@dg.op(
    name="import_candles",
    description="Import 1-minute OHLCV history (files or ccxt fetch_ohlcv) into silver/candles_1m by day.",
    tags={"kind": "import"},
)
def import_candles(
    context: dg.OpExecutionContext,
    config: ImportCandlesConfig,
    lake: LakeResource,
    warehouse: WarehouseResource,
) -> list[str]:
    try:
        universe = load_universe()
        inst = universe.instrument(config.instrument)
        candles, source, requests = load_candles(config, inst)
    except (SettingsError, ImportCandlesError) as exc:
        raise dg.Failure(description=f"import_candles: {exc}") from exc
    if inst.has_trades:
        context.log.info(
            f"{inst.key} has trade source '{inst.source}': days built from trades are kept "
            f"{'(overwrite_trades is ON: they are replaced)' if config.overwrite_trades else ''}"
        )
    context.log.info(
        f"{inst.key}: {candles.height} bars {candles['ts'].min()} .. {candles['ts'].max()} "
        f"from {source}" + (f" ({requests} requests)" if requests else "")
    )
    try:
        require_days_in_grid(inst, candles, universe.start_date, datetime.now(UTC).date(), str(universe.path))
    except ImportCandlesError as exc:
        raise dg.Failure(description=str(exc)) from exc
    rows = write_days(lake, inst, candles, overwrite_trades=config.overwrite_trades)
    written = [r for r in rows if not r["status"].startswith("skipped")]
    views = warehouse.refresh_views(lake, [TABLE]).metadata if written else {}
    for row in rows:
        part = DayPartition(inst, row["day"])
        if row["status"].startswith("skipped"):
            context.log.warning(f"{part}: {row['status']}")
            continue
        context.log_event(materialization(part, row, source, views))
    skipped = len(rows) - len(written)
    context.log.info(f"import_candles {inst.key}: {len(written)} days written, {skipped} skipped")
    lines = [f"{r['partition']}: {r['status']}, {r['rows']} bars ({r['empty_bars']} empty)" for r in rows]
    context.log.info("per day:\n" + "\n".join(lines))
    return [r["partition"] for r in written]


@dg.op(
    name="validate_imported_candles",
    out={},  # no output: it only yields the check evaluation
    description=(
        f"The '{CANDLES_SUITE_CHECK}' Great Expectations suite on every imported partition, recorded as "
        "that asset check's evaluation; a failed expectation fails the job."
    ),
    tags={"kind": "import"},
)
def validate_imported_candles(
    context: dg.OpExecutionContext, config: CandlesSuiteConfig, lake: LakeResource, written: list[str]
) -> Iterator[dg.AssetCheckEvaluation]:
    results, missing, notes = [], [], []
    for part in (parse_key(k) for k in written):
        df = lake.read_partition(TABLE, part)
        if df is None:
            missing.append(part)
            continue
        share, how = floor_for(part, config, lambda p: lake.read_partition(TABLE, p))
        results.append((part, validate_candles(df, part.start, part.end, min_non_empty_share=share)))
        notes += [note] if (note := floor_note(part, df, share, how)) else []
    if not results and not missing:
        context.log.info("nothing imported: nothing to validate")
        return
    res = suite_check_result(context, results, missing, table=f"{TABLE}", notes=notes)  # type: ignore[arg-type]
    # yielded, not log_event: a step that then fails drops the events logged with log_event
    yield dg.AssetCheckEvaluation(
        asset_key=tables.CANDLES_1M.key,
        check_name=CANDLES_SUITE_CHECK,
        passed=res.passed,
        metadata=res.metadata,
        severity=res.severity,
        description=res.description,
        blocking=True,
    )
    if not res.passed:
        raise dg.Failure(
            description=f"imported {TABLE} fails {CANDLES_SUITE_CHECK}:\n{res.description}",
            metadata={"failed_partitions": res.metadata["failed_partitions"]},
        )


@dg.job(
    name="import_candles_job",
    description=(
        "Import 1-minute OHLCV history (CSV / Kraken / Parquet files, or ccxt fetch_ohlcv) into "
        "silver/candles_1m for one instrument; every imported day shows as a materialized partition, "
        f"validated by the '{CANDLES_SUITE_CHECK}' suite."
    ),
    tags={"kind": "import"},
)
def import_candles_job() -> None:
    validate_imported_candles(import_candles())


HISTORY_JOBS = [import_candles_job]


def run_config(instrument: str, **fields: Any) -> dict[str, Any]:
    """The run config of `import_candles_job` (for the CLI: --config-json, for tests: execute_in_process)."""
    return {"ops": {"import_candles": {"config": {"instrument": instrument, **fields}}}}
