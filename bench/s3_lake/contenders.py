"""The three ways of replacing one (instrument, day) partition on S3 that the bench compares.

* `OwnManifest`: the platform's lake (`LakeResource` on S3): a new immutable object per version,
  committed by a conditional PUT of the partition's pointer.
* `Delta`: a Delta Lake table (`deltalake`, delta-rs) partitioned by instrument and date; a replace is
  an overwrite with a predicate on the partition, committed by a new log entry (conditional PUT).
* `InPlace`: the naive control: the partition's one object overwritten by a plain PUT.
"""

from __future__ import annotations

import io
import uuid
from datetime import date

import boto3
import polars as pl
from deltalake import write_deltalake

from crypto_platform import tables
from crypto_platform.partitions import DayPartition
from crypto_platform.resources.lake import PARQUET_OPTIONS, LakeResource
from crypto_platform.settings import load_universe

DAY = date(2024, 3, 4)
INSTRUMENT = "sim.BTC-USDT"


def _bucket(endpoint: str) -> str:
    name = f"bench-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=name)
    return name


class OwnManifest:
    """The platform's S3 lake."""

    name = "own manifest (platform lake)"

    def __init__(self, endpoint: str) -> None:
        self.bucket = _bucket(endpoint)
        self.lake = LakeResource(
            root=f"s3://{self.bucket}/lake", s3_endpoint_url=endpoint, s3_allow_http=True
        )
        self.part = DayPartition(load_universe().instrument(INSTRUMENT), DAY)

    def write(self, df: pl.DataFrame) -> None:
        self.lake.write_partition(df, tables.CANDLES_1M, self.part)

    def read(self) -> pl.DataFrame:
        df = self.lake.read_partition(tables.CANDLES_1M, self.part)
        assert df is not None
        return df


class Delta:
    """A Delta Lake table partitioned by (instrument, date); one other day stored beside it."""

    name = "Delta Lake (deltalake 1.6)"

    def __init__(self, endpoint: str) -> None:
        self.bucket = _bucket(endpoint)
        self.uri = f"s3://{self.bucket}/candles"
        creds = boto3.session.Session().get_credentials().get_frozen_credentials()
        self.options = {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": creds.access_key,
            "AWS_SECRET_ACCESS_KEY": creds.secret_key,
            "AWS_CONDITIONAL_PUT": "etag",  # commits by If-None-Match / If-Match, no lock table
        }
        self.predicate = f"instrument = '{INSTRUMENT}' AND date = '{DAY}'"
        self.started = False

    def _with_keys(self, df: pl.DataFrame, day: date = DAY) -> pl.DataFrame:
        return df.with_columns(instrument=pl.lit(INSTRUMENT), date=pl.lit(str(day)))

    def write(self, df: pl.DataFrame) -> None:
        keyed = self._with_keys(df).to_arrow()
        if not self.started:  # the table, with a neighbouring day that must survive every replace
            other = self._with_keys(df, date(2024, 3, 5)).to_arrow()
            write_deltalake(
                self.uri, other, partition_by=["instrument", "date"], storage_options=self.options
            )
            self.started = True
        write_deltalake(
            self.uri,
            keyed,
            mode="overwrite",
            predicate=self.predicate,
            partition_by=["instrument", "date"],
            storage_options=self.options,
        )

    def read(self) -> pl.DataFrame:
        scan = pl.scan_delta(self.uri, storage_options=self.options)
        day = scan.filter((pl.col("instrument") == INSTRUMENT) & (pl.col("date") == str(DAY)))
        return day.drop("instrument", "date").collect()


class InPlace:
    """The control: one object per partition, overwritten by a plain PUT."""

    name = "in-place overwrite (control)"

    def __init__(self, endpoint: str) -> None:
        self.bucket = _bucket(endpoint)
        self.key = f"silver/candles_1m/instrument={INSTRUMENT}/date={DAY}/part.parquet"
        self.client = boto3.client("s3", endpoint_url=endpoint)
        self.options = LakeResource(
            root=f"s3://{self.bucket}/x", s3_endpoint_url=endpoint, s3_allow_http=True
        ).store.storage_options

    def write(self, df: pl.DataFrame) -> None:
        buf = io.BytesIO()
        df.write_parquet(buf, **PARQUET_OPTIONS)
        self.client.put_object(Bucket=self.bucket, Key=self.key, Body=buf.getvalue())

    def read(self) -> pl.DataFrame:
        return pl.read_parquet(f"s3://{self.bucket}/{self.key}", storage_options=self.options)
