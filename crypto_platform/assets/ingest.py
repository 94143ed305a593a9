"""raw and bronze layers: fetch trades into immutable raw batches, then type/validate/de-duplicate."""

from datetime import datetime, timedelta
from typing import Any

import dagster as dg
import polars as pl
from pydantic import Field

from crypto_platform.assets._meta import summarize
from crypto_platform.assets.coverage import coverage_of
from crypto_platform.partitions import DayPartition, partitions_of, single_run, trade_partitions
from crypto_platform.platform_settings import DEFAULT_OVERLAP_SECONDS
from crypto_platform.resources.lake import LakeResource
from crypto_platform.resources.sources import TradeSourcesResource
from crypto_platform.resources.warehouse import View, WarehouseResource
from crypto_platform.schemas import RAW_TRADES, empty
from crypto_platform.timeutil import floor_minute
from crypto_platform.transforms.trades import to_bronze

RAW = dg.AssetKey(["raw", "trades"])
BRONZE = dg.AssetKey(["bronze", "trades"])
REJECTS = dg.AssetKey(["bronze", "trade_rejects"])


def _ms(ts: datetime) -> int:
    return int(ts.timestamp() * 1000)


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


def late_trades(
    lake: LakeResource, part: DayPartition, manifest: dict[str, Any], fetched: pl.DataFrame, start: datetime
) -> pl.DataFrame:
    """Fetched trades timestamped before the previous watermark that no committed batch holds: trades
    the exchange published after an earlier fetch had passed their time (caught by the overlap)."""
    wm = coverage_of(manifest).covered_to
    older = fetched if wm is None else fetched.filter(pl.col("timestamp_ms") < _ms(wm))
    if wm is None or older.is_empty():
        return older.clear()
    # only the batches whose coverage reaches into the re-read window can hold those trades
    names = [b["name"] for b in manifest["batches"] if datetime.fromisoformat(b["covered_to"]) > start]
    scan = lake.scan_batches("raw", "trades", part, names)
    if scan is None:
        return older
    known = scan.filter(pl.col("timestamp_ms") >= _ms(start)).select("trade_id").collect()["trade_id"]
    return older.filter(~pl.col("trade_id").is_in(known.implode()))


def is_settled(manifest: dict[str, Any] | None, part: DayPartition, overlap: timedelta) -> bool:
    """The partition's coverage reaches its end and was (re-)read at least `overlap` after that end."""
    cov = coverage_of(manifest)
    if cov.covered_to is None or cov.covered_to < part.end:
        return False
    last = (manifest or {}).get("batches", [])[-1].get("written_at")
    return last is not None and datetime.fromisoformat(last) >= part.end + overlap


@dg.asset(
    key=RAW,
    partitions_def=trade_partitions,
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
        manifest = lake.read_manifest("raw", "trades", part) or {"batches": []}
        cov = coverage_of(manifest)
        horizon = min(part.end, floor_minute(now) if config.whole_minutes else now)
        wm = cov.covered_to
        settling = wm is not None and wm >= part.end and now >= part.end + overlap
        settling = settling and not is_settled(manifest, part, overlap)
        if wm is None:
            start = part.start
        elif wm < horizon:
            start = max(part.start, wm - overlap)
        elif settling:  # one last re-read of the finished day's tail, `overlap` after its end
            start = max(part.start, part.end - overlap)
        else:
            start = None
        row = {"partition": part.key, "source": part.instrument.source, "rows": 0, "bytes": 0}
        row["late_trades"] = 0
        if start is None or start >= horizon:
            row["status"] = "complete" if horizon >= part.end else "up to date" if wm else "not started"
        else:
            batch = trade_sources.source_for(part.instrument).fetch(part.instrument, start, horizon)
            late = late_trades(lake, part, manifest, batch.trades, start)
            if (batch.covered_to <= batch.covered_from and batch.trades.is_empty()) or (
                wm is not None and batch.covered_to <= wm and not settling and late.is_empty()
            ):
                row["status"] = "nothing new"
            else:
                name = f"batch-{_ms(batch.covered_from)}-{_ms(batch.covered_to)}"
                if any(b["name"] == name for b in manifest["batches"]):
                    name = f"{name}-{_ms(now)}"
                info = lake.write_batch(batch.trades, "raw", "trades", part, name)
                covered_to = batch.covered_to if wm is None else max(batch.covered_to, wm)  # never shrinks
                manifest["batches"].append(
                    {
                        "name": name,
                        "covered_from": batch.covered_from.isoformat(),
                        "covered_to": covered_to.isoformat(),
                        "rows": info.rows,
                        "written_at": now.isoformat(),
                    }
                )
                lake.write_manifest(manifest, "raw", "trades", part)
                row.update(status="fetched", rows=info.rows, bytes=info.bytes, late_trades=late.height)
                row.update({"from": batch.covered_from, "to": covered_to})
                if late.height:
                    depth = (_ms(wm) - int(late["timestamp_ms"].min())) / 1000
                    row["late_depth_seconds"] = depth
                    say = context.log.warning if depth > overlap.total_seconds() / 2 else context.log.info
                    say(
                        f"raw {part}: {late.height} late trade(s) caught by the overlap re-read, up to "
                        f"{depth:.1f} s before the watermark (overlap {overlap.total_seconds():g} s; "
                        "trades later than the overlap are not fetched again: raise overlap_seconds if "
                        "this nears it)"
                    )
        context.log.info(f"raw {part}: {row['status']}, {row['rows']} new trades")
        stats.append(row)
    meta = summarize(stats, sums=("rows", "bytes", "late_trades"))
    depths = [r["late_depth_seconds"] for r in stats if "late_depth_seconds" in r]
    meta["late_depth_seconds"] = dg.MetadataValue.float(float(max(depths, default=0.0)))
    meta["overlap_seconds"] = dg.MetadataValue.int(config.overlap_seconds)
    meta["fetched_at"] = now.isoformat()
    return dg.MaterializeResult(metadata=meta)


def scan_raw(lake: LakeResource, part) -> pl.LazyFrame:
    """All committed raw batches of a partition, scanned lazily (the payload is read only for rejects)."""
    manifest = lake.read_manifest("raw", "trades", part)
    names = [b["name"] for b in (manifest or {}).get("batches", [])]
    scan = lake.scan_batches("raw", "trades", part, names)
    return scan if scan is not None else empty(RAW_TRADES).lazy()


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            BRONZE,
            deps=[RAW],
            description="Typed, validated, de-duplicated trades: one row per (exchange, symbol, trade_id).",
            kinds={"parquet", "polars"},
        ),
        dg.AssetSpec(
            REJECTS,
            deps=[RAW],
            description="Raw rows that failed validation, with the reason; never silently dropped.",
            kinds={"parquet", "polars"},
        ),
    ],
    partitions_def=trade_partitions,
    backfill_policy=single_run,
    group_name="bronze",
    can_subset=False,
)
def bronze_trades(context: dg.AssetExecutionContext, lake: LakeResource, warehouse: WarehouseResource):
    """Validate and de-duplicate every raw partition of the run into bronze trades + rejects."""
    stats, reject_stats = [], []
    for part in partitions_of(context):
        result = to_bronze(scan_raw(lake, part), part.start, part.end)
        raw_rows = result.bronze.height + result.rejects.height + result.duplicates_dropped
        info = lake.write_partition(result.bronze, "bronze", "trades", part)
        rinfo = lake.write_partition(result.rejects, "bronze", "trade_rejects", part)
        ts = result.bronze.get_column("ts")
        stats.append(
            {
                "partition": part.key,
                "raw_rows": raw_rows,
                "rows": info.rows,
                "rejects": rinfo.rows,
                "duplicates_dropped": result.duplicates_dropped,
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
    views = warehouse.refresh_views(lake, [View("bronze", "trades"), View("bronze", "trade_rejects")])
    yield dg.MaterializeResult(
        asset_key=BRONZE,
        metadata={
            **summarize(stats, sums=("rows", "rejects", "duplicates_dropped", "bytes")),
            **views.metadata,
        },
    )
    yield dg.MaterializeResult(asset_key=REJECTS, metadata=summarize(reject_stats))
