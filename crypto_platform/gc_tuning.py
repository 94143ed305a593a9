"""How often Python's cyclic garbage collector runs in a process that loads the code location.

CPython collects its young generation after every 700 net allocations of container objects, and
after ten of those the middle one, and after ten of those (once the heap grew by a quarter) it walks
every object of the heap. A run worker, a code server or a test process holds ~1 M long-lived objects
once Dagster, polars, Great Expectations and MLflow are loaded, so each full collection costs ~0.4 s
there, and importing and running them triggers dozens: 10-18 % of such a process's CPU time is spent
re-examining objects that stay alive (measured in bench/GC.md). A young collection every 10,000
allocations (mypy's CLI makes the same trade) makes full collections ~10x rarer; reference counting
still frees everything that is not in a cycle at once, and cycles are still collected, a little later.
"""

from __future__ import annotations

import gc


def tune_gc(young_threshold: int) -> None:
    """Collect the young generation every `young_threshold` allocations; the older ones as CPython does."""
    _, middle, old = gc.get_threshold()
    gc.set_threshold(young_threshold, middle, old)
