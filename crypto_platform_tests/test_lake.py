"""The lake resource's contract, on both stores (a local folder, and a bucket of a real S3-compatible
server on loopback): hive layout, atomic replace, failed writes leave the old data intact, manifests."""

from __future__ import annotations

from datetime import date

import polars as pl
import pytest

from crypto_platform import tables
from crypto_platform.partitions import DayPartition
from crypto_platform.platform_settings import PlatformSettings, SettingsError
from crypto_platform.raw_manifest import RawBatch, RawManifest
from crypto_platform.resources.lake import LakeResource, lake_resource
from crypto_platform.resources.lake.s3 import S3Store
from crypto_platform.settings import PROJECT_DIR, load_universe
from crypto_platform.tables import Layout, Table

T = Table("silver", "t", Layout.DAILY)


@pytest.fixture
def part() -> DayPartition:
    return DayPartition(load_universe().instrument("sim.BTC-USDT"), date(2024, 1, 2))


def stored_files(lake: LakeResource, part: DayPartition) -> list[str]:
    """Names of every file stored in the partition's folder (temp files and object versions too)."""
    return [e.key.rsplit("/", 1)[1] for e in lake.store.list_folder(lake.part_key(T, part))]


def test_write_read_replace(any_lake: LakeResource, part: DayPartition) -> None:
    first = any_lake.write_partition(pl.DataFrame({"x": [1, 2, 3]}), T, part)
    folder = any_lake.store.where("silver/t/instrument=sim.BTC-USDT/date=2024-01-02")
    assert first.path.startswith(folder + "/part") and first.rows == 3
    second = any_lake.write_partition(pl.DataFrame({"x": [9]}), T, part)
    assert any_lake.read_partition(T, part)["x"].to_list() == [9]
    assert any_lake.stored_days(T, part.instrument) == [part.day] and any_lake.has_partition(T, part)
    sizes = {e.key.rsplit("/", 1)[1]: e.size for e in any_lake.store.list_folder(any_lake.part_key(T, part))}
    if any_lake.is_local:
        assert first.path == second.path == f"{folder}/part.parquet"
        assert sizes == {"part.parquet": second.bytes}
    else:  # a pointer and two immutable versions (the first superseded, until swept)
        name = second.path.rsplit("/", 1)[1]
        assert sorted(sizes) == sorted(["part.current.json", first.path.rsplit("/", 1)[1], name])
        assert sizes[name] == second.bytes


def test_failed_write_keeps_previous_data(any_lake: LakeResource, part: DayPartition) -> None:
    any_lake.write_partition(pl.DataFrame({"x": [1, 2]}), T, part)
    before = stored_files(any_lake, part)
    bad = pl.DataFrame({"x": [object()]}, schema={"x": pl.Object})  # parquet cannot store Object
    with pytest.raises(Exception):  # noqa: B017 - whatever polars raises, nothing may be half-written
        any_lake.write_partition(bad, T, part)
    assert any_lake.read_partition(T, part)["x"].to_list() == [1, 2]
    assert stored_files(any_lake, part) == before


def test_manifest_and_batches(any_lake: LakeResource, part: DayPartition) -> None:
    lake = any_lake
    assert lake.read_manifest(tables.RAW_TRADES, part) == RawManifest(exists=False)
    lake.write_batch(pl.DataFrame({"id": ["a"]}), tables.RAW_TRADES, part, "batch-1")
    assert [p.name for p in lake.uncommitted_batches(tables.RAW_TRADES, part)] == ["batch-1.parquet"]
    batch = RawBatch("batch-1", part.start, part.end, rows=1, written_at=part.end, extra={"complete": True})
    lake.write_manifest(RawManifest().with_batch(batch), tables.RAW_TRADES, part)
    manifest = lake.read_manifest(tables.RAW_TRADES, part)
    assert (
        manifest.exists and manifest.batches == (batch,) and manifest.batches[0].extra == {"complete": True}
    )
    assert (manifest.watermark, manifest.names) == (part.end, ["batch-1"])
    assert lake.read_batches(tables.RAW_TRADES, part, ["batch-1"])[0]["id"].to_list() == ["a"]
    assert lake.scan_batches(tables.RAW_TRADES, part, ["batch-1"]).collect()["id"].to_list() == ["a"]
    assert lake.uncommitted_batches(tables.RAW_TRADES, part) == []
    assert lake.scan_table(Table("raw", "nothing", Layout.BATCHES)) is None


def test_append_batch_commits_next_to_what_is_there(any_lake: LakeResource, part: DayPartition) -> None:
    def add(manifest: RawManifest, name: str, info) -> RawManifest:
        return manifest.with_batch(RawBatch(name, part.start, part.end, rows=info.rows))

    for rows in ([1, 2], [3]):
        any_lake.append_batch(pl.DataFrame({"id": rows}), tables.RAW_TRADES, part, ("b", "2"), add)
    manifest = any_lake.read_manifest(tables.RAW_TRADES, part)
    assert manifest.names == ["b", "b-2"] and manifest.version == 2
    scan = any_lake.scan_batches(tables.RAW_TRADES, part, manifest.names)
    assert sorted(scan.collect()["id"].to_list()) == [1, 2, 3]


def test_tables_scan_and_single_files(any_lake: LakeResource, part: DayPartition) -> None:
    other = DayPartition(part.instrument, date(2024, 1, 3))
    any_lake.write_partition(pl.DataFrame({"x": [1]}), T, part)
    any_lake.write_partition(pl.DataFrame({"x": [2]}), T, other)
    any_lake.write_partition(pl.DataFrame({"x": [3]}), T, other)  # replaced: only the new version counts
    assert sorted(any_lake.scan_table(T).collect()["x"].to_list()) == [1, 3]
    assert any_lake.partition_max(T, other, "x") == 3
    single = tables.MODEL_EVALUATIONS
    any_lake.write_table(pl.DataFrame({"v": [1]}), single, "v1")
    any_lake.write_table(pl.DataFrame({"v": [2]}), single, "v2")
    assert (
        any_lake.read_table(single, "v2")["v"].to_list() == [2] and any_lake.read_table(single, "x") is None
    )
    assert sorted(any_lake.scan_table(single).collect()["v"].to_list()) == [1, 2]


def test_layout_is_enforced(any_lake: LakeResource, part: DayPartition) -> None:
    with pytest.raises(ValueError, match=r"raw/trades is laid out 'batches', not 'daily'"):
        any_lake.write_partition(pl.DataFrame({"x": [1]}), tables.RAW_TRADES, part)
    assert any_lake.store.list_folder(any_lake.part_key(tables.RAW_TRADES, part)) == []


def test_other_url_roots_are_refused_not_taken_as_a_folder(part: DayPartition) -> None:
    lake = LakeResource(root="gs://desk-bucket/lake")
    with pytest.raises(ValueError, match=r"gs://desk-bucket/lake.*is not a local folder.*s3://<bucket>"):
        lake.write_partition(pl.DataFrame({"x": [1]}), T, part)
    assert not (PROJECT_DIR / "gs:").exists(), "nothing may be written to a local 'gs:' folder"


def test_s3_settings_reach_the_lake_and_plain_http_needs_consent() -> None:
    env = {"CRYPTO_LAKE_ROOT": "s3://desk/lake", "CRYPTO_S3_ENDPOINT_URL": "http://127.0.0.1:9"}
    lake = lake_resource(PlatformSettings.from_env(env))
    assert (lake.root, lake.s3_endpoint_url, lake.s3_allow_http) == (
        "s3://desk/lake",
        "http://127.0.0.1:9",
        False,
    )
    with pytest.raises(
        ValueError, match=r"CRYPTO_S3_ENDPOINT_URL='http://127.0.0.1:9' is plain http.*CRYPTO_S3_ALLOW_HTTP"
    ):
        lake.store  # noqa: B018 - building the store checks the endpoint
    allowed = lake_resource(PlatformSettings.from_env({**env, "CRYPTO_S3_ALLOW_HTTP": "true"}))
    assert isinstance(allowed.store, S3Store) and allowed.store.storage_options["aws_allow_http"] == "true"
    with pytest.raises(
        SettingsError, match=r"CRYPTO_S3_ENDPOINT_URL \(value not shown\).*without cred"
    ) as err:
        PlatformSettings.from_env({"CRYPTO_S3_ENDPOINT_URL": "http://key:secret@127.0.0.1:9"})
    assert "secret" not in str(err.value)
    with pytest.raises(ValueError, match=r"expected s3://<bucket>"):
        S3Store("s3:///lake")
