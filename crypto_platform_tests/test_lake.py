"""The lake resource: hive layout, atomic replace, failed writes leave the old data intact."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import polars as pl
import pytest

from crypto_platform import tables
from crypto_platform.partitions import DayPartition
from crypto_platform.raw_manifest import RawBatch, RawManifest
from crypto_platform.resources.lake import LakeResource
from crypto_platform.settings import PROJECT_DIR, load_universe
from crypto_platform.tables import Layout, Table

T = Table("silver", "t", Layout.DAILY)


@pytest.fixture
def part() -> DayPartition:
    return DayPartition(load_universe().instrument("sim.BTC-USDT"), date(2024, 1, 2))


def test_write_read_replace(tmp_path: Path, part: DayPartition) -> None:
    lake = LakeResource(root=str(tmp_path))
    first = lake.write_partition(pl.DataFrame({"x": [1, 2, 3]}), T, part)
    assert first.path == str(tmp_path / "silver/t/instrument=sim.BTC-USDT/date=2024-01-02/part.parquet")
    assert first.rows == 3 and first.bytes == Path(first.path).stat().st_size
    lake.write_partition(pl.DataFrame({"x": [9]}), T, part)
    assert lake.read_partition(T, part)["x"].to_list() == [9]
    assert sorted(p.name for p in Path(first.path).parent.iterdir()) == ["part.parquet"]


def test_failed_write_keeps_previous_data(tmp_path: Path, part: DayPartition) -> None:
    lake = LakeResource(root=str(tmp_path))
    lake.write_partition(pl.DataFrame({"x": [1, 2]}), T, part)
    bad = pl.DataFrame({"x": [object()]}, schema={"x": pl.Object})  # parquet cannot store Object
    with pytest.raises(Exception):  # noqa: B017 - whatever polars raises, nothing may be half-written
        lake.write_partition(bad, T, part)
    assert lake.read_partition(T, part)["x"].to_list() == [1, 2]
    assert sorted(p.name for p in lake.partition_path(T, part).iterdir()) == ["part.parquet"]


def test_manifest_and_batches(tmp_path: Path, part: DayPartition) -> None:
    lake = LakeResource(root=str(tmp_path))
    assert lake.read_manifest(tables.RAW_TRADES, part) == RawManifest(exists=False)
    lake.write_batch(pl.DataFrame({"id": ["a"]}), tables.RAW_TRADES, part, "batch-1")
    batch = RawBatch("batch-1", part.start, part.end, rows=1, written_at=part.end, extra={"complete": True})
    lake.write_manifest(RawManifest().with_batch(batch), tables.RAW_TRADES, part)
    manifest = lake.read_manifest(tables.RAW_TRADES, part)
    assert (
        manifest.exists and manifest.batches == (batch,) and manifest.batches[0].extra == {"complete": True}
    )
    assert (manifest.watermark, manifest.names) == (part.end, ["batch-1"])
    assert lake.read_batches(tables.RAW_TRADES, part, ["batch-1"])[0]["id"].to_list() == ["a"]
    assert lake.scan_table(Table("raw", "nothing", Layout.BATCHES)) is None


def test_layout_is_enforced(tmp_path: Path, part: DayPartition) -> None:
    lake = LakeResource(root=str(tmp_path))
    with pytest.raises(ValueError, match=r"raw/trades is laid out 'batches', not 'daily'"):
        lake.write_partition(pl.DataFrame({"x": [1]}), tables.RAW_TRADES, part)
    assert not lake.table_path(tables.RAW_TRADES).exists()


def test_url_root_is_refused_not_taken_as_a_folder(part: DayPartition) -> None:
    lake = LakeResource(root="s3://desk-bucket/lake")
    with pytest.raises(ValueError, match=r"s3://desk-bucket/lake.*not implemented"):
        lake.write_partition(pl.DataFrame({"x": [1]}), T, part)
    assert not (PROJECT_DIR / "s3:").exists(), "nothing may be written to a local 's3:' folder"
