"""gold/predictions: the served model's forecast per instrument and minute (`ml.serving` decides which
model is served and builds the rows)."""

from typing import Any

import dagster as dg
from pydantic import Field

from crypto_platform import tables
from crypto_platform.assets.gold.inputs import closes_for
from crypto_platform.metadata import summarize
from crypto_platform.ml.serving import Served, choose_model, prediction_rows
from crypto_platform.partitions import partitions_of, single_run
from crypto_platform.resources.lake import LakeResource
from crypto_platform.resources.mlflow import MlflowResource
from crypto_platform.resources.warehouse import WarehouseResource


class PredictionConfig(dg.Config):
    allow_unqualified_model: bool = Field(
        default=False,
        description=(
            "Serve the latest 'challenger' when no version qualifies as 'champion'. Off by default: a "
            "model without skill is never served unless you ask for it (the demo: only if none qualifies)."
        ),
    )


@dg.asset(
    key=tables.PREDICTIONS.key,
    deps=[tables.FEATURES.key, tables.MODEL.key],
    partitions_def=tables.PREDICTIONS.partitions_def,
    backfill_policy=single_run,
    group_name="gold",
    kinds={"parquet", "mlflow"},
    description=(
        "Batch predictions of the forward return per instrument and minute by the MLflow 'champion' "
        "model (loaded by alias), with the implied price and the model name and version."
    ),
)
def gold_predictions(
    context: dg.AssetExecutionContext,
    config: PredictionConfig,
    lake: LakeResource,
    warehouse: WarehouseResource,
    mlflow_registry: MlflowResource,
) -> dg.MaterializeResult:
    served = _served_model(mlflow_registry, config.allow_unqualified_model)
    model, qualified = served.model, served.qualified
    if not qualified:
        context.log.warning(
            f"serving UNQUALIFIED model {model.info.name} v{model.info.version} ('challenger'): "
            "allow_unqualified_model is set"
        )
    stats = []
    for part in partitions_of(context):
        feats = lake.read_partition(tables.FEATURES, part)
        if feats is None:
            raise dg.Failure(f"gold/features {part} is not materialized yet; materialize it first")
        candles = closes_for(lake, part)
        pred = model.predict(feats) if feats.height else []
        df = prediction_rows(feats, candles, pred, model.info, qualified)
        info = lake.write_partition(df, tables.PREDICTIONS, part)
        stats.append(
            {
                "partition": part.key,
                "rows": info.rows,
                "bytes": info.bytes,
                "from": df["ts"].min(),
                "to": df["ts"].max(),
            }
        )
    warehouse.refresh_views(lake, [tables.PREDICTIONS])
    meta = summarize(stats)
    meta.update(
        {
            "model": f"{model.info.name} v{model.info.version}",
            "alias": str(model.info.alias),
            "qualified": qualified,
            "model_cache": model.source,  # process / file cache / registry (downloaded)
            "model_engine": model.engine,
        }
    )
    return dg.MaterializeResult(metadata=meta)


def _served_model(res: MlflowResource, allow_unqualified: bool) -> Served[Any]:
    """`ml.serving.choose_model` over the MLflow registry; no servable model: a named run failure."""
    from crypto_platform.ml import model_cache
    from crypto_platform.ml.model_info import NoChampionError

    try:
        return choose_model(
            lambda alias: model_cache.load_alias(res.uri, res.model_name, alias),
            allow_unqualified=allow_unqualified,
            model_name=res.model_name,
            where=res.uri,
        )
    except NoChampionError as exc:
        raise dg.Failure(
            description=f"NoChampionError: {exc}",
            metadata={"model_name": res.model_name, "tracking_uri": res.uri},
        ) from exc
