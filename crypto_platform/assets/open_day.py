"""How a tick derives an open day's bronze and 1-minute candles: extend the stored partition with what
is new (transforms/incremental.py), or derive it from scratch when that is not exact or the day is
done. Lake reads only; the callers commit through `LakeResource.commit_derived` as before.

Bronze of an open day grows by one delta per tick (`BronzeDerivation.append`: only the tick's new
trades and rejects are written, appended to the stored partition), and the probe for re-sent trades
reads only the identity and value columns of the stored trades whose ids can match (row groups pruned
by their trade-id statistics), so a tick's bronze work follows its new trades, not the day's size.
After MAX_DELTAS deltas the tick rewrites the partition whole once (reads stay a few files).

From scratch: no stored partition, a lineage of other code (`DERIVATION`) or of another batch list (a
re-fetch restarted the manifest), a merge that cannot be exact, and every day whose raw coverage
reaches its end: the day tail / settling fetches compact it once into a from-scratch derivation.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import dagster as dg
import polars as pl

from crypto_platform import tables
from crypto_platform.lineage import DERIVATION, Lineage, new_id
from crypto_platform.partitions import DayPartition
from crypto_platform.raw_manifest import RawManifest
from crypto_platform.resources.lake import PART_FILE, LakeReadError, LakeResource, WriteInfo
from crypto_platform.resources.lake.model import READ_ERRORS
from crypto_platform.schemas import BRONZE_TRADES, TRADE_REJECTS, empty
from crypto_platform.transforms.incremental import (
    BRONZE_VALUES,
    bronze_delta,
    id_probe,
    merge_bronze,
    probe_ids,
)
from crypto_platform.transforms.trades import CONFLICTING_DUPLICATE, IDENTITY, to_bronze

INCREMENTAL, FROM_SCRATCH, COMPACTED, UNCHANGED = "incremental", "from scratch", "compacted", "unchanged"
MAX_DELTAS = 120  # deltas on one open-day partition before a tick rewrites it whole (2 h of 1-min ticks)


@dataclass(frozen=True)
class BronzeDerivation:
    """Bronze + rejects of a partition (`append`: only the rows to append to the stored partition) and
    how they were derived (for the step's metadata)."""

    bronze: pl.DataFrame
    rejects: pl.DataFrame
    duplicates_dropped: int  # raw rows dropped as identical repeats by this derivation
    mode: str  # INCREMENTAL | FROM_SCRATCH | COMPACTED | UNCHANGED
    raw_rows_processed: int  # raw rows read and validated by this derivation
    rows_carried: int  # stored bronze + reject rows kept as they were
    base: str | None = None  # id of the stored bronze it extended
    changed_from: datetime | None = None
    append: bool = False  # bronze/rejects are a delta on the stored partition (UNCHANGED: nothing)

    def lineage(self, manifest: RawManifest) -> Lineage:
        """The lineage to commit it with: the manifest's version, coverage and batches."""
        cov = manifest.coverage
        return Lineage(
            manifest.version,
            cov.covered_from,
            cov.covered_to,
            batches=len(manifest.batches),
            digest=manifest.digest(),
            id=new_id(),
            base=self.base,
            changed_from=self.changed_from,
            derivation=DERIVATION,
        )


def bronze_from_scratch(raw: pl.LazyFrame, part: DayPartition, manifest: RawManifest) -> BronzeDerivation:
    """`to_bronze` over every committed batch (COMPACTED when the coverage reaches the day's end)."""
    result = to_bronze(raw, part.start, part.end)
    wm = manifest.watermark
    mode = COMPACTED if wm is not None and wm >= part.end else FROM_SCRATCH
    processed = result.bronze.height + result.rejects.height + result.duplicates_dropped
    return BronzeDerivation(result.bronze, result.rejects, result.duplicates_dropped, mode, processed, 0)


def extend_bronze(lake: LakeResource, part: DayPartition, manifest: RawManifest) -> BronzeDerivation | None:
    """The raw batches committed since an open day's stored bronze was derived, as a delta on it (or
    merged into it whole after MAX_DELTAS deltas), or None when it must be derived from scratch (see
    the module docstring)."""
    wm = manifest.watermark
    if wm is None:
        return None
    lineage = lake.read_lineage(tables.BRONZE_TRADES, part)
    if lineage is None or not lineage.current or lineage.batches is None or not lineage.id:
        return None
    if lake.read_lineage(tables.TRADE_REJECTS, part) != lineage or lineage.digest is None:
        return None
    new = manifest.batches_after(lineage.batches, lineage.digest)
    if new is None:
        return None
    carried = lake.partition_rows(tables.BRONZE_TRADES, part) + lake.partition_rows(
        tables.TRADE_REJECTS, part
    )
    settled = wm >= part.end
    # Nothing new: keep it (a re-run rewrites nothing). A settled day is compacted once: kept only when
    # stored from scratch over exactly these batches (base None), else derived from scratch now.
    if not new and not (settled and lineage.base is not None):
        nothing = (empty(BRONZE_TRADES), empty(TRADE_REJECTS))
        return BronzeDerivation(*nothing, 0, UNCHANGED, 0, carried, append=True)
    if settled:
        return None
    scan = lake.scan_batches(tables.RAW_TRADES, part, [b.name for b in new])
    assert scan is not None  # `new` is not empty
    result = to_bronze(scan, part.start, part.end)
    processed = result.bronze.height + result.rejects.height + result.duplicates_dropped
    inst = part.instrument
    if lake.delta_count(tables.BRONZE_TRADES, part) >= MAX_DELTAS:
        stored, seen = lake.read_with_lineage(tables.BRONZE_TRADES, part)
        stored_rejects = lake.read_partition(tables.TRADE_REJECTS, part)
        if stored is None or stored_rejects is None or seen != lineage:
            return None
        merged = merge_bronze(stored, stored_rejects, result, exchange=inst.exchange, symbol=inst.symbol)
        if merged is None:
            return None
        rows: tuple = (merged.bronze, merged.rejects, merged.repeats_dropped, merged.changed_from, False)
    else:
        hits, conflicts = _probe(lake, part, probe_ids(result))
        delta = bronze_delta(hits, conflicts, result, exchange=inst.exchange, symbol=inst.symbol)
        if delta is None:
            return None
        rows = (delta.bronze, delta.rejects, delta.repeats_dropped, delta.changed_from, True)
    bronze, rejects, repeats, changed, append = rows
    return BronzeDerivation(
        bronze, rejects, repeats, INCREMENTAL, processed, carried, lineage.id, changed, append=append
    )


def _probe(lake: LakeResource, part: DayPartition, ids: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The stored trades (IDENTITY + BRONZE_VALUES) and conflicting-duplicate rejects (IDENTITY) whose
    trade id is among `ids`: exact, reading only those columns of the row groups whose trade-id range
    (Parquet statistics) can hold one of them."""
    wanted = ids.get_column("trade_id").unique()
    if wanted.is_empty():
        return empty(BRONZE_TRADES).select(*IDENTITY, *BRONZE_VALUES), empty(TRADE_REJECTS).select(IDENTITY)
    where = id_probe(wanted)
    out = []
    for table, columns, extra in (
        (tables.BRONZE_TRADES, [*IDENTITY, *BRONZE_VALUES], pl.lit(True)),
        (tables.TRADE_REJECTS, list(IDENTITY), pl.col("reason") == CONFLICTING_DUPLICATE),
    ):
        found = lake.scan_partition(table, part)
        if found is None:
            raise LakeReadError(f"lake: {table} {part.key} vanished while a tick extended it")
        try:
            out.append(found[0].filter(where & extra).select(columns).collect())
        except READ_ERRORS as exc:
            raise LakeReadError(
                f"lake: cannot read {found[1].uri} ({table}, partition {part.key}): {exc}"
            ) from exc
    return out[0], out[1]


def bronze_since(lake: LakeResource, part: DayPartition, since: datetime) -> pl.DataFrame:
    """The stored bronze's trades at or after `since` (bronze is in time order: only the row groups
    that can hold them are read), for candles recomputed from that minute on."""
    key = f"{lake.part_key(tables.BRONZE_TRADES, part)}/{PART_FILE}"
    current = lake.store.current(key)
    if current is None:
        raise dg.Failure(f"bronze/trades {part} is not materialized yet; materialize it first")
    scan = pl.scan_parquet(current.uris, storage_options=lake.store.storage_options)
    try:
        return scan.filter(pl.col("ts") >= since).collect().sort(list(tables.BRONZE_TRADES.order))
    except READ_ERRORS as exc:
        raise LakeReadError(
            f"lake: cannot read {current.uri} (bronze/trades, partition {part.key}): {exc}"
        ) from exc


def stored_infos(lake: LakeResource, part: DayPartition, frames: dict) -> list[WriteInfo]:
    """WriteInfo of partitions kept as stored (`frames`: table -> the stored frame or its row count):
    an unchanged tick writes nothing (0 bytes written)."""
    return [WriteInfo(path=lake.store.where(f"{lake.part_key(t, part)}/{PART_FILE}"),
                      rows=df if isinstance(df, int) else df.height, bytes=0)
            for t, df in frames.items()]  # fmt: skip
