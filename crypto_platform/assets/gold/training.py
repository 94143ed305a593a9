"""gold/training_set and gold/training_set_summary: features joined point-in-time to the labels known
now, over a rolling window (`ml.dataset.build_training_set` does the work)."""

from collections.abc import Iterator
from datetime import UTC, datetime

import dagster as dg
import polars as pl
from pydantic import Field

from crypto_platform import tables
from crypto_platform.metadata import frame_markdown
from crypto_platform.ml.dataset import (
    DEFAULT_HORIZON,
    LABEL_HORIZONS,
    TrainingSet,
    TrainingSetError,
    build_training_set,
    check_training_config,
)
from crypto_platform.resources.lake import LakeResource
from crypto_platform.resources.warehouse import WarehouseResource
from crypto_platform.schemas import KEYS
from crypto_platform.settings import SettingsError, load_universe


class TrainingSetConfig(dg.Config):
    window_days: float = Field(
        default=30.0, description="Rolling window: days of labelled minutes to train on."
    )
    horizon_minutes: int = Field(
        default=DEFAULT_HORIZON,
        description=f"Label horizon in minutes, one of {', '.join(map(str, LABEL_HORIZONS))} (its momentum "
        "baseline is the feature ret_<h>); the model and its predictions take it over.",
    )
    instruments: list[str] = Field(
        default=[], description="Instrument keys to train on (e.g. ['ftx.BTC-USD-USD']); empty: all."
    )


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            tables.TRAINING_SET.key,
            deps=[tables.FEATURES.key, tables.LABELS.key],
            description="Features joined point-in-time to the labels known now, over a rolling window.",
            kinds={"parquet", "polars"},
        ),
        dg.AssetSpec(
            tables.TRAINING_SUMMARY.key,
            deps=[tables.FEATURES.key, tables.LABELS.key],
            description="Per instrument: rows, labelled share, time span and label statistics of the set.",
            kinds={"parquet", "duckdb"},
        ),
    ],
    group_name="gold",
    can_subset=False,
)
def gold_training_set(
    context: dg.AssetExecutionContext,
    config: TrainingSetConfig,
    lake: LakeResource,
    warehouse: WarehouseResource,
) -> Iterator[dg.MaterializeResult]:
    h = config.horizon_minutes
    try:
        check_training_config(h, config.window_days)
        features, labels = lake.scan_table(tables.FEATURES), lake.scan_table(tables.LABELS)
        if features is None or labels is None:
            raise dg.Failure("gold/features and gold/labels have no partitions yet; materialize them first")
        if (chosen := _instrument_filter(config.instruments)) is not None:
            features, labels = features.filter(chosen), labels.filter(chosen)
        ts = build_training_set(
            features,
            labels,
            horizon=h,
            window_days=config.window_days,
            as_of=datetime.now(UTC),
            instruments=config.instruments,
        )
    except TrainingSetError as exc:
        raise dg.Failure(str(exc)) from exc
    if ts.unlabelled.height:
        context.log.warning(
            f"{ts.unlabelled.height} feature partitions in the window have no {h}-minute labels: "
            f"{ts.unlabelled.head(10).rows()}; materialize gold/labels for them"
        )
    df = ts.rows
    info = lake.write_table(df, tables.TRAINING_SET)
    lake.write_table(ts.summary, tables.TRAINING_SUMMARY)
    warehouse.refresh_views(lake, [tables.TRAINING_SET, tables.TRAINING_SUMMARY])
    context.log.info(f"training set: {df.height} rows {df['ts'].min()} .. {df['ts'].max()}, horizon {h} min")
    yield dg.MaterializeResult(
        asset_key=tables.TRAINING_SET.key, metadata=_set_metadata(ts, info.bytes, config)
    )
    yield dg.MaterializeResult(
        asset_key=tables.TRAINING_SUMMARY.key,
        metadata={"rows": ts.summary.height, "summary": dg.MetadataValue.md(frame_markdown(ts.summary))},
    )


def _instrument_filter(keys: list[str]) -> pl.Expr | None:
    """Row filter on (exchange, symbol) for instrument keys (unknown keys: a clear error)."""
    if not keys:
        return None
    try:
        insts = [load_universe().instrument(k) for k in keys]
    except SettingsError as exc:
        raise TrainingSetError(f"training set: {exc}") from exc
    return pl.any_horizontal(
        [(pl.col("exchange") == i.exchange) & (pl.col("symbol") == i.symbol) for i in insts]
    )


def _set_metadata(ts: TrainingSet, size: int, config: TrainingSetConfig) -> dict[str, object]:
    """The training set's materialization metadata: size, span, cut-off, horizon, window, instruments."""
    df = ts.rows
    return {
        "rows": dg.MetadataValue.int(df.height),
        "bytes": dg.MetadataValue.int(size),
        "time_from": str(df["ts"].min()),
        "time_to": str(df["ts"].max()),
        "as_of": str(ts.as_of),
        "horizon_minutes": ts.horizon,
        "window_days": config.window_days,
        "instruments": dg.MetadataValue.json(sorted(f"{e} {s}" for e, s in df.select(KEYS).unique().rows())),
        "unlabelled_feature_partitions": ts.unlabelled.height,
    }
