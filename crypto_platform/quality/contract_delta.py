"""The bronze contract on an open day's new delta only, when a proof says everything before it passed.

An open day's bronze is a base file plus one delta file per tick. A full validation reads the whole
day every tick; here a tick validates only the files after the prefix a `ContractProof` vouches for:
the verdict of the last validation with a fingerprint (`stamps`: name, size, modification time of
every file it read, base first) of exactly what it validated. The prefix counts only when the proof
is of these rules (`CONTRACT_VERSION`, a digest of their code) and window, passed, and its files are
the current files' first ones unchanged; else (no proof, a failed verdict, a rewritten or compacted
base) the caller validates in full.

Why this equals a full validation: every bronze rule but one is row by row (schema, non-null keys,
positive price and amount, side, ts inside the window), so the proven prefix contributes no failing
row and the day's counts are the new rows' counts. The one cross-row rule is trade-id uniqueness: the
prefix's ids are unique, so the day's duplicated rows are exactly the duplicated rows of the new rows
together with the prefix rows sharing an id with them (`seam`, found by reading only the id columns of
the row groups that can hold them). No rule spans the boundary otherwise (the suite has no ordering or
continuity rule). Examples come out in the full validation's order (a stable sort by the table order).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path

import polars as pl

from crypto_platform.quality import contract, suite_result
from crypto_platform.quality.contract import TRADE_KEY, check_bronze, unique_outcome
from crypto_platform.quality.suite_result import BRONZE_SUITE, ExpectationOutcome, SuiteResult, utc_bound
from crypto_platform.schemas import BRONZE_TRADES


def _rules_digest() -> str:
    """A digest of the code and contract the bronze rules are made of: any change to them (even one
    nobody thought to version) makes older proofs vouch for nothing, so the next validation is full."""
    digest = hashlib.sha256(repr(sorted((c, str(t)) for c, t in BRONZE_TRADES.items())).encode())
    for source in (contract.__file__, suite_result.__file__, __file__):
        digest.update(Path(str(source)).read_bytes())
    return digest.hexdigest()[:16]


CONTRACT_VERSION = f"{BRONZE_SUITE}/{_rules_digest()}"
FULL, INCREMENTAL = "full", "incremental"
SEAM_COLUMNS = [*TRADE_KEY, "ts"]  # what the seam probe reads of the proven prefix


@dataclass(frozen=True)
class ContractProof:
    """What one validation of a partition judged: its files' stamps, rows, window and verdict."""

    version: str
    window_start: str
    window_end: str
    stamps: tuple[str, ...]
    rows: int
    passed: bool

    def to_json(self) -> dict[str, object]:
        return {**asdict(self), "stamps": list(self.stamps)}

    @classmethod
    def from_json(cls, doc: object) -> ContractProof | None:
        """The proof in a stored document; None when there is none or it is not a proof (unreadable =
        no proof: the next validation is full)."""
        if not isinstance(doc, dict):
            return None
        try:
            return cls(
                version=str(doc["version"]),
                window_start=str(doc["window_start"]),
                window_end=str(doc["window_end"]),
                stamps=tuple(str(s) for s in doc["stamps"]),
                rows=int(doc["rows"]),
                passed=bool(doc["passed"]),
            )
        except (KeyError, TypeError, ValueError):
            return None


def proof_of(result: SuiteResult, stamps: Sequence[str], start: datetime, end: datetime) -> ContractProof:
    """The proof recording `result`, a validation of exactly the files `stamps` over [start, end)."""
    lo, hi = utc_bound(start, "window_start"), utc_bound(end, "window_end")
    return ContractProof(
        CONTRACT_VERSION, lo.isoformat(), hi.isoformat(), tuple(stamps), result.row_count, result.success
    )


def proven_prefix(
    proof: ContractProof | None, stamps: Sequence[str], start: datetime, end: datetime
) -> tuple[int, str]:
    """(how many leading files of `stamps` the proof vouches for, '') or (0, why none: the reason a
    full validation runs)."""
    lo, hi = utc_bound(start, "window_start"), utc_bound(end, "window_end")
    if proof is None:
        why = "no proof that the stored files passed"
    elif proof.version != CONTRACT_VERSION:
        why = f"proof of other rules ({proof.version}, now {CONTRACT_VERSION})"
    elif (proof.window_start, proof.window_end) != (lo.isoformat(), hi.isoformat()):
        why = "proof of another window"
    elif not proof.passed:
        why = "the last validation failed"
    elif not proof.stamps or tuple(stamps[: len(proof.stamps)]) != proof.stamps:
        why = "the files validated changed since (rewritten, compacted or replaced)"
    else:
        return len(proof.stamps), ""
    return 0, why


def check_bronze_delta(
    new: pl.DataFrame,
    seam: pl.DataFrame,
    proven_rows: int,
    window_start: datetime,
    window_end: datetime,
    order: Sequence[pl.Expr],
) -> SuiteResult | None:
    """The bronze suite's verdict on a partition whose first `proven_rows` rows passed it, given only
    the rows after them (`new`) and the proven rows sharing a trade id with them (`seam`, SEAM_COLUMNS,
    in stored order): equal to `check_bronze` of the whole partition. None when `new` is off the
    contract's schema (which a full read would not concatenate): validate in full."""
    if new.schema != pl.Schema(BRONZE_TRADES):
        return None
    t0 = time.perf_counter()
    new = new.sort(list(order), maintain_order=True) if new.height > 1 else new
    rows = check_bronze(new, window_start, window_end)
    total = proven_rows + new.height
    both = pl.concat([seam.select(SEAM_COLUMNS), new.select(SEAM_COLUMNS)], how="vertical")
    unique = unique_outcome(both.sort(list(order), maintain_order=True), "trade_id_unique", TRADE_KEY)
    outcomes = tuple(_over(unique if o.name == unique.name else o, total) for o in rows.outcomes)
    return SuiteResult(
        suite=rows.suite,
        success=all(o.success for o in outcomes),
        row_count=total,
        outcomes=outcomes,
        duration_s=time.perf_counter() - t0,
        parameters={
            **rows.parameters,
            "validation": INCREMENTAL,
            "rows_validated": str(new.height),
            "rows_proven": str(proven_rows),
        },
    )


def full_validation(result: SuiteResult, why: str) -> SuiteResult:
    """`result` (a validation of the whole partition) labelled as such, with why it was full."""
    params = {**result.parameters, "validation": FULL, "rows_validated": str(result.row_count)}
    return replace(result, parameters={**params, "why_full": why} if why else params)


def _over(outcome: ExpectationOutcome, total: int) -> ExpectationOutcome:
    """A row rule's outcome as over the whole partition (its element count); schema outcomes as they are."""
    row_rule = outcome.expectation.startswith("polars_") and outcome.name != "dtypes_match_contract"
    return replace(outcome, element_count=total) if row_rule and outcome.error is None else outcome
