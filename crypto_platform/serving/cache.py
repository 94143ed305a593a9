"""In-process answer cache, invalidated by the files an answer was read from.

Each entry keeps the fingerprint of its inputs (e.g. the newest prediction partition file of every
instrument: path, inode, size, mtime). The lake replaces a file by renaming a new one over it, so any
new minute changes the fingerprint. A lookup within `check_seconds` of the entry's last validation
is answered without touching the disk; after that the fingerprint is taken again (a few `stat`
calls) and the answer recomputed only if it changed. So an answer lags a prediction that is
readable in DuckDB by at most `check_seconds`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class _Entry(Generic[T]):
    value: T
    fingerprint: Hashable
    checked_at: float
    weight: int


class AnswerCache:
    """Answers by key, each valid while the fingerprint of its inputs is unchanged.

    Bounded by total weight (e.g. rows held), least recently used answers evicted first, so arbitrary
    time ranges cannot grow the process without limit.
    """

    def __init__(
        self,
        *,
        check_seconds: float,
        monotonic: Callable[[], float],
        enabled: bool = True,
        max_weight: int = 100_000,
    ) -> None:
        self.check_seconds = check_seconds
        self.enabled = enabled
        self.max_weight = max_weight
        self._monotonic = monotonic
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._weight = 0
        self._lock = threading.Lock()

    @property
    def weight(self) -> int:
        """Total weight of the cached answers."""
        return self._weight

    def peek(self, key: Hashable) -> tuple[T] | None:
        """(answer,) if it was validated less than `check_seconds` ago (no disk access), else None."""
        if not self.enabled:
            return None
        now = self._monotonic()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or now - entry.checked_at >= self.check_seconds:
                return None
            self._entries.move_to_end(key)
            return (entry.value,)

    def get(
        self,
        key: Hashable,
        fingerprint: Callable[[], Hashable],
        compute: Callable[[], T],
        weigh: Callable[[T], int] = lambda _: 1,
    ) -> tuple[T, bool]:
        """(answer, served from cache?): the cached answer while its inputs are unchanged, else compute."""
        if not self.enabled:
            return compute(), False
        now = self._monotonic()
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                if now - entry.checked_at < self.check_seconds:
                    return entry.value, True
        # Taken before computing: a file replaced meanwhile leaves an older fingerprint, so the next
        # validation recomputes (never a new fingerprint stored with an old answer).
        current = fingerprint()
        if entry is not None and entry.fingerprint == current:
            entry.checked_at = now
            return entry.value, True
        value = compute()
        weight = max(1, weigh(value))
        if weight > self.max_weight:  # larger than the whole cache: served, not kept
            return value, False
        with self._lock:
            if (old := self._entries.pop(key, None)) is not None:
                self._weight -= old.weight
            self._entries[key] = _Entry(value, current, now, weight)
            self._weight += weight
            while self._weight > self.max_weight:
                _, evicted = self._entries.popitem(last=False)
                self._weight -= evicted.weight
        return value, False
