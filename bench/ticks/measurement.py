"""CPU seconds of one live tick's derivation (bronze, candles 1m/5m/1h, features) by time of day.

For each tick time T the lake holds the day so far as the ticks before T left it (raw committed up
to T - 1 minute, derived from it; the day before complete, for the features' lookback and the first
minutes' close). The tick commits one raw batch, [T - 1 minute - overlap, T) as a live fetch would,
then derives every instrument's partition: incrementally (what a tick does now), and from scratch
with the derived partitions removed (what every tick did before), each `repeats` times from the
same state. CPU = process time (user + system, all threads) of the derivation only: the fetch and the
run's fixed cost (launch, imports, checks) are not in it.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time as clock
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

from crypto_platform import tables
from crypto_platform.assets.gold.inputs import FeatureRunMemo, derive_features
from crypto_platform.assets.ingest import commit_batch, derive_bronze
from crypto_platform.assets.silver import derive_candles_1m
from crypto_platform.partitions import DayPartition
from crypto_platform.platform_settings import DEFAULT_OVERLAP_SECONDS
from crypto_platform.resources.lake import LakeResource
from crypto_platform.settings import Instrument
from crypto_platform.sources.synthetic import SyntheticSource
from crypto_platform.transforms.candles import rollup

DAY = date(2024, 3, 4)  # a Monday; any fixed past day (the simulator is a function of time)
DERIVED_LAYERS = ("bronze", "silver", "gold")


@dataclass(frozen=True)
class TickFigures:
    """One tick time: rows it read anew vs kept, and the CPU seconds of its derivation (medians)."""

    at: str  # 'HH:MM'
    new_raw_rows: int  # raw rows of the tick's batch, all instruments
    carried_rows: int  # bronze + reject rows kept from the stored partitions
    incremental_cpu_s: float
    scratch_cpu_s: float
    incremental_runs: tuple[float, ...]
    scratch_runs: tuple[float, ...]
    incremental_stages: dict[str, float]  # median CPU s per stage (bronze, candles, features)


@dataclass(frozen=True)
class Result:
    """Figures of one bench run."""

    instruments: tuple[str, ...]
    trades_per_minute: tuple[float, ...]
    repeats: int
    day: date
    ticks: tuple[TickFigures, ...]
    started: datetime
    seconds: float
    load: tuple[tuple[float, float, float], tuple[float, float, float]] = (
        (0, 0, 0),
        (0, 0, 0),
    )  # before/after


def _fetch(source: SyntheticSource, lake: LakeResource, part: DayPartition, start: datetime, end: datetime):
    """Commit the simulator's trades of [start, end) as one raw batch (as a live fetch at `end` does)."""
    batch = source.fetch(part.instrument, start, end)
    return commit_batch(lake, part, batch, end)[0].rows


STAGES = ("bronze", "candles", "features")


def derive(lake: LakeResource, parts: list[DayPartition]) -> tuple[int, dict[str, float]]:
    """Every derived layer of the partitions, as one live run's steps do; returns the carried rows
    and the CPU seconds of each stage (bronze, candles 1m + roll-ups, features)."""
    carried, cpu = 0, {}
    start = clock.process_time()
    for part in parts:
        result, _, _ = derive_bronze(lake, part)
        carried += result.rows_carried
    cpu["bronze"], start = clock.process_time() - start, clock.process_time()
    for part in parts:
        derive_candles_1m(lake, part)
        one_min = lake.read_partition(tables.CANDLES_1M, part)
        for width in ("5m", "1h"):
            lake.write_partition(rollup(one_min, width), tables.CANDLES[width], part)  # type: ignore[arg-type]
    cpu["candles"], start = clock.process_time() - start, clock.process_time()
    memo = FeatureRunMemo()  # one per run, as gold/features does
    for part in parts:
        derive_features(lake, part, memo)
    cpu["features"] = clock.process_time() - start
    return carried, cpu


def _snapshot(root: Path, to: Path) -> None:
    """Copy the lake (raw manifests and derived layers; batch files are immutable and stay shared)."""
    shutil.rmtree(to, ignore_errors=True)
    shutil.copytree(root, to, ignore=shutil.ignore_patterns("batch-*.parquet"))


def _restore(snapshot: Path, root: Path) -> None:
    """Put the lake back as it was before a tick: manifests and derived partitions."""
    for layer in DERIVED_LAYERS:
        shutil.rmtree(root / layer, ignore_errors=True)
        if (snapshot / layer).exists():
            shutil.copytree(snapshot / layer, root / layer)
    for manifest in (snapshot / "raw").rglob("_manifest.json"):
        shutil.copy2(manifest, root / manifest.relative_to(snapshot))


def measure_tick(
    lake: LakeResource, source: SyntheticSource, parts: list[DayPartition], at: datetime, repeats: int
) -> TickFigures:
    """The lake holds the day up to `at` - 1 minute (derived); time the tick at `at`, both ways."""
    root, snapshot = lake.root_path, lake.root_path.parent / "snapshot"
    _snapshot(root, snapshot)
    start = at - timedelta(minutes=1, seconds=DEFAULT_OVERLAP_SECONDS)
    incremental, scratch, stages, new_rows, carried = [], [], [], 0, 0
    for _ in range(repeats):
        new_rows = sum(_fetch(source, lake, p, start, at) for p in parts)
        carried, cpu = derive(lake, parts)
        incremental.append(sum(cpu.values()))
        stages.append(cpu)
        _restore(snapshot, root)
        sum(_fetch(source, lake, p, start, at) for p in parts)
        for layer in DERIVED_LAYERS:  # what a tick derived before: the whole day (the day before kept)
            for folder in (root / layer).rglob(f"date={DAY}"):
                shutil.rmtree(folder)
        scratch.append(sum(derive(lake, parts)[1].values()))
        _restore(snapshot, root)
    return TickFigures(
        at=f"{at:%H:%M}",
        new_raw_rows=new_rows,
        carried_rows=carried,
        incremental_cpu_s=statistics.median(incremental),
        scratch_cpu_s=statistics.median(scratch),
        incremental_runs=tuple(incremental),
        scratch_runs=tuple(scratch),
        incremental_stages={k: statistics.median(c[k] for c in stages) for k in STAGES},
    )


def measure(
    instruments: list[Instrument],
    *,
    ticks: tuple[time, ...] = (time(1, 0), time(23, 0)),
    repeats: int = 5,
    workdir: Path | None = None,
) -> Result:
    """Time the ticks at `ticks` (in order) of DAY for these synthetic instruments (one exchange)."""
    began, wall, load_before = datetime.now(UTC), clock.perf_counter(), os.getloadavg()
    source = SyntheticSource()
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        lake = LakeResource(root=str(Path(tmp) / "lake"))
        before = [DayPartition(i, DAY - timedelta(days=1)) for i in instruments]
        for p in before:
            _fetch(source, lake, p, p.start, p.end)
        derive(lake, before)
        parts = [DayPartition(i, DAY) for i in instruments]
        figures, done_to = [], None
        for t in ticks:
            at = datetime.combine(DAY, t, UTC)
            for p in parts:  # the ticks before: the day up to a minute before, derived
                _fetch(source, lake, p, done_to or p.start, at - timedelta(minutes=1))
            derive(lake, parts)
            figures.append(measure_tick(lake, source, parts, at, repeats))
            done_to = at - timedelta(minutes=1)
    return Result(
        instruments=tuple(i.key for i in instruments),
        trades_per_minute=tuple(float(source.params(i).trades_per_minute) for i in instruments),
        repeats=repeats,
        day=DAY,
        ticks=tuple(figures),
        started=began,
        seconds=clock.perf_counter() - wall,
        load=(load_before, os.getloadavg()),
    )
