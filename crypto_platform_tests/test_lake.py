"""The lake resource: hive layout, atomic replace, failed writes leave the old data intact."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import polars as pl
import pytest

from crypto_platform.partitions import DayPartition
from crypto_platform.resources.lake import LakeResource
from crypto_platform.settings import PROJECT_DIR, load_universe


@pytest.fixture
def part() -> DayPartition:
    return DayPartition(load_universe().instrument("sim.BTC-USDT"), date(2024, 1, 2))


def test_write_read_replace(tmp_path: Path, part: DayPartition) -> None:
    lake = LakeResource(root=str(tmp_path))
    first = lake.write_partition(pl.DataFrame({"x": [1, 2, 3]}), "silver", "t", part)
    assert first.path == str(tmp_path / "silver/t/instrument=sim.BTC-USDT/date=2024-01-02/part.parquet")
    assert first.rows == 3 and first.bytes == Path(first.path).stat().st_size
    lake.write_partition(pl.DataFrame({"x": [9]}), "silver", "t", part)
    assert lake.read_partition("silver", "t", part)["x"].to_list() == [9]
    assert sorted(p.name for p in Path(first.path).parent.iterdir()) == ["part.parquet"]


def test_failed_write_keeps_previous_data(tmp_path: Path, part: DayPartition) -> None:
    lake = LakeResource(root=str(tmp_path))
    lake.write_partition(pl.DataFrame({"x": [1, 2]}), "silver", "t", part)
    bad = pl.DataFrame({"x": [object()]}, schema={"x": pl.Object})  # parquet cannot store Object
    with pytest.raises(Exception):  # noqa: B017 - whatever polars raises, nothing may be half-written
        lake.write_partition(bad, "silver", "t", part)
    assert lake.read_partition("silver", "t", part)["x"].to_list() == [1, 2]
    assert sorted(p.name for p in lake.partition_path("silver", "t", part).iterdir()) == ["part.parquet"]


def test_manifest_and_batches(tmp_path: Path, part: DayPartition) -> None:
    lake = LakeResource(root=str(tmp_path))
    assert lake.read_manifest("raw", "trades", part) is None
    lake.write_batch(pl.DataFrame({"id": ["a"]}), "raw", "trades", part, "batch-1")
    lake.write_manifest({"batches": [{"name": "batch-1"}]}, "raw", "trades", part)
    assert lake.read_manifest("raw", "trades", part) == {"batches": [{"name": "batch-1"}]}
    assert lake.read_batches("raw", "trades", part, ["batch-1"])[0]["id"].to_list() == ["a"]
    assert lake.scan_table("raw", "nothing") is None


def test_url_root_is_refused_not_taken_as_a_folder(part: DayPartition) -> None:
    lake = LakeResource(root="s3://desk-bucket/lake")
    with pytest.raises(ValueError, match=r"s3://desk-bucket/lake.*not implemented"):
        lake.write_partition(pl.DataFrame({"x": [1]}), "silver", "t", part)
    assert not (PROJECT_DIR / "s3:").exists(), "nothing may be written to a local 's3:' folder"
