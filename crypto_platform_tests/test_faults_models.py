"""Fault injection for models (issue 11, item 4): a broken champion is a named error, never an abort.

A real model is trained and registered in a real MLflow store (SQLite in tmp); its artifact files are
then truncated or deleted on disk. Before the fix a truncated model.lgb reached LightGBM, whose parser
aborts the whole process (SIGABRT: no exception, no failure event, the run stays STARTED); a missing
artifact gave `MlflowException: No such artifact: ''`. Each test restores the intact artifact.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import dagster as dg
import numpy as np
import polars as pl
import pytest
from mlflow import MlflowClient

from crypto_platform.ml import registry
from crypto_platform.ml.evaluation import skill_gate
from crypto_platform.ml.training import TrainResult, predict
from crypto_platform.transforms.features import FEATURE_COLUMNS
from crypto_platform_tests.fixtures import HORIZON, mlflow_store, registry_model

MODEL = "btc_5m_return"


@pytest.fixture(scope="module")
def frame() -> pl.DataFrame:
    return registry_model()[0]


@pytest.fixture(scope="module")
def result() -> TrainResult:
    return registry_model()[1]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    return mlflow_store(tmp_path_factory.mktemp("mlflow"))


@pytest.fixture(scope="module")
def champion(result: TrainResult, frame: pl.DataFrame, store: str) -> registry.ModelVersionInfo:
    ev = result.evaluation
    decision = skill_gate(ev.model, ev.momentum, None)
    assert decision.promote, decision.reasons
    return registry.log_and_register(
        result,
        tracking_uri=store,
        model_name=MODEL,
        feature_cols=FEATURE_COLUMNS,
        reference_features=frame.sample(300, seed=1),
        input_example=frame.head(5),
        decision=decision,
    )


@pytest.fixture
def model_dir(champion: registry.ModelVersionInfo, store: str, tmp_path: Path) -> Iterator[Path]:
    """The champion's model artifact folder on disk; restored intact after the test."""
    client = MlflowClient(tracking_uri=store, registry_uri=store)
    folder = Path(urlparse(client.get_model_version_download_uri(MODEL, champion.version)).path)
    assert (folder / "model.lgb").is_file()
    backup = tmp_path / "intact"
    shutil.copytree(folder, backup)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(backup, folder)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.slow
def test_registration_records_the_sha256_of_every_model_file(
    champion: registry.ModelVersionInfo, model_dir: Path
) -> None:
    recorded = json.loads(champion.tags[registry.CHECKSUM_TAG])
    on_disk = {
        p.relative_to(model_dir).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in model_dir.rglob("*")
        if p.is_file()
    }
    assert recorded == on_disk
    assert {"model.lgb", "MLmodel"} <= set(recorded)


@pytest.mark.slow
def test_an_intact_champion_loads_and_predicts_like_the_trained_booster(
    champion: registry.ModelVersionInfo, model_dir: Path, result: TrainResult, frame: pl.DataFrame, store: str
) -> None:
    rows = frame.tail(200)
    loaded = registry.load_champion(store, MODEL)
    assert loaded.info.version == champion.version
    assert np.array_equal(loaded.predict(rows), predict(result.booster, rows, result.feature_cols))


@pytest.mark.slow
def test_a_truncated_model_file_is_a_named_error_not_an_abort(
    champion: registry.ModelVersionInfo, model_dir: Path, store: str
) -> None:
    _truncate(model_dir / "model.lgb")
    with pytest.raises(registry.ModelArtifactError) as err:
        registry.load_champion(store, MODEL)
    text = str(err.value)
    assert f"registered model '{MODEL}' version {champion.version} ('champion')" in text
    assert "model.lgb is corrupt" in text and str(model_dir) in text
    with pytest.raises(registry.ModelArtifactError, match=r"model\.lgb is corrupt"):
        registry.load_version(store, MODEL, champion.version)


@pytest.mark.slow
def test_a_missing_model_file_and_a_missing_artifact_are_named(
    champion: registry.ModelVersionInfo, model_dir: Path, store: str
) -> None:
    (model_dir / "model.lgb").unlink()
    with pytest.raises(registry.ModelArtifactError, match=r"missing file\(s\) \['model.lgb'\]") as err:
        registry.load_champion(store, MODEL)
    assert f"'{MODEL}' version {champion.version}" in str(err.value)

    shutil.rmtree(model_dir)
    with pytest.raises(registry.ModelArtifactError) as err:
        registry.load_champion(store, MODEL)
    text = str(err.value)
    assert f"'{MODEL}' version {champion.version} ('champion')" in text
    assert f"model artifact at file://{model_dir} is missing" in text and "\n" not in text


@pytest.mark.slow
def test_a_version_without_recorded_checksums_still_refuses_a_truncated_file(
    champion: registry.ModelVersionInfo, model_dir: Path, store: str, result: TrainResult, frame: pl.DataFrame
) -> None:
    client = MlflowClient(tracking_uri=store, registry_uri=store)
    client.delete_model_version_tag(MODEL, champion.version, registry.CHECKSUM_TAG)
    try:
        rows = frame.tail(20)  # registered before checksums existed: intact files still load
        assert np.array_equal(
            registry.load_champion(store, MODEL).predict(rows),
            predict(result.booster, rows, result.feature_cols),
        )
        _truncate(model_dir / "model.lgb")
        with pytest.raises(registry.ModelArtifactError, match=r"model\.lgb .* is incomplete"):
            registry.load_champion(store, MODEL)
    finally:
        client.set_model_version_tag(
            MODEL, champion.version, registry.CHECKSUM_TAG, champion.tags[registry.CHECKSUM_TAG]
        )


@pytest.mark.slow
def test_a_broken_champion_fails_the_run_with_a_failure_event(model_dir: Path, store: str) -> None:
    @dg.asset
    def served() -> None:
        registry.load_champion(store, MODEL)

    _truncate(model_dir / "model.lgb")
    with dg.DagsterInstance.ephemeral() as instance:
        run = dg.materialize([served], instance=instance, raise_on_error=False)
        assert not run.success
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
    [failure] = run.get_step_failure_events()
    cause = failure.step_failure_data.error.cause
    assert cause.cls_name == "ModelArtifactError" and "model.lgb is corrupt" in cause.message


@pytest.mark.slow
def test_a_broken_champion_is_incomparable_not_a_training_crash(
    champion: registry.ModelVersionInfo, model_dir: Path, result: TrainResult, frame: pl.DataFrame, store: str
) -> None:
    _truncate(model_dir / "model.lgb")
    window = frame.filter(pl.col("ts") >= result.holdout_start)
    comparison = registry.compare_champion(store, MODEL, window, horizon=HORIZON)
    assert comparison.metrics is None and comparison.info is not None
    assert comparison.incomparable is not None
    assert comparison.incomparable.startswith(f"v{champion.version} cannot be loaded")
    assert "model.lgb is corrupt" in comparison.incomparable
