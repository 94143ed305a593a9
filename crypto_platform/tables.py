"""Every table of the platform, defined once: layer, name, layout, asset key, warehouse view, schema.

The lake (where files live), the warehouse (which views exist), the assets (their keys), the checks
and the sensors all take a table's identity from here, so a table is renamed or moved in one place.
Layouts: `DAILY` tables hold one file per (instrument, UTC day) partition (an open day's bronze: a
base file plus one delta per tick until the day is compacted, read as one table); `BATCHES` tables (raw) hold
immutable batch files per partition committed by a manifest; `SINGLE` tables are unpartitioned
(one or more named files); `REGISTRY` assets live outside the lake (the MLflow model registry).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import dagster as dg
import polars as pl

from crypto_platform import schemas
from crypto_platform.partitions import trade_partitions
from crypto_platform.transforms.features import FEATURES_SCHEMA
from crypto_platform.transforms.trades import natural_order


class Layout(StrEnum):
    """How a table's data is laid out in the lake."""

    DAILY = "daily"  # <table>/instrument=<key>/date=<day>/part.parquet, replaced whole
    BATCHES = "batches"  # <table>/instrument=<key>/date=<day>/<batch>.parquet + _manifest.json
    SINGLE = "single"  # <table>/<name>.parquet, unpartitioned
    REGISTRY = "registry"  # not in the lake (MLflow)


@dataclass(frozen=True)
class Table:
    """One table: where it lives in the lake, its asset key and warehouse view, its column contract."""

    layer: str
    name: str
    layout: Layout
    schema: dict[str, pl.DataType] | None = field(default=None, compare=False, hash=False)
    # the row order of a partition, restored on read when ticks appended deltas (empty: append order)
    order: tuple[pl.Expr, ...] = field(default=(), compare=False, hash=False)

    @property
    def key(self) -> dg.AssetKey:
        """The Dagster asset key, `<layer>/<name>`."""
        return dg.AssetKey([self.layer, self.name])

    @property
    def view(self) -> str | None:
        """The warehouse view `<layer>.<name>` (None for tables outside the lake)."""
        return None if self.layout is Layout.REGISTRY else f"{self.layer}.{self.name}"

    @property
    def partitioned(self) -> bool:
        """True for tables partitioned by (UTC day x instrument)."""
        return self.layout in (Layout.DAILY, Layout.BATCHES)

    @property
    def partitions_def(self) -> dg.MultiPartitionsDefinition | None:
        """The asset's partitions definition (None for unpartitioned tables)."""
        return trade_partitions if self.partitioned else None

    def __str__(self) -> str:
        return f"{self.layer}/{self.name}"


RAW_TRADES = Table("raw", "trades", Layout.BATCHES, schemas.RAW_TRADES)
BRONZE_TRADES = Table(
    "bronze", "trades", Layout.DAILY, schemas.BRONZE_TRADES, (pl.col("ts"), *natural_order())
)
TRADE_REJECTS = Table("bronze", "trade_rejects", Layout.DAILY, schemas.TRADE_REJECTS)
CANDLES_1M = Table("silver", "candles_1m", Layout.DAILY, schemas.CANDLES)
CANDLES_5M = Table("silver", "candles_5m", Layout.DAILY, schemas.CANDLES)
CANDLES_1H = Table("silver", "candles_1h", Layout.DAILY, schemas.CANDLES)
CANDLES: dict[str, Table] = {"1m": CANDLES_1M, "5m": CANDLES_5M, "1h": CANDLES_1H}  # by bar width
FEATURES = Table("gold", "features", Layout.DAILY, FEATURES_SCHEMA)
LABELS = Table("gold", "labels", Layout.DAILY, schemas.LABELS)
TRAINING_SET = Table("gold", "training_set", Layout.SINGLE)
TRAINING_SUMMARY = Table("gold", "training_set_summary", Layout.SINGLE)
MODEL = Table("gold", "model", Layout.REGISTRY)
MODEL_EVALUATIONS = Table("gold", "model_evaluations", Layout.SINGLE)  # one file per model version
PREDICTIONS = Table("gold", "predictions", Layout.DAILY)
PREDICTION_ERRORS = Table("gold", "prediction_errors", Layout.DAILY)
PREDICTION_SKILL = Table("gold", "prediction_skill", Layout.SINGLE)
ROLLING_EVALUATION = Table("gold", "rolling_evaluation", Layout.DAILY)  # model + baselines per matured day

ALL_TABLES: tuple[Table, ...] = (
    RAW_TRADES,
    BRONZE_TRADES,
    TRADE_REJECTS,
    CANDLES_1M,
    CANDLES_5M,
    CANDLES_1H,
    FEATURES,
    LABELS,
    TRAINING_SET,
    TRAINING_SUMMARY,
    MODEL,
    MODEL_EVALUATIONS,
    PREDICTIONS,
    PREDICTION_ERRORS,
    PREDICTION_SKILL,
    ROLLING_EVALUATION,
)


def by_key(key: dg.AssetKey) -> Table:
    """The table of an asset key (a clear error for keys that are not tables)."""
    for table in ALL_TABLES:
        if table.key == key:
            return table
    raise KeyError(f"asset {key.to_user_string()} is not a table of crypto_platform.tables")
