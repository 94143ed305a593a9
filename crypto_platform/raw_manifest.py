"""The raw partition's manifest, typed: which immutable batch files are committed and what they cover.

A raw (instrument, day) partition is append-only: each fetch writes one batch file, then commits it
by atomically replacing `_manifest.json`. Only batches listed here exist for readers. Batches are
contiguous (each starts where the previous coverage ended, minus the late-trade overlap), so the
partition's coverage is [first batch's covered_from, last batch's covered_to).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

_BATCH_FIELDS = ("name", "covered_from", "covered_to", "rows", "written_at")


@dataclass(frozen=True)
class Coverage:
    """[covered_from, covered_to) of one raw partition; empty when nothing was fetched yet."""

    covered_from: datetime | None
    covered_to: datetime | None

    @property
    def is_empty(self) -> bool:
        """True when the manifest covers no time at all."""
        return self.covered_from is None or self.covered_to is None or self.covered_to <= self.covered_from


@dataclass(frozen=True)
class RawBatch:
    """One committed batch file: its name, the time span the source vouched for, rows, commit time."""

    name: str
    covered_from: datetime
    covered_to: datetime
    rows: int
    written_at: datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)  # other keys, kept as written

    def to_json(self) -> dict[str, Any]:
        out = {
            **self.extra,
            "name": self.name,
            "covered_from": self.covered_from.isoformat(),
            "covered_to": self.covered_to.isoformat(),
            "rows": self.rows,
        }
        if self.written_at is not None:
            out["written_at"] = self.written_at.isoformat()
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RawBatch:
        written = data.get("written_at")
        return cls(
            name=str(data["name"]),
            covered_from=datetime.fromisoformat(data["covered_from"]),
            covered_to=datetime.fromisoformat(data["covered_to"]),
            rows=int(data.get("rows") or 0),
            written_at=datetime.fromisoformat(written) if written else None,
            extra={k: v for k, v in data.items() if k not in _BATCH_FIELDS},
        )


@dataclass(frozen=True)
class RawManifest:
    """The committed batches of one raw partition (`exists` is False when no manifest was ever written)."""

    batches: tuple[RawBatch, ...] = ()
    exists: bool = False
    version: int = 0  # +1 at every commit (never reused, also when a re-fetch restarts the batch list)

    @property
    def coverage(self) -> Coverage:
        """Union of the committed batches' coverage."""
        if not self.batches:
            return Coverage(None, None)
        return Coverage(self.batches[0].covered_from, self.batches[-1].covered_to)

    @property
    def watermark(self) -> datetime | None:
        """End of the committed coverage: the next fetch starts here (minus the overlap)."""
        return self.coverage.covered_to

    @property
    def last_written_at(self) -> datetime | None:
        """When the newest batch was committed."""
        return self.batches[-1].written_at if self.batches else None

    @property
    def names(self) -> list[str]:
        """Names of the committed batch files, oldest first."""
        return [b.name for b in self.batches]

    def names_reaching_past(self, ts: datetime) -> list[str]:
        """Batches whose coverage ends after `ts` (the only ones that can hold trades at or after it)."""
        return [b.name for b in self.batches if b.covered_to > ts]

    def digest(self, count: int | None = None) -> str:
        """Fingerprint of the first `count` committed batch names (all by default), in order: a derived
        partition records it to recognise the batches it was built from."""
        names = self.names if count is None else self.names[:count]
        return hashlib.sha256("\n".join(names).encode()).hexdigest()[:32]

    def batches_after(self, count: int, digest: str) -> tuple[RawBatch, ...] | None:
        """The batches committed after the first `count`, if those are still the ones `digest` names;
        None when the list was restarted or rewritten (a re-fetch): then derive from scratch."""
        if count > len(self.batches) or self.digest(count) != digest:
            return None
        return self.batches[count:]

    def unique_name(self, name: str, suffix: str) -> str:
        """`name`, or `name-suffix` when a committed batch already has that name."""
        return f"{name}-{suffix}" if name in self.names else name

    def with_batch(self, batch: RawBatch) -> RawManifest:
        """This manifest plus one more committed batch (the next version)."""
        return replace(self, batches=(*self.batches, batch), exists=True, version=self.version + 1)

    def restarted_with(self, batch: RawBatch) -> RawManifest:
        """A re-fetch: the next version holds only `batch` (the old batch files become orphans)."""
        return replace(self, batches=(batch,), exists=True, version=self.version + 1)

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "batches": [b.to_json() for b in self.batches]}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> RawManifest:
        if data is None:
            return cls()
        batches = tuple(RawBatch.from_json(b) for b in data.get("batches") or [])
        return cls(batches, exists=True, version=int(data.get("version", len(batches))))
