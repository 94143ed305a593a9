"""Reconciliation of bronze trades with the exchange's own 1-minute candles: an independent
completeness check (the pager's proof trusts the exchange's paging; the exchange's candles are built
from all of its trades). Partition-aware like the other checks (see `checks/__init__.py`).

For each `ccxt` partition of the run, over the whole minutes of its raw coverage, the base volume of
bronze per minute must equal the exchange's candle (`fetch_ohlcv` through ccxt, same client and
`api_url` as the trades). A `replay` instrument is reconciled with the exchange's candles recorded
alongside its trades: its `klines` option (a file or glob of 1-minute OHLCV in any format the OHLCV
import reads, base volume), or skipped when it has none. A `synthetic` instrument is reconciled with
the simulator's own per-minute volume (summed from the simulated trades, not through bronze). It
fails naming the minutes that disagree;
the repair is a re-fetch of the partition (`raw/trades` config `refetch: true`, then bronze), after
which it passes.
"""

import glob
from collections.abc import Callable
from datetime import datetime, timedelta

import dagster as dg
import polars as pl

from crypto_platform import tables
from crypto_platform.metadata import md_table
from crypto_platform.partitions import last_materialized_partitions, run_partitions
from crypto_platform.quality.reconciliation import reconcile_minutes
from crypto_platform.resources.lake import LakeResource
from crypto_platform.resources.sources import TradeSourcesResource
from crypto_platform.settings import PROJECT_DIR, Instrument
from crypto_platform.sources.base import SourceError
from crypto_platform.sources.factory import replay_path
from crypto_platform.sources.synthetic import SyntheticSource
from crypto_platform.timeutil import floor_minute
from crypto_platform.transforms.ohlcv_import import read_ohlcv

RECONCILIATION_CHECK = "trades_reconciliation"
REPAIR = "re-fetch: materialize raw/trades with config {refetch: true} for the partition, then bronze/trades"


@dg.asset_check(
    asset=tables.BRONZE_TRADES.key,
    name=RECONCILIATION_CHECK,
    blocking=False,
    description=(
        "Per minute, bronze base volume equals the exchange's own 1-minute candle (ccxt fetch_ohlcv; for "
        "replayed instruments the recorded `klines` file) over the partition's covered whole minutes. "
        "Fails naming the minutes that "
        f"disagree. Repair: {REPAIR}."
    ),
)
def trades_reconciliation(
    context: dg.AssetCheckExecutionContext, lake: LakeResource, trade_sources: TradeSourcesResource
) -> dg.AssetCheckResult:
    """Compare every ccxt partition of the run with the exchange's 1-minute candles."""
    parts = run_partitions(context)
    if parts is None:
        parts = last_materialized_partitions(context, tables.BRONZE_TRADES.key)
    rows, bad, errors = [], [], []
    for part in parts:
        candles_of = _exchange_candles(part.instrument, trade_sources)
        coverage = lake.read_manifest(tables.RAW_TRADES, part).coverage
        bronze = lake.read_partition(tables.BRONZE_TRADES, part)
        if candles_of is None or coverage.is_empty or bronze is None:
            continue  # no exchange candles to compare with (synthetic, replay without klines), or no data
        assert coverage.covered_from is not None and coverage.covered_to is not None
        lo, hi = floor_minute(coverage.covered_from), floor_minute(coverage.covered_to)  # whole minutes only
        lo += timedelta(minutes=1) if coverage.covered_from > lo else timedelta(0)
        try:
            candles = candles_of(lo, hi)
        except (SourceError, ValueError) as exc:
            errors.append(f"{part}: {exc}")
            continue
        result = reconcile_minutes(bronze, candles, lo, hi)
        rows.append(
            {"partition": part.key, "minutes": result.minutes, "mismatched": result.mismatches.height}
        )
        bad += [{"partition": part.key, **r} for r in result.mismatches.iter_rows(named=True)]
    for line in errors:
        context.log.error(line)
    lines = [
        f"{r['partition']} {r['minute']:%H:%M}: bronze {r['bronze_trades']} trades, volume "
        f"{r['bronze_volume']:.8g} vs the exchange's candle {r['exchange_volume']:.8g}"
        for r in bad[:20]
    ]
    if bad:
        description = f"{len(bad)} minute(s) disagree with the exchange's 1-minute candles:\n" + "\n".join(
            lines
        )
        description += f"\nRepair: {REPAIR}."
    elif errors:
        description = "could not fetch the exchange's candles:\n" + "\n".join(errors[:10])
    else:
        description = (
            f"{sum(r['minutes'] for r in rows)} minute(s) of {len(rows)} partition(s) agree with the exchange"
        )
    return dg.AssetCheckResult(
        passed=not bad and not errors,
        severity=dg.AssetCheckSeverity.ERROR,
        description=description,
        metadata={
            "partitions": len(rows),
            "minutes_compared": sum(r["minutes"] for r in rows),
            "mismatched_minutes": len(bad),
            "mismatches": dg.MetadataValue.md(md_table(bad)),
            "errors": len(errors),
        },
    )


def _exchange_candles(
    inst: Instrument, trade_sources: TradeSourcesResource
) -> Callable[[datetime, datetime], pl.DataFrame] | None:
    """Where the exchange's own 1-minute candles of an instrument come from: ccxt `fetch_ohlcv` live, the
    simulator's own per-minute volume for a synthetic one, the recorded `klines` file(s) for a replayed
    instrument, else nowhere (None)."""
    if inst.source == "ccxt":
        from crypto_platform.sources.ccxt_source import CcxtSource  # ccxt: imported when first needed

        source = trade_sources.source_for(inst)
        if isinstance(source, CcxtSource):
            return lambda lo, hi: source.candles_1m(inst, lo, hi)
        return None
    if inst.source == "synthetic":  # the simulated exchange's own candles, straight from the simulator
        sim = trade_sources.source_for(inst)
        if isinstance(sim, SyntheticSource):
            return lambda lo, hi: sim.candles_1m(inst, lo, hi)
        return None
    if inst.source == "replay" and inst.options.get("klines"):
        pattern = replay_path(inst, PROJECT_DIR, "klines")
        return lambda lo, hi: recorded_klines(pattern, inst, lo, hi)
    return None


def recorded_klines(pattern: str, inst: Instrument, start: datetime, end: datetime) -> pl.DataFrame:
    """The recorded 1-minute candles (`ts`, base `volume`) opening in [start, end) from every file of
    the glob; a glob matching nothing is an error naming it."""
    files = sorted(glob.glob(pattern))
    if not files:
        raise ValueError(f"klines {pattern!r} of {inst.key}: no file matches")
    frames = [
        read_ohlcv(
            f, exchange=inst.exchange, symbol=inst.symbol, interval=timedelta(minutes=1), fill_gaps=False
        )
        for f in files
    ]
    df = pl.concat([f.select("ts", "volume") for f in frames], how="vertical")
    return df.filter((pl.col("ts") >= start) & (pl.col("ts") < end)).unique("ts").sort("ts")


RECONCILIATION_CHECKS: list[dg.AssetChecksDefinition] = [trades_reconciliation]
