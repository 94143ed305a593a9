"""Lineage of a derived lake partition: what it was computed from, stored with its data.

Data and lineage are replaced together (`LakeResource.commit_derived`: the Parquet footer; on S3 also
in the pointer). Besides the input's
version and coverage, an open day's partitions record what an incremental tick needs to extend them
exactly: the raw batches bronze was built from (a prefix of the manifest, by count and digest), an
`id` unique to each write, the id of the stored partition a tick extended (`base`; None: derived
from scratch) and the earliest instant whose rows changed against it (`changed_from`), the ids of the
derived partitions it was computed from (`inputs`), and the code's `DERIVATION`.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime

from crypto_platform.raw_manifest import Coverage

# Bump when a transform's output changes for the same input: a partition stored by other code is then
# derived from scratch instead of being extended (lineage without it predates incremental ticks).
DERIVATION = 1


def new_id() -> str:
    """A fresh id for one derived write."""
    return uuid.uuid4().hex[:16]


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


@dataclass(frozen=True)
class Lineage:
    """Which version of its input a derived partition was computed from, the time span the input
    vouched for, and (for incremental ticks) how it was built."""

    input_version: int
    covered_from: datetime | None = None
    covered_to: datetime | None = None
    batches: int | None = None  # bronze: the first `batches` committed raw batches were read
    digest: str | None = None  # RawManifest.digest of those batches (a restarted list never matches)
    id: str | None = None  # unique to this write (`new_id`)
    base: str | None = None  # id of the stored partition this one extended (None: from scratch)
    changed_from: datetime | None = None  # rows at or after this instant differ from that base
    inputs: tuple[tuple[str, str], ...] = ()  # (name, id) of the derived partitions it was built from
    derivation: int | None = None  # DERIVATION of the code that wrote it

    def to_json(self) -> str:
        span = [t.isoformat() if t else None for t in (self.covered_from, self.covered_to)]
        out: dict = {"input_version": self.input_version, "covered": span}
        extra = {
            "batches": self.batches,
            "digest": self.digest,
            "id": self.id,
            "base": self.base,
            "changed_from": self.changed_from.isoformat() if self.changed_from else None,
            "inputs": [list(pair) for pair in self.inputs] or None,
            "derivation": self.derivation,
        }
        return json.dumps({**out, **{k: v for k, v in extra.items() if v is not None}})

    def input(self, name: str) -> str | None:
        """The id of the named input this partition was computed from (None: not recorded)."""
        return dict(self.inputs).get(name)

    @property
    def coverage(self) -> Coverage:
        """The input's coverage this partition was derived over."""
        return Coverage(self.covered_from, self.covered_to)

    @property
    def current(self) -> bool:
        """Written by this code's derivation (else it is re-derived from scratch, never extended)."""
        return self.derivation == DERIVATION

    @classmethod
    def from_json(cls, text: str) -> Lineage:
        data = json.loads(text)
        start, end = (_time(t) for t in data.get("covered", [None, None]))
        return cls(
            int(data["input_version"]),
            start,
            end,
            batches=data.get("batches"),
            digest=data.get("digest"),
            id=data.get("id"),
            base=data.get("base"),
            changed_from=_time(data.get("changed_from")),
            inputs=tuple((str(k), str(v)) for k, v in data.get("inputs") or []),
            derivation=data.get("derivation"),
        )
