"""silver layer: 1-minute OHLCV candles per instrument and day, and 5-minute / 1-hour roll-ups."""

from datetime import timedelta

import dagster as dg
import polars as pl

from crypto_platform import tables
from crypto_platform.assets.ingest import MAX_COMMIT_TRIES
from crypto_platform.assets.open_day import bronze_since, stored_infos
from crypto_platform.lineage import DERIVATION, new_id
from crypto_platform.metadata import summarize
from crypto_platform.partitions import DayPartition, partitions_of, single_run
from crypto_platform.resources.lake import LakeResource, Lineage, WriteInfo
from crypto_platform.resources.warehouse import WarehouseResource
from crypto_platform.timeutil import floor_minute
from crypto_platform.transforms.candles import candles_1m, rollup
from crypto_platform.transforms.incremental import (
    BRONZE_INPUT,
    candles_restart,
    candles_unchanged,
    leading_close_changed,
    splice_candles,
)


def _prev_close(lake: LakeResource, part: DayPartition) -> float | None:
    """Last close of the previous day's candles, carried into this day's leading empty minutes."""
    prev = lake.read_partition(tables.CANDLES_1M, DayPartition(part.instrument, part.day - timedelta(1)))
    if prev is None or prev.is_empty():
        return None
    closes = prev.get_column("close").drop_nulls()
    return float(closes[-1]) if len(closes) else None


def _imported(lake: LakeResource, part: DayPartition) -> bool:
    """Whether the stored 1m partition holds imported OHLCV history (never overwritten by empty trades)."""
    df = lake.read_partition(tables.CANDLES_1M, part)
    return df is not None and df.height > 0 and df["origin"].str.starts_with("import:").any()


def _candle_stats(part: DayPartition, df: pl.DataFrame, info) -> dict:
    empty_bars = int(df.get_column("is_empty").sum()) if df.height else 0
    return {
        "partition": part.key,
        "rows": info.rows,
        "empty_bars": empty_bars,
        "trades": int(df.get_column("trade_count").sum()) if df.height else 0,
        "bytes": info.bytes,
        "from": df.get_column("ts").min(),
        "to": df.get_column("ts").max(),
    }


def _bar_work(df: pl.DataFrame, kept: int) -> dict:
    """How many bars a tick recomputed and how many it kept from the stored partition (for the UI)."""
    return {"bars_recomputed": df.height - kept, "bars_carried": kept}


@dg.asset(
    key=tables.CANDLES_1M.key,
    deps=[tables.BRONZE_TRADES.key],
    partitions_def=tables.CANDLES_1M.partitions_def,
    backfill_policy=single_run,
    group_name="silver",
    kinds={"parquet", "polars"},
    description=(
        "1-minute OHLCV candles (open, high, low, close, base and quote volume, VWAP, trade count, "
        "taker buy/sell volume). Every minute of the covered window is present; empty minutes are "
        "flagged (is_empty), with volume 0 and the close carried forward."
    ),
)
def silver_candles_1m(
    context: dg.AssetExecutionContext, lake: LakeResource, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    stats = []
    for part in partitions_of(context):
        if (done := derive_candles_1m(lake, part)) is None:
            context.log.warning(f"candles_1m {part}: no trade coverage; keeping the imported OHLCV history")
            stats.append({"partition": part.key, "rows": 0, "note": "kept imported history"})
            continue
        df, info, kept = done
        stats.append({**_candle_stats(part, df, info), **_bar_work(df, kept)})
        context.log.info(f"candles_1m {part}: {df.height} bars")
    views = warehouse.refresh_views(lake, [tables.CANDLES_1M])
    meta = summarize(stats, sums=("rows", "empty_bars", "trades", "bars_recomputed", "bars_carried", "bytes"))
    return dg.MaterializeResult(metadata={**meta, **views.metadata})


def derive_candles_1m(lake: LakeResource, part: DayPartition) -> tuple[pl.DataFrame, WriteInfo, int] | None:
    """1-minute candles of one partition over the coverage its bronze was built from, committed only
    while that bronze is still the stored one (None: no trades, imported history kept). Stored candles
    of the bronze this one extended keep their bars before the first minute the new trades touch
    (`transforms.incremental`); returns the candles, the write and how many bars were kept."""
    for _ in range(MAX_COMMIT_TRIES):
        lineage = lake.read_lineage(tables.BRONZE_TRADES, part)  # the footer; the trades only as needed
        cov = lake.read_manifest(tables.RAW_TRADES, part).coverage if lineage is None else lineage.coverage
        if cov.is_empty and _imported(lake, part):
            return None
        start = max(cov.covered_from, part.start) if cov.covered_from else part.start
        end = min(cov.covered_to, part.end) if cov.covered_to else part.start
        prev, inst = _prev_close(lake, part), part.instrument
        stored, stored_lineage = lake.read_with_lineage(tables.CANDLES_1M, part)
        same = stored is not None and not leading_close_changed(stored, prev)
        if same and candles_unchanged(stored_lineage, lineage, start, end):  # a re-run: rewrite nothing
            return stored, stored_infos(lake, part, {tables.CANDLES_1M: stored})[0], stored.height
        restart = candles_restart(stored_lineage, lineage, start, end)
        kept, base = 0, None  # base: id of the stored candles extended
        ex, sym = inst.exchange, inst.symbol
        if stored is not None and restart is not None and not leading_close_changed(stored, prev):
            tail = bronze_since(lake, part, max(floor_minute(restart), floor_minute(start)))
            df, kept = splice_candles(
                stored, tail, start, end, restart, prev_close=prev, exchange=ex, symbol=sym
            )
            base = stored_lineage.id if stored_lineage else None
        else:
            restart = None
            bronze, seen = lake.read_with_lineage(tables.BRONZE_TRADES, part)
            if bronze is None:
                raise dg.Failure(f"bronze/trades {part} is not materialized yet; materialize it first")
            if seen != lineage:
                continue  # replaced since its footer was read: start again
            df = candles_1m(bronze, start, end, prev_close=prev, exchange=ex, symbol=sym)
        version = lineage.input_version if lineage else -1
        infos = lake.commit_derived(
            {tables.CANDLES_1M: df},
            part,
            Lineage(
                version,
                start,
                end,
                id=new_id(),
                base=base,
                changed_from=restart,
                inputs=((BRONZE_INPUT, lineage.id),) if lineage and lineage.id else (),
                derivation=DERIVATION,
            ),
            inputs_current=lambda seen=lineage: lake.read_lineage(tables.BRONZE_TRADES, part) == seen,
        )
        if infos is not None:
            return df, infos[0], kept
    raise dg.Failure(f"candles_1m {part}: bronze/trades changed during each of {MAX_COMMIT_TRIES} attempts")


def _rollup_asset(width: str) -> dg.AssetsDefinition:
    table = tables.CANDLES[width]

    @dg.asset(
        key=table.key,
        deps=[tables.CANDLES_1M.key],
        partitions_def=table.partitions_def,
        backfill_policy=single_run,
        group_name="silver",
        kinds={"parquet", "polars"},
        description=f"{width} OHLCV bars rolled up from the 1-minute candles (UTC-aligned, by open time).",
    )
    def _asset(
        context: dg.AssetExecutionContext, lake: LakeResource, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:
        stats = []
        for part in partitions_of(context):
            one_min = lake.read_partition(tables.CANDLES_1M, part)
            if one_min is None:
                raise dg.Failure(f"{tables.CANDLES_1M} {part} is not materialized yet")
            df = rollup(one_min, width)
            info = lake.write_partition(df, table, part)  # derived from candles_1m read just before
            stats.append(_candle_stats(part, df, info))
        views = warehouse.refresh_views(lake, [table])
        meta = summarize(stats, sums=("rows", "empty_bars", "trades", "bytes"))
        return dg.MaterializeResult(metadata={**meta, **views.metadata})

    _asset.__name__ = f"silver_{table.name}"
    return _asset


silver_candles_5m = _rollup_asset("5m")
silver_candles_1h = _rollup_asset("1h")
