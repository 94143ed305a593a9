"""Raw-partition coverage: the time span whose trades the source vouched for, from the manifest."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Coverage:
    """[covered_from, covered_to) of one raw partition; empty when nothing was fetched yet."""

    covered_from: datetime | None
    covered_to: datetime | None

    @property
    def is_empty(self) -> bool:
        """True when the manifest covers no time at all."""
        return self.covered_from is None or self.covered_to is None or self.covered_to <= self.covered_from


def coverage_of(manifest: dict[str, Any] | None) -> Coverage:
    """Union of the committed batches' coverage (batches are contiguous: each starts where the last ended)."""
    batches = (manifest or {}).get("batches") or []
    if not batches:
        return Coverage(None, None)
    return Coverage(
        datetime.fromisoformat(batches[0]["covered_from"]),
        datetime.fromisoformat(batches[-1]["covered_to"]),
    )
