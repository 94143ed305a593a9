"""How the bronze suite check validates one partition: only what is new when a stored proof shows the
rest passed (quality/contract_delta.py), else the whole partition as before. Lake reads and the
proof's write only; no Dagster here.

The proof is a small JSON document beside the partition (`part.contract.json`), replaced atomically
by the store after each validation (passed or failed), holding the stamps (`stored_files`) of exactly
the files validated. It is recorded only when the partition's files were the same before and after
the validation read them, so it never vouches for files it did not read. An incremental validation
reads the new delta files whole and, of the proven files, only the trade-id columns of the row groups
that can hold one of the new ids.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path, PurePosixPath

import polars as pl

from crypto_platform import tables
from crypto_platform.partitions import DayPartition
from crypto_platform.quality.contract_delta import (
    SEAM_COLUMNS,
    ContractProof,
    check_bronze_delta,
    full_validation,
    proof_of,
    proven_prefix,
)
from crypto_platform.quality.suite_result import SuiteResult
from crypto_platform.resources.lake import PART_FILE, LakeReadError, LakeResource
from crypto_platform.resources.lake.model import READ_ERRORS
from crypto_platform.schemas import BRONZE_TRADES
from crypto_platform.transforms.incremental import id_probe

PROOF_FILE = "part.contract.json"
TABLE = tables.BRONZE_TRADES
Validate = Callable[[pl.DataFrame, datetime, datetime], SuiteResult]


@dataclass(frozen=True)
class StoredFiles:
    """The files of a partition's committed version (base first) and their stamps."""

    uris: tuple[str, ...]
    stamps: tuple[str, ...]


def validate_bronze_cell(
    lake: LakeResource, part: DayPartition, validate: Validate, *, incremental: bool
) -> SuiteResult | None:
    """The suite's verdict on a bronze partition (None: not materialized), incrementally when allowed
    and proven, with its proof recorded; parameters say which validation ran and on how many rows."""
    files = stored_files(lake, part)
    if files is None:
        return None
    why = "incremental validation is off (engine or config)"
    if incremental:
        proof = read_proof(lake, part)
        n, why = proven_prefix(proof, files.stamps, part.start, part.end)
        if n and proof is not None:
            result = _validate_delta(lake, part, files, n, proof.rows)
            if result is not None and stored_files(lake, part) == files:
                return _record(lake, part, files, result, stored=proof)
            why = (
                "new files off the contract's schema" if result is None else "files changed while validating"
            )
            files = stored_files(lake, part)
    df = lake.read_partition(TABLE, part)
    if df is None or files is None:
        return None
    result = full_validation(validate(df, part.start, part.end), why)
    return _record(lake, part, files, result) if stored_files(lake, part) == files else result


def stored_files(lake: LakeResource, part: DayPartition) -> StoredFiles | None:
    """The partition's current files and stamps (one listing of its folder); None if never written.
    A delta (never rewritten, a unique name) and an S3 version object: name, size, modification time.
    A local base: its size and a digest of its Parquet footer (row-group statistics and offsets, the
    write's lineage id), since the same bytes go by two names (`part.parquet`, then the hard link a
    delta list names) and a link is touched when it is made."""
    current = lake.store.current(f"{lake.part_key(TABLE, part)}/{PART_FILE}")
    if current is None:
        return None
    listing = {PurePosixPath(e.key).name: e for e in lake.store.list_folder(lake.part_key(TABLE, part))}
    stamps = []
    for i, uri in enumerate(current.uris):
        name = PurePosixPath(uri).name
        entry = listing.get(name)
        if entry is None:
            stamps.append(f"{name}:missing")
        elif i == 0 and lake.is_local:
            stamps.append(f"base:{entry.size}:{_footer_digest(Path(uri))}")
        else:
            stamps.append(f"{name}:{entry.size}:{entry.mtime!r}")
    return StoredFiles(tuple(current.uris), tuple(stamps))


def _footer_digest(path: Path) -> str:
    """SHA-256 of a Parquet file's footer (its last 8 bytes give the footer's length); 'unreadable'
    for a file too short or damaged to have one (never equal to a recorded digest)."""
    try:
        with path.open("rb") as fh:
            fh.seek(-8, os.SEEK_END)
            tail = fh.read(8)
            size = int.from_bytes(tail[:4], "little")
            if tail[4:] != b"PAR1":
                return "unreadable"
            fh.seek(-8 - size, os.SEEK_END)
            return hashlib.sha256(fh.read(size)).hexdigest()[:32]
    except OSError:
        return "unreadable"


def proof_key(lake: LakeResource, part: DayPartition) -> str:
    return f"{lake.part_key(TABLE, part)}/{PROOF_FILE}"


def read_proof(lake: LakeResource, part: DayPartition) -> ContractProof | None:
    """The partition's recorded proof (None: none, or unreadable)."""
    try:
        doc, _ = lake.store.read_json(proof_key(lake, part))
    except ValueError:  # a damaged document proves nothing
        return None
    return ContractProof.from_json(doc)


def _validate_delta(
    lake: LakeResource, part: DayPartition, files: StoredFiles, n: int, proven_rows: int
) -> SuiteResult | None:
    """The verdict from the files after the first `n` (proven) ones; None: validate in full."""
    opts = lake.store.storage_options
    proven, new_files = list(files.uris[:n]), list(files.uris[n:])
    try:
        frames = [pl.read_parquet(u, storage_options=opts) for u in new_files]
        new = pl.concat(frames, how="vertical") if frames else pl.DataFrame(schema=BRONZE_TRADES)
        if new.schema != pl.scan_parquet(proven[0], storage_options=opts).collect_schema():
            return None
        if new.schema != pl.Schema(BRONZE_TRADES):
            return None
        ids = new.get_column("trade_id").drop_nulls().unique()
        seam = pl.DataFrame(schema={c: BRONZE_TRADES[c] for c in SEAM_COLUMNS})
        if not ids.is_empty():
            scan = pl.scan_parquet(proven, storage_options=opts)
            seam = scan.filter(id_probe(ids)).select(SEAM_COLUMNS).collect()
    except (pl.exceptions.SchemaError, pl.exceptions.ShapeError):
        return None  # deltas that do not concatenate: the full read says what is wrong
    except READ_ERRORS as exc:
        raise LakeReadError(f"lake: cannot read {TABLE} {part.key} ({new_files or proven}): {exc}") from exc
    return check_bronze_delta(new, seam, proven_rows, part.start, part.end, TABLE.order)


def _record(
    lake: LakeResource,
    part: DayPartition,
    files: StoredFiles,
    result: SuiteResult,
    stored: ContractProof | None = None,
) -> SuiteResult:
    """Store the proof of `result` (a validation of exactly `files`) unless it is the `stored` one; a
    failed write only costs the next validation its shortcut, so it is reported, not raised."""
    proof = proof_of(result, files.stamps, part.start, part.end)
    if proof == stored:
        return result
    try:
        lake.store.write_json(proof_key(lake, part), proof.to_json())
    except Exception as exc:  # any store error: the verdict stands, only the proof is lost
        return replace(result, parameters={**result.parameters, "proof": f"not recorded: {exc}"})
    return result
