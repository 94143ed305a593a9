"""How a tick derives an open day's bronze and 1-minute candles: extend the stored partition with what
is new (transforms/incremental.py), or derive it from scratch when that is not exact or the day is
done. Lake reads only; the callers commit through `LakeResource.commit_derived` as before.

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
from crypto_platform.transforms.incremental import merge_bronze
from crypto_platform.transforms.trades import to_bronze

INCREMENTAL, FROM_SCRATCH, COMPACTED, UNCHANGED = "incremental", "from scratch", "compacted", "unchanged"


@dataclass(frozen=True)
class BronzeDerivation:
    """Bronze + rejects of a partition and how they were derived (for the step's metadata)."""

    bronze: pl.DataFrame
    rejects: pl.DataFrame
    duplicates_dropped: int  # raw rows dropped as identical repeats by this derivation
    mode: str  # INCREMENTAL | FROM_SCRATCH | COMPACTED | UNCHANGED
    raw_rows_processed: int  # raw rows read and validated by this derivation
    rows_carried: int  # stored bronze + reject rows kept as they were
    base: str | None = None  # id of the stored bronze it extended
    changed_from: datetime | None = None

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
    """The stored bronze of an open day plus the raw batches committed since it was derived, or None
    when it must be derived from scratch (see the module docstring)."""
    wm = manifest.watermark
    if wm is None:
        return None
    stored, lineage = lake.read_with_lineage(tables.BRONZE_TRADES, part)
    if stored is None or lineage is None or not lineage.current or lineage.batches is None or not lineage.id:
        return None
    stored_rejects, rejects_lineage = lake.read_with_lineage(tables.TRADE_REJECTS, part)
    if stored_rejects is None or rejects_lineage != lineage or lineage.digest is None:
        return None
    new = manifest.batches_after(lineage.batches, lineage.digest)
    if new is None:
        return None
    carried = stored.height + stored_rejects.height
    settled = wm >= part.end
    # Nothing new: keep it (a re-run rewrites nothing). A settled day is compacted once: kept only when
    # stored from scratch over exactly these batches (base None), else derived from scratch now.
    if not new and not (settled and lineage.base is not None):
        return BronzeDerivation(stored, stored_rejects, 0, UNCHANGED, 0, carried)
    if settled:
        return None
    scan = lake.scan_batches(tables.RAW_TRADES, part, [b.name for b in new])
    assert scan is not None  # `new` is not empty
    result = to_bronze(scan, part.start, part.end)
    inst = part.instrument
    merged = merge_bronze(stored, stored_rejects, result, exchange=inst.exchange, symbol=inst.symbol)
    if merged is None:
        return None
    processed = result.bronze.height + result.rejects.height + result.duplicates_dropped
    return BronzeDerivation(
        merged.bronze,
        merged.rejects,
        merged.repeats_dropped,
        INCREMENTAL,
        processed,
        carried,
        base=lineage.id,
        changed_from=merged.changed_from,
    )


def bronze_since(lake: LakeResource, part: DayPartition, since: datetime) -> pl.DataFrame:
    """The stored bronze's trades at or after `since` (bronze is in time order: only the row groups
    that can hold them are read), for candles recomputed from that minute on."""
    key = f"{lake.part_key(tables.BRONZE_TRADES, part)}/{PART_FILE}"
    current = lake.store.current(key)
    if current is None:
        raise dg.Failure(f"bronze/trades {part} is not materialized yet; materialize it first")
    scan = pl.scan_parquet(current.uri, storage_options=lake.store.storage_options)
    try:
        return scan.filter(pl.col("ts") >= since).collect()
    except READ_ERRORS as exc:
        raise LakeReadError(
            f"lake: cannot read {current.uri} (bronze/trades, partition {part.key}): {exc}"
        ) from exc


def stored_infos(lake: LakeResource, part: DayPartition, frames: dict) -> list[WriteInfo]:
    """WriteInfo of partitions kept as stored: an unchanged tick writes nothing (0 bytes written)."""
    return [WriteInfo(path=lake.store.where(f"{lake.part_key(t, part)}/{PART_FILE}"), rows=df.height, bytes=0)
            for t, df in frames.items()]  # fmt: skip
