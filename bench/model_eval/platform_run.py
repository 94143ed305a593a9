"""The platform part of model_eval: a temporary project, import -> gold -> model (twice), then read back.

Everything here goes through the platform (Dagster `materialize` on an ephemeral instance, the code
location's resources, the DuckDB warehouse, MLflow); `PlatformRun` is what it recorded.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import polars as pl

DATA_REL = Path("../shared/data/candles/ftx_btcperp_1m_2022-01.csv")
FTX = "ftx.BTC-USD-USD"
INSTRUMENTS_YAML = f"""\
# model_eval: one instrument, history only as imported 1-minute OHLCV
start_date: "2021-12-01"
instruments:
  - exchange: ftx
    symbol: BTC/USD:USD
    source: candles
    path: {DATA_REL.as_posix()}
    format: csv
    volume_unit: quote
"""
SILVER_SQL = (
    "select count(*) as n, min(ts) as first, max(ts) as last, sum(is_empty::int) as empty, "
    "count(distinct origin) as n_origins, min(origin) as origin, "
    "sum((abs(vwap - close) > 1e-9 * close)::int) as vwap_not_close, "
    "count(buy_volume) as with_taker_split, count(trade_count) as with_trade_count "
    "from silver.candles_1m"
)
Lap = Callable[[str, float], float]


@dataclass(frozen=True)
class TrainingOptions:
    """The gold/training_set and gold/model config of the run (the CLI flags)."""

    horizon: int = 5
    n_trials: int = 20
    seed: int = 42
    folds: int = 4
    holdout: float = 0.2
    window_days: float = 32.0
    retrain_seed: int = 1


@dataclass
class PlatformRun:
    """What the platform produced, read back from the warehouse, the Dagster instance and MLflow."""

    silver: dict[str, Any]
    n_days: int
    training_meta: dict[str, Any]
    training_set: pl.DataFrame
    evals: pl.DataFrame  # gold.model_evaluations rows of the first version
    model_meta: dict[str, Any]
    version: Any  # registry.ModelVersionInfo of the first version
    params: dict[str, str]
    metrics: dict[str, float]
    gate: dict[str, Any]
    importance: pl.DataFrame
    holdout: pl.DataFrame
    mlflow_check: str
    second: dict[str, Any]  # the seed-1 retrain: metadata and its evaluations rows
    second_evals: pl.DataFrame
    artifacts: list[str]
    model_name: str


def use_temp_project(project: Path) -> None:
    """Point the platform at a temporary project (instruments file, lake, warehouse, MLflow, Dagster)."""
    (project / "instruments.yaml").write_text(INSTRUMENTS_YAML)
    (project / "dagster_home").mkdir()
    (project / "mlflow").mkdir()
    # Set before any crypto_platform import: partitions come from the instruments file at import,
    # and the code location's resources read these variables (as a deployment would set them).
    os.environ.update(
        {
            "CRYPTO_INSTRUMENTS": str(project / "instruments.yaml"),
            "CRYPTO_LAKE_ROOT": str(project / "lake"),
            "CRYPTO_WAREHOUSE_PATH": str(project / "warehouse.duckdb"),
            "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow' / 'mlflow.db'}",
            "DAGSTER_HOME": str(project / "dagster_home"),
        }
    )


def model_config(opts: TrainingOptions, seed: int) -> dict:
    """Run config of gold/training_set and gold/model."""
    return {
        "gold_training_set": {
            "config": {"window_days": opts.window_days, "horizon_minutes": opts.horizon, "instruments": [FTX]}
        },
        "gold_model": {
            "config": {
                "n_trials": opts.n_trials,
                "seed": seed,
                "n_folds": opts.folds,
                "holdout_fraction": opts.holdout,
                "num_threads": 1,
            }
        },
    }


@dataclass
class _Session:
    """The gold assets, the code location's resources and one ephemeral Dagster instance."""

    assets: list
    resources: dict[str, Any]
    instance: Any

    def materialize(self, selection: list, *, tags: dict | None = None, config: dict | None = None) -> None:
        """Materialize `selection`; raise if the run fails."""
        import dagster as dg

        result = dg.materialize(
            self.assets,
            selection=selection,
            resources=self.resources,
            instance=self.instance,
            tags=tags,
            run_config={"ops": config or {}},
        )
        if not result.success:
            raise RuntimeError(f"model_eval: materializing {selection} failed")

    def latest_meta(self, key: Any) -> dict[str, Any]:
        """Metadata of the latest materialization of `key`."""
        event = self.instance.get_latest_materialization_event(key)
        return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def _import_candles(s: _Session) -> list[date]:
    """import_candles_job -> silver/candles_1m; the UTC days it materialized."""
    import dagster as dg

    from crypto_platform.assets import history

    lake, warehouse = s.resources["lake"], s.resources["warehouse"]
    imported = history.import_candles_job.execute_in_process(
        run_config=history.run_config(FTX),
        instance=s.instance,
        resources={"lake": lake, "warehouse": warehouse},
    )
    if not imported.success:
        raise RuntimeError("model_eval: import_candles_job failed")
    keys = s.instance.get_materialized_partitions(dg.AssetKey(["silver", "candles_1m"]))
    return sorted({date.fromisoformat(k.split("|")[0]) for k in keys})


def _train_twice(s: _Session, opts: TrainingOptions, days: list[date], lap: Lap) -> tuple[dict, dict, dict]:
    """gold features/labels, training set + model, the model again: metadata (training, model, second)."""
    from crypto_platform import tables
    from crypto_platform.partitions import multi_key

    t = time.perf_counter()
    tags = {
        "dagster/asset_partition_range_start": multi_key(days[0], FTX),
        "dagster/asset_partition_range_end": multi_key(days[-1], FTX),
    }
    s.materialize([tables.FEATURES.key, tables.LABELS.key], tags=tags)
    t = lap("gold features + labels", t)
    training = [
        t.key for t in (tables.TRAINING_SET, tables.TRAINING_SUMMARY, tables.MODEL, tables.MODEL_EVALUATIONS)
    ]
    s.materialize(training, config=model_config(opts, opts.seed))
    t = lap("gold training_set + model", t)
    training_meta, model_meta = s.latest_meta(tables.TRAINING_SET.key), s.latest_meta(tables.MODEL.key)
    # the model alone: same training set, so the same evaluation window for the champion comparison
    retrain = {"gold_model": model_config(opts, opts.retrain_seed)["gold_model"]}
    s.materialize([tables.MODEL.key, tables.MODEL_EVALUATIONS.key], config=retrain)
    lap(f"gold model again (seed {opts.retrain_seed})", t)
    return training_meta, model_meta, s.latest_meta(tables.MODEL.key)


def run_platform(opts: TrainingOptions, lap: Lap) -> PlatformRun:
    """Import -> features/labels -> training set -> model (twice), then read back what was produced."""
    import dagster as dg

    from crypto_platform.assets import gold
    from crypto_platform.definitions import build_resources
    from crypto_platform.resources.lake import LakeResource
    from crypto_platform.resources.warehouse import WarehouseResource
    from crypto_platform.settings import load_universe

    if load_universe().keys != [FTX]:
        raise RuntimeError(f"model_eval: expected the temporary universe [{FTX}], got {load_universe().keys}")
    resources = build_resources()  # the code location's resources, pointed at the temp project by env
    with dg.DagsterInstance.ephemeral() as instance:
        session = _Session(dg.load_assets_from_modules([gold]), resources, instance)
        t = time.perf_counter()
        days = _import_candles(session)
        lap("import_candles_job -> silver", t)
        metas = _train_twice(session, opts, days, lap)
    t = time.perf_counter()
    # the same locations as plain resources (the code location's hold EnvVars, resolved only in runs)
    reader = _Reader(
        uri=os.environ["MLFLOW_TRACKING_URI"],  # what the resource resolves (its EnvVar)
        model_name=resources["mlflow_registry"].model_name,
        warehouse=WarehouseResource(path=os.environ["CRYPTO_WAREHOUSE_PATH"]),
        lake=LakeResource(root=os.environ["CRYPTO_LAKE_ROOT"]),
    )
    out = reader.read_back(days, *metas)
    lap("read back: warehouse, MLflow run, load by alias", t)
    return out


@dataclass(frozen=True)
class _Artifacts:
    paths: list[str]
    gate: dict[str, Any]
    importance: pl.DataFrame
    holdout: pl.DataFrame


@dataclass(frozen=True)
class _Reader:
    """Reads the evaluation as the platform recorded it: warehouse views, MLflow run, registered model."""

    uri: str
    model_name: str
    warehouse: Any
    lake: Any

    def sql(self, query: str) -> pl.DataFrame:
        """A query on the warehouse file, read-only."""
        con = duckdb.connect(str(self.warehouse.file), read_only=True)
        try:
            return con.sql(query).pl()
        finally:
            con.close()

    def evaluations(self, version: int) -> pl.DataFrame:
        """gold.model_evaluations rows of one model version."""
        return self.sql(f"select * from gold.model_evaluations where model_version = {version}")

    def artifacts(self, run_id: str) -> _Artifacts:
        """The run's artifact list, gate.json, feature importance and holdout predictions."""
        from mlflow import MlflowClient
        from mlflow.artifacts import download_artifacts

        from crypto_platform.ml import registry

        client = MlflowClient(tracking_uri=self.uri)
        paths = sorted(
            f.path
            for top in client.list_artifacts(run_id)
            for f in ([top] if not top.is_dir else client.list_artifacts(run_id, top.path))
        )
        with tempfile.TemporaryDirectory() as dst:

            def artifact(name: str) -> Path:
                return Path(
                    download_artifacts(run_id=run_id, artifact_path=name, dst_path=dst, tracking_uri=self.uri)
                )

            gate = json.loads(artifact("gate.json").read_text())
            importance = pl.read_csv(artifact("feature_importance.csv"))
            holdout = pl.read_parquet(artifact(registry.HOLDOUT_ARTIFACT))
        return _Artifacts(paths, gate, importance, holdout)

    def reload_check(self, info: Any, training_set: pl.DataFrame, holdout: pl.DataFrame) -> str:
        """The registered version, loaded back from MLflow, reproduces the holdout predictions of its run."""
        from crypto_platform.ml import registry

        loaded = registry.load_version(self.uri, self.model_name, int(info.version))
        key = ["ts", "exchange", "symbol"]
        rows = training_set.join(holdout.select(key), on=key, how="semi").sort(key)
        got = loaded.predict(rows)
        want = holdout.sort(key)["prediction"].to_numpy()
        same = got.shape == want.shape and bool(np.allclose(got, want, rtol=1e-12, atol=0))
        return (
            f"`{info.model_uri}` loaded back as an MLflow pyfunc model: its predictions on the "
            f"{rows.height:,} holdout rows of gold/training_set {'equal' if same else 'DIFFER FROM'} the "
            f"run's `{registry.HOLDOUT_ARTIFACT}`."
        )

    def read_back(
        self, days: list[date], training_meta: dict, model_meta: dict, second_meta: dict
    ) -> PlatformRun:
        """The evaluation as the platform recorded it: warehouse views, MLflow run, registered model."""
        from mlflow import MlflowClient

        from crypto_platform.ml import registry

        version = int(model_meta["version"])
        info = registry.version_info(self.uri, self.model_name, version)
        run = MlflowClient(tracking_uri=self.uri).get_run(info.run_id)
        arts = self.artifacts(info.run_id)
        from crypto_platform import tables

        training_set = self.lake.read_table(tables.TRAINING_SET)
        return PlatformRun(
            silver=self.sql(SILVER_SQL).row(0, named=True),
            n_days=len(days),
            training_meta=training_meta,
            training_set=training_set,
            evals=self.evaluations(version),
            model_meta=model_meta,
            version=info,
            params=dict(run.data.params),
            metrics=dict(run.data.metrics),
            gate=arts.gate,
            importance=arts.importance,
            holdout=arts.holdout,
            mlflow_check=self.reload_check(info, training_set, arts.holdout),
            second=second_meta,
            second_evals=self.evaluations(int(second_meta["version"])),
            artifacts=arts.paths,
            model_name=self.model_name,
        )
