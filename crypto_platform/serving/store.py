"""The prediction API's reads: `queries` over the lake's gold tables, through the `AnswerCache`.

Framework-free except for the thread pool: an answer validated less than `cache_check_seconds` ago
is returned on the event loop; anything that touches the disk (file stats, DuckDB) runs in a thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from datetime import datetime
from typing import Any, TypeVar

import duckdb
from starlette.concurrency import run_in_threadpool

from crypto_platform import tables
from crypto_platform.resources.lake import LakeResource
from crypto_platform.serving import queries
from crypto_platform.serving.cache import AnswerCache
from crypto_platform.serving.settings import ServingSettings
from crypto_platform.settings import Instrument

T = TypeVar("T")


class PredictionStore:
    """The API's reads: `queries` over the lake's gold tables, through the answer cache."""

    def __init__(self, settings: ServingSettings) -> None:
        self.settings = settings
        self.universe = settings.universe
        self.lake = LakeResource(root=settings.lake_root)
        self.lake.root_path  # noqa: B018 - an unsupported root (s3://...) fails at start-up, with its reason
        self.cache = AnswerCache(
            check_seconds=settings.cache_check_seconds,
            monotonic=settings.monotonic,
            enabled=settings.cache,
            max_weight=settings.cache_max_rows,
        )
        self._con = queries.connect()
        self._local = threading.local()

    def con(self) -> duckdb.DuckDBPyConnection:
        """This thread's cursor on the shared in-memory connection (cursors are per thread)."""
        cur = getattr(self._local, "cur", None)
        if cur is None:
            cur = self._local.cur = self._con.cursor()
        return cur

    async def answer(
        self,
        key: Hashable,
        fingerprint: Callable[[], Hashable],
        compute: Callable[[], T],
        weigh: Callable[[T], int],
    ) -> tuple[T, bool]:
        """(answer, cached?): a recently validated answer right away, else validation/query in a thread.

        The fast path stays on the event loop (no thread hop); file stats and DuckDB run in the
        thread pool so they never block other requests.
        """
        if (cached := self.cache.peek(key)) is not None:
            return cached[0], True
        return await run_in_threadpool(self.cache.get, key, fingerprint, compute, weigh)

    async def latest(self, insts: tuple[Instrument, ...]) -> tuple[dict[str, dict[str, Any]], bool]:
        """Newest prediction row per instrument (those that have one), and whether it was cached."""

        def fingerprint() -> Hashable:
            newest = [queries.newest_file(self.lake, tables.PREDICTIONS, i) for i in insts]
            return tuple(queries.file_stamp(f) if f else None for f in newest)

        return await self.answer(
            ("latest", tuple(i.key for i in insts)),
            fingerprint,
            lambda: queries.latest_predictions(self.con(), self.lake, insts),
            len,
        )

    async def between(
        self, inst: Instrument, start: datetime, end: datetime
    ) -> tuple[list[dict[str, Any]], bool]:
        files = queries.files_between(self.lake, tables.PREDICTIONS, inst, start, end)
        return await self.answer(
            ("range", inst.key, start, end),
            lambda: tuple(queries.file_stamp(f) for f in files),
            lambda: queries.predictions_between(self.con(), files, start, end),
            len,
        )

    async def evaluation(self, version: int | None) -> tuple[tuple[int | None, list[dict[str, Any]]], bool]:
        """(champion version, rows of `version` or of the champion when None), and whether cached."""

        def fingerprint() -> Hashable:
            return tuple(queries.file_stamp(f) for f in queries.evaluation_files(self.lake))

        def compute() -> tuple[int | None, list[dict[str, Any]]]:
            files = queries.evaluation_files(self.lake)
            champion = queries.champion_version(self.con(), files)
            wanted = champion if version is None else version
            rows = [] if wanted is None else queries.model_evaluation(self.con(), files, wanted)
            return champion, rows

        return await self.answer(("evaluation", version), fingerprint, compute, lambda v: len(v[1]))
