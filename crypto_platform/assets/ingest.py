"""raw and bronze layers: fetch trades into immutable raw batches, then type/validate/de-duplicate."""


from datetime import UTC, datetime

import dagster as dg
import polars as pl

from crypto_platform.assets._meta import summarize
from crypto_platform.assets.coverage import coverage_of
from crypto_platform.partitions import partitions_of, single_run, trade_partitions
from crypto_platform.resources.lake import LakeResource
from crypto_platform.resources.sources import TradeSourcesResource
from crypto_platform.schemas import RAW_TRADES, empty
from crypto_platform.transforms.trades import to_bronze

RAW = dg.AssetKey(["raw", "trades"])
BRONZE = dg.AssetKey(["bronze", "trades"])
REJECTS = dg.AssetKey(["bronze", "trade_rejects"])


def _ms(ts: datetime) -> int:
    return int(ts.timestamp() * 1000)


@dg.asset(
    key=RAW,
    partitions_def=trade_partitions,
    backfill_policy=single_run,
    group_name="raw",
    kinds={"parquet", "ccxt"},
    description=(
        "Exchange trades exactly as received (ccxt unified fields + the exchange's own payload), "
        "as immutable batch files per (instrument, UTC day). Each run fetches only what lies after "
        "the partition's watermark (the end of its committed coverage), so re-runs are idempotent "
        "and the still-open day is topped up incrementally."
    ),
)
def raw_trades(
    context: dg.AssetExecutionContext, lake: LakeResource, trade_sources: TradeSourcesResource
) -> dg.MaterializeResult:
    stats = []
    for part in partitions_of(context):
        manifest = lake.read_manifest("raw", "trades", part) or {"batches": []}
        cov = coverage_of(manifest)
        start = max(part.start, cov.covered_to) if cov.covered_to else part.start
        now = datetime.now(UTC)
        row = {"partition": part.key, "source": part.instrument.source, "rows": 0, "bytes": 0}
        if start >= part.end or start >= now:
            row["status"] = "complete" if start >= part.end else "not started"
        else:
            batch = trade_sources.source_for(part.instrument).fetch(part.instrument, start, part.end)
            if batch.covered_to <= batch.covered_from and batch.trades.is_empty():
                row["status"] = "nothing new"
            else:
                name = f"batch-{_ms(batch.covered_from)}-{_ms(batch.covered_to)}"
                info = lake.write_batch(batch.trades, "raw", "trades", part, name)
                manifest["batches"].append(
                    {
                        "name": name,
                        "covered_from": batch.covered_from.isoformat(),
                        "covered_to": batch.covered_to.isoformat(),
                        "rows": info.rows,
                        "written_at": now.isoformat(),
                    }
                )
                lake.write_manifest(manifest, "raw", "trades", part)
                row.update(status="fetched", rows=info.rows, bytes=info.bytes)
                row.update({"from": batch.covered_from, "to": batch.covered_to})
        context.log.info(f"raw {part}: {row['status']}, {row['rows']} new trades")
        stats.append(row)
    return dg.MaterializeResult(metadata=summarize(stats))


def read_raw(lake: LakeResource, part) -> pl.DataFrame:
    """All committed raw batches of a partition (zero rows if none)."""
    manifest = lake.read_manifest("raw", "trades", part)
    names = [b["name"] for b in (manifest or {}).get("batches", [])]
    frames = lake.read_batches("raw", "trades", part, names)
    return pl.concat(frames, how="vertical") if frames else empty(RAW_TRADES)


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
def bronze_trades(context: dg.AssetExecutionContext, lake: LakeResource):
    stats, reject_stats = [], []
    for part in partitions_of(context):
        raw = read_raw(lake, part)
        result = to_bronze(raw, part.start, part.end)
        info = lake.write_partition(result.bronze, "bronze", "trades", part)
        rinfo = lake.write_partition(result.rejects, "bronze", "trade_rejects", part)
        ts = result.bronze.get_column("ts")
        stats.append(
            {
                "partition": part.key,
                "raw_rows": raw.height,
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
            {"partition": part.key, "rows": rinfo.rows, "bytes": rinfo.bytes,
             "reasons": "; ".join(f"{r}: {n}" for r, n in reasons)}
        )
        context.log.info(f"bronze {part}: {info.rows} trades, {rinfo.rows} rejects")
    yield dg.MaterializeResult(
        asset_key=BRONZE, metadata=summarize(stats, sums=("rows", "rejects", "duplicates_dropped", "bytes"))
    )
    yield dg.MaterializeResult(asset_key=REJECTS, metadata=summarize(reject_stats))
