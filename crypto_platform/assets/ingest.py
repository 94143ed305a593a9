"""raw and bronze layers: fetch trades into immutable raw batches, then type/validate/de-duplicate."""

from collections.abc import Callable
from datetime import datetime, timedelta

import dagster as dg
import polars as pl
from pydantic import Field

from crypto_platform import tables
from crypto_platform.assets.open_day import (
    UNCHANGED,
    BronzeDerivation,
    bronze_from_scratch,
    extend_bronze,
    stored_infos,
)
from crypto_platform.fetch_plan import SETTLE, FetchPlan, plan_fetch
from crypto_platform.metadata import summarize
from crypto_platform.partitions import DayPartition, partitions_of, single_run
from crypto_platform.platform_settings import DEFAULT_OVERLAP_SECONDS
from crypto_platform.raw_manifest import RawBatch, RawManifest
from crypto_platform.resources.lake import LakeResource, WriteInfo
from crypto_platform.resources.sources import TradeSourcesResource
from crypto_platform.resources.warehouse import WarehouseResource
from crypto_platform.schemas import empty
from crypto_platform.sources.base import TradeBatch
from crypto_platform.sources.wire import WIRE_SUMS, retries_by_class, wire_summary
from crypto_platform.timeutil import epoch_ms_floor


class RawTradesConfig(dg.Config):
    overlap_seconds: int = Field(
        default=DEFAULT_OVERLAP_SECONDS,
        ge=0,
        description=(
            "Late-arriving trades: each fetch re-reads this many seconds before the watermark (bronze "
            "drops the repeats by trade id). A finished day is re-read once more this long after its "
            "end ('settled'), so trades published late for its last minutes are not lost. The limit: a "
            "trade that lies further than this before the watermark when it is published is not "
            "fetched again; `late_trades` / `late_depth_seconds` in the metadata show how much of the "
            "overlap the late trades needed (a warning past half of it)."
        ),
    )
    whole_minutes: bool = Field(
        default=True,
        description=(
            "Fetch the open day only up to the last whole minute, so a 1-minute bar is published "
            "once complete (never a partial bar that later changes)."
        ),
    )
    refetch: bool = Field(
        default=False,
        description=(
            "Repair: fetch each partition of the run again from the start of its day and replace its "
            "committed batches (for a corrupt batch file, or trades found missing, e.g. by the "
            "trades_reconciliation check). The replaced batch "
            "files are left as orphans for the lake sweep; bronze and silver then re-derive from it."
        ),
    )
    exchange_runs: int = Field(
        default=1,
        ge=1,
        description=(
            "How many runs fetch from the same exchange at once (the live sensor's CRYPTO_LIVE_SHARDS): "
            "each spaces its ccxt requests this many times the exchange's rateLimit, so together they "
            "stay within it."
        ),
    )


def late_trades(
    lake: LakeResource, part: DayPartition, manifest: RawManifest, fetched: pl.DataFrame, start: datetime
) -> pl.DataFrame:
    """Fetched trades timestamped before the previous watermark that no committed batch holds: trades
    the exchange published after an earlier fetch had passed their time (caught by the overlap)."""
    wm = manifest.watermark
    older = fetched if wm is None else fetched.filter(pl.col("timestamp_ms") < epoch_ms_floor(wm))
    if wm is None or older.is_empty():
        return older.clear()
    # only the batches whose coverage reaches into the re-read window can hold those trades
    scan = lake.scan_batches(tables.RAW_TRADES, part, manifest.names_reaching_past(start))
    if scan is None:
        return older
    start_ms = epoch_ms_floor(start)
    known = scan.filter(pl.col("timestamp_ms") >= start_ms).select("trade_id").collect()["trade_id"]
    return older.filter(~pl.col("trade_id").is_in(known.implode()))


def commit_batch(
    lake: LakeResource, part: DayPartition, batch: TradeBatch, now: datetime, *, restart: bool = False
) -> tuple[RawBatch, int]:
    """Write the fetched trades as a new immutable batch, then commit it in the manifest (atomic).

    The lake re-reads the manifest at its commit (under the partition lock, or after a lost conditional
    commit on S3), so two runs fetching the same partition both commit (neither batch is lost);
    `restart` (a re-fetch) starts a new batch list instead.
    Returns the committed batch entry and the file's size in bytes.
    """
    span = f"batch-{epoch_ms_floor(batch.covered_from)}-{epoch_ms_floor(batch.covered_to)}"

    def next_manifest(manifest: RawManifest, name: str, info: WriteInfo) -> RawManifest:
        wm = None if restart else manifest.watermark
        covered_to = batch.covered_to if wm is None else max(batch.covered_to, wm)  # never shrinks
        entry = RawBatch(name, batch.covered_from, covered_to, rows=info.rows, written_at=now)
        return manifest.restarted_with(entry) if restart else manifest.with_batch(entry)

    committed, info = lake.append_batch(
        batch.trades, tables.RAW_TRADES, part, (span, str(epoch_ms_floor(now))), next_manifest
    )
    return committed.batches[-1], info.bytes


def base_row(part: DayPartition) -> dict:
    """The metadata row of a partition before any fetch (every row has the same columns)."""
    row = {"partition": part.key, "source": part.instrument.source, "rows": 0, "bytes": 0, "late_trades": 0}
    return {**row, "complete": None, **dict.fromkeys(WIRE_SUMS, 0)}


def report_fetch(
    context: dg.AssetExecutionContext,
    part: DayPartition,
    plan: FetchPlan,
    batch: TradeBatch,
    now: datetime,
    overlap: timedelta,
) -> None:
    """Say in the event log where the fetch could not prove coverage, and what happened on the wire.

    Incomplete coverage is a warning once the window ended more than `overlap` ago (the exchange should
    have answered for it by then), else information (a live window whose next trade is still to come).
    """
    if not batch.complete:
        stale = now - plan.end > overlap
        say = context.log.warning if stale else context.log.info
        say(
            f"raw {part}: coverage proven only up to {batch.covered_to.isoformat()} of "
            f"{plan.end.isoformat()}: {batch.reason or 'no reason given'}. It is recorded up to there; "
            "the next run resumes from it."
        )
    if batch.wire:
        troubled = batch.wire.get("retries") or batch.wire.get("duplicate_pages")
        (context.log.warning if troubled else context.log.info)(
            f"raw {part}: wire: {wire_summary(batch.wire)}"
        )


def fetch_partition(
    context: dg.AssetExecutionContext,
    lake: LakeResource,
    trade_sources: TradeSourcesResource,
    part: DayPartition,
    plan: FetchPlan,
    *,
    manifest: RawManifest,
    now: datetime,
    overlap: timedelta,
    exchange_runs: int = 1,
) -> dict:
    """Fetch one partition's due window (planned from `manifest`) and commit it; returns the
    partition's metadata row. `exchange_runs`: runs sharing the exchange's rate limit."""
    row = base_row(part)
    assert plan.start is not None
    source = trade_sources.source_for(part.instrument, rate_limit_factor=exchange_runs)
    batch = source.fetch(part.instrument, plan.start, plan.end)
    row.update(complete=batch.complete, **{k: batch.wire.get(k, 0) for k in WIRE_SUMS}, wire=batch.wire)
    row["why_incomplete"] = batch.reason
    report_fetch(context, part, plan, batch, now, overlap)
    late = pl.DataFrame() if plan.restart else late_trades(lake, part, manifest, batch.trades, plan.start)
    wm = None if plan.restart else manifest.watermark
    nothing = batch.covered_to <= batch.covered_from and batch.trades.is_empty()
    if nothing or (wm is not None and batch.covered_to <= wm and plan.trigger != SETTLE and late.is_empty()):
        return {**row, "status": "nothing new"}
    entry, size = commit_batch(lake, part, batch, now, restart=plan.restart)
    row.update(status="fetched", rows=entry.rows, bytes=size, late_trades=late.height)
    row.update({"from": entry.covered_from, "to": entry.covered_to})
    if late.height:
        depth = (epoch_ms_floor(wm) - int(late["timestamp_ms"].min())) / 1000
        row["late_depth_seconds"] = depth
        say = context.log.warning if depth > overlap.total_seconds() / 2 else context.log.info
        say(
            f"raw {part}: {late.height} late trade(s) caught by the overlap re-read, up to {depth:.1f} s "
            f"before the watermark (overlap {overlap.total_seconds():g} s; trades later than the overlap "
            "are not fetched again: raise overlap_seconds if this nears it)"
        )
    return row


@dg.asset(
    key=tables.RAW_TRADES.key,
    partitions_def=tables.RAW_TRADES.partitions_def,
    backfill_policy=single_run,
    group_name="raw",
    kinds={"parquet", "ccxt"},
    description=(
        "Exchange trades exactly as received (ccxt unified fields + the exchange's own payload), "
        "as immutable batch files per (instrument, UTC day). Each run fetches only what lies after "
        "the partition's watermark (the end of its committed coverage), re-reading a small overlap "
        "before it for late-arriving trades, so re-runs are idempotent and the still-open day is "
        "topped up incrementally (whole minutes only)."
    ),
)
def raw_trades(
    context: dg.AssetExecutionContext,
    config: RawTradesConfig,
    lake: LakeResource,
    trade_sources: TradeSourcesResource,
) -> dg.MaterializeResult:
    stats = []
    overlap = timedelta(seconds=config.overlap_seconds)
    now = trade_sources.clock()
    for part in partitions_of(context):
        manifest = lake.read_manifest(tables.RAW_TRADES, part)
        plan = plan_fetch(
            manifest, part, now, overlap, whole_minutes=config.whole_minutes, refetch=config.refetch
        )
        if plan.due:
            row = fetch_partition(
                context,
                lake,
                trade_sources,
                part,
                plan,
                manifest=manifest,
                now=now,
                overlap=overlap,
                exchange_runs=config.exchange_runs,
            )
        else:
            row = {**base_row(part), "status": plan.status, "complete": plan.status == "complete"}
        context.log.info(f"raw {part}: {row['status']} ({plan.note}), {row['rows']} new trades")
        stats.append(row)
    wires = [r.pop("wire") for r in stats if "wire" in r]
    meta = summarize(stats, sums=("rows", "bytes", "late_trades", *WIRE_SUMS))
    meta["retries_by_error"] = dg.MetadataValue.json(retries_by_class(wires))
    meta["rate_limit_wait_seconds"] = float(sum(w.get("rate_limit_wait_seconds", 0.0) for w in wires))
    gaps = [(r["partition"], r.pop("why_incomplete")) for r in stats if "why_incomplete" in r]
    meta["incomplete_partitions"] = sum(1 for r in stats if r["complete"] is False)
    meta["why_incomplete"] = dg.MetadataValue.md(
        "\n".join(f"- {k}: {why}" for k, why in gaps if why) or "none"
    )
    depths = [r["late_depth_seconds"] for r in stats if "late_depth_seconds" in r]
    meta["late_depth_seconds"] = dg.MetadataValue.float(float(max(depths, default=0.0)))
    meta["overlap_seconds"] = dg.MetadataValue.int(config.overlap_seconds)
    meta["fetched_at"] = now.isoformat()
    return dg.MaterializeResult(metadata=meta)


MAX_COMMIT_TRIES = 5


def raw_version(lake: LakeResource, part: DayPartition) -> int:
    """The version of the partition's committed raw manifest (0: never committed)."""
    return lake.read_manifest(tables.RAW_TRADES, part).version


def scan_raw(lake: LakeResource, part: DayPartition, manifest: RawManifest) -> pl.LazyFrame:
    """The committed raw batches of a partition, scanned lazily (the payload is read only for rejects)."""
    scan = lake.scan_batches(tables.RAW_TRADES, part, manifest.names)
    return scan if scan is not None else empty(tables.RAW_TRADES.schema).lazy()


def derive_bronze(
    lake: LakeResource, part: DayPartition, *, before_commit: Callable[[int], None] | None = None
) -> tuple[BronzeDerivation, list[WriteInfo], RawManifest]:
    """Bronze trades + rejects of one partition, committed only while the raw manifest they were built
    from is still the current one (else re-derived from the newer raw): a slow run can never replace
    the bronze of a newer one. An open day is extended by the batches committed since its stored
    bronze (`open_day.extend_bronze`), else derived from scratch. `before_commit(attempt)` runs
    between reading and committing."""
    for attempt in range(MAX_COMMIT_TRIES):
        manifest = lake.read_manifest(tables.RAW_TRADES, part)
        if not manifest.exists and (orphans := lake.uncommitted_batches(tables.RAW_TRADES, part)):
            raise dg.Failure(
                f"{tables.RAW_TRADES} {part}: {len(orphans)} batch file(s) but no committed manifest (a "
                f"fetch died between writing {orphans[0].name} and committing it); refusing to build bronze "
                "from uncommitted data. Repair: materialize raw/trades for this partition (it fetches the "
                "day again and commits it); the lake sweep removes the orphan files."
            )
        result = extend_bronze(lake, part, manifest)
        if result is None:
            result = bronze_from_scratch(scan_raw(lake, part, manifest), part, manifest)
        if before_commit is not None:
            before_commit(attempt)
        frames = {tables.BRONZE_TRADES: result.bronze, tables.TRADE_REJECTS: result.rejects}
        if result.mode == UNCHANGED:
            kept = {t: lake.partition_rows(t, part) for t in frames}
            return result, stored_infos(lake, part, kept), manifest
        infos = lake.commit_derived(
            frames,
            part,
            result.lineage(manifest),
            inputs_current=lambda v=manifest.version: (
                lake.read_manifest(tables.RAW_TRADES, part).version == v
            ),
            append=result.append,  # an open day's tick: only its new rows, as a delta
        )
        if infos is not None:
            return result, infos, manifest
        dg.get_dagster_logger().warning(
            f"bronze {part}: raw/trades moved on (version {manifest.version} is no longer current) "
            "while bronze was built; re-deriving from the newer raw"
        )
    raise dg.Failure(
        f"bronze {part}: raw/trades changed during each of {MAX_COMMIT_TRIES} attempts to derive it; "
        "is another run fetching this partition in a loop? Retry when it has finished."
    )


# raw_rows_processed vs rows_carried: what a tick read anew vs kept from the stored partition
BRONZE_SUMS = ("rows", "rejects", "duplicates_dropped", "raw_rows_processed", "rows_carried", "bytes")


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            tables.BRONZE_TRADES.key,
            deps=[tables.RAW_TRADES.key],
            description="Typed, validated, de-duplicated trades: one row per (exchange, symbol, trade_id).",
            kinds={"parquet", "polars"},
        ),
        dg.AssetSpec(
            tables.TRADE_REJECTS.key,
            deps=[tables.RAW_TRADES.key],
            description="Raw rows that failed validation, with the reason; never silently dropped.",
            kinds={"parquet", "polars"},
        ),
    ],
    partitions_def=tables.BRONZE_TRADES.partitions_def,
    backfill_policy=single_run,
    group_name="bronze",
    can_subset=False,
)
def bronze_trades(context: dg.AssetExecutionContext, lake: LakeResource, warehouse: WarehouseResource):
    """Validate and de-duplicate every raw partition of the run into bronze trades + rejects."""
    stats, reject_stats = [], []
    for part in partitions_of(context):
        result, (info, rinfo), manifest = derive_bronze(lake, part)
        ts = result.bronze.get_column("ts")
        stats.append(
            {
                "partition": part.key,
                "mode": result.mode,
                "raw_rows_processed": result.raw_rows_processed,
                "rows_carried": result.rows_carried,
                "rows": info.rows,
                "rejects": rinfo.rows,
                "duplicates_dropped": result.duplicates_dropped,
                "raw_version": manifest.version,
                "bytes": info.bytes,
                "from": ts.min(),
                "to": ts.max(),
            }
        )
        reasons = result.rejects.group_by("reason").len().sort("reason").rows() if rinfo.rows else []
        reject_stats.append(
            {
                "partition": part.key,
                "rows": rinfo.rows,
                "bytes": rinfo.bytes,
                "reasons": "; ".join(f"{r}: {n}" for r, n in reasons),
            }
        )
        context.log.info(f"bronze {part}: {info.rows} trades, {rinfo.rows} rejects")
    # bronze.trades and bronze.trade_rejects in DuckDB: the desk inspects rejected rows with SQL
    views = warehouse.refresh_views(lake, [tables.BRONZE_TRADES, tables.TRADE_REJECTS])
    yield dg.MaterializeResult(
        asset_key=tables.BRONZE_TRADES.key,
        metadata={
            **summarize(
                stats,
                sums=("rows", "rejects", "duplicates_dropped", "raw_rows_processed", "rows_carried", "bytes"),
            ),
            **views.metadata,
        },
    )
    yield dg.MaterializeResult(asset_key=tables.TRADE_REJECTS.key, metadata=summarize(reject_stats))
