"""MLflow registry round trip on a real local SQLite tracking store: register, alias, load, predict."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import polars as pl
import pytest
from mlflow import MlflowClient

from crypto_platform.ml import drift_reference, registry
from crypto_platform.ml.evaluation import GateDecision, forecast_metrics, skill_gate
from crypto_platform.ml.training import TrainResult, predict, train
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
    assert registry.champion_metrics(store, MODEL, frame) is None  # empty registry: nothing to beat
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


def _global_mlflow_state() -> tuple[str, str | None, str | None]:
    env = os.environ
    return mlflow.get_tracking_uri(), env.get("MLFLOW_TRACKING_URI"), env.get("MLFLOW_REGISTRY_URI")


@pytest.mark.slow
def test_registry_calls_leave_the_global_mlflow_state_alone(
    champion: registry.ModelVersionInfo, store: str
) -> None:
    before = _global_mlflow_state()
    registry.load_champion(store, MODEL)
    registry.champion_info(store, MODEL)
    after = _global_mlflow_state()
    assert after == before
    assert store not in (after[1] or "") and store not in (after[2] or "")


def test_no_champion_is_a_named_error(store: str) -> None:
    with pytest.raises(registry.NoChampionError, match="no-such-model"):
        registry.load_champion(store, "no-such-model")


def test_a_store_not_created_yet_has_no_champion_and_the_lookup_leaves_it_uncreated(tmp_path: Path) -> None:
    from crypto_platform.ml import registry_lookup

    uri = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    with pytest.raises(registry.NoChampionError, match=f"no 'champion' version of .* at {re.escape(uri)}"):
        registry_lookup.alias_info(uri, MODEL, registry.CHAMPION)
    with pytest.raises(registry.NoAliasError, match="no 'challenger' version"):
        registry_lookup.alias_info(uri, MODEL, registry.CHALLENGER)
    assert not (tmp_path / "mlflow").exists()  # answered without MLflow creating the store


@pytest.mark.slow
def test_register_and_load_the_champion_by_alias(
    champion: registry.ModelVersionInfo, result: TrainResult, frame: pl.DataFrame, store: str
) -> None:
    assert champion.alias == "champion" and champion.promoted and champion.version == "1"
    # empty_frac_60 is 0 on every planted bar: not learned from, not recorded, never fed to the model
    assert champion.feature_cols == [c for c in FEATURE_COLUMNS if c != "empty_frac_60"]
    assert champion.horizon == HORIZON and result.feature_cols == champion.feature_cols
    assert champion.eval_window_start == result.holdout_start.isoformat()
    assert champion.eval_window_end == result.holdout_end.isoformat()

    rows = frame.tail(50)
    expected = predict(result.booster, rows, result.feature_cols)

    # the plain MLflow way, as any consumer would do it (tracking URI from the environment)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", store)
        model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    got = np.asarray(model.predict(rows.select(FEATURE_COLUMNS).to_pandas()), dtype=float)
    assert np.allclose(got, expected, rtol=1e-12, atol=0)

    loaded = registry.load_champion(store, MODEL)
    assert loaded.info.version == "1"
    assert np.allclose(loaded.predict(rows), expected, rtol=1e-12, atol=0)

    signature_cols = [c["name"] for c in model.metadata.get_input_schema().to_dict()]
    assert signature_cols == result.feature_cols  # the columns it learned from, nothing else


@pytest.mark.slow
def test_run_holds_params_metrics_importance_and_drift_reference(
    champion: registry.ModelVersionInfo, result: TrainResult, frame: pl.DataFrame, store: str
) -> None:
    client = MlflowClient(tracking_uri=store)
    run = client.get_run(champion.run_id)
    m = run.data.metrics
    for forecast in ["model", "zero", "momentum"]:
        assert f"{forecast}_mae" in m and f"{forecast}_rmse" in m
    assert m["model_rank_ic"] == pytest.approx(result.evaluation.model.rank_ic)
    assert m["best_trial_value"] == pytest.approx(result.best_value)
    assert "zero_rank_ic" not in m  # undefined for a constant forecast: not logged as a number
    assert run.data.params["horizon"] == str(HORIZON)
    assert run.data.params["lgb_num_leaves"] == str(result.best_params["num_leaves"])
    artifacts = {a.path for a in client.list_artifacts(champion.run_id)}
    assert {"feature_importance.csv", "evaluation.csv", "gate.json", "drift"} <= artifacts

    logged = drift_reference.reference_file(store, champion)
    reference = pl.read_parquet(io.BytesIO(logged))
    assert reference.height == 300
    assert set(FEATURE_COLUMNS) <= set(reference.columns)
    assert champion.tags["drift_reference"].endswith("drift/reference_features.parquet")
    assert champion.tags["drift_reference_sha256"] == hashlib.sha256(logged).hexdigest()  # what was logged


@pytest.mark.slow
def test_a_challenger_that_fails_the_gate_keeps_the_champion(
    champion: registry.ModelVersionInfo, result: TrainResult, frame: pl.DataFrame, store: str
) -> None:
    holdout = frame.filter(pl.col("ts") >= result.holdout_start)
    current = registry.champion_metrics(store, MODEL, holdout)
    assert current is not None
    mine = forecast_metrics(
        predict(result.booster, holdout, result.feature_cols), holdout["label"].to_numpy(), overlap=HORIZON
    )
    assert current.rank_ic == pytest.approx(mine.rank_ic)  # same model, same window

    decision = skill_gate(result.evaluation.model, result.evaluation.momentum, current)
    assert not decision.promote  # equal to the champion is not better
    second = registry.log_and_register(
        result,
        tracking_uri=store,
        model_name=MODEL,
        feature_cols=FEATURE_COLUMNS,
        reference_features=frame.sample(100, seed=2),
        input_example=frame.head(3).to_pandas(),
        decision=decision,
    )
    assert second.version == "2" and second.alias == "challenger" and not second.promoted
    assert any(r.startswith("FAIL") and "champion" in r for r in second.reasons)
    client = MlflowClient(tracking_uri=store, registry_uri=store)
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == "1"
    assert str(client.get_model_version_by_alias(MODEL, "challenger").version) == "2"
    assert "not promoted" in client.get_model_version(MODEL, "2").description
    assert registry.load_champion(store, MODEL).info.version == "1"
    challenger = registry.load_alias(store, MODEL, "challenger")
    assert challenger.info.version == "2" and challenger.info.alias == "challenger"
    with pytest.raises(registry.NoAliasError, match="'canary'"):
        registry.load_alias(store, MODEL, "canary")


@pytest.mark.slow
def test_promotion_moves_the_alias(
    champion: registry.ModelVersionInfo, result: TrainResult, frame: pl.DataFrame, store: str
) -> None:
    promoted = registry.log_and_register(
        result,
        tracking_uri=store,
        model_name=MODEL,
        feature_cols=FEATURE_COLUMNS,
        reference_features=frame.sample(100, seed=3),
        input_example=frame.head(3),
        decision=GateDecision(promote=True, reasons=["PASS forced for the test"]),
    )
    assert registry.champion_info(store, MODEL).version == promoted.version
    with pytest.raises(ValueError, match="feature_cols"):
        registry.log_and_register(
            result,
            tracking_uri=store,
            model_name=MODEL,
            feature_cols=FEATURE_COLUMNS[:-1],
            reference_features=frame,
            input_example=frame.head(1),
            decision=GateDecision(False, []),
        )


@pytest.mark.slow
def test_champion_loads_from_a_plain_python_process(
    champion: registry.ModelVersionInfo, frame: pl.DataFrame, store: str, tmp_path: Path
) -> None:
    rows = frame.tail(5).select(FEATURE_COLUMNS).to_pandas()
    rows.to_parquet(tmp_path / "rows.parquet")
    code = (
        "import json, mlflow, pandas as pd, sys\n"
        f"mlflow.set_tracking_uri({store!r})\n"
        f"m = mlflow.pyfunc.load_model('models:/{MODEL}@champion')\n"
        f"values = m.predict(pd.read_parquet({str(tmp_path / 'rows.parquet')!r}))\n"
        "ours = sorted(n for n in sys.modules if n.split('.')[0] == 'crypto_platform')\n"
        "print(json.dumps({'values': [float(v) for v in values], 'ours': ours}))\n"
    )
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=True,
    )
    got = json.loads(out.stdout.strip().splitlines()[-1])
    expected = registry.load_champion(store, MODEL).predict(pd.DataFrame(rows))
    assert np.allclose(got["values"], expected, rtol=1e-9)
    # the model is self-contained (a LightGBM flavour, not a wrapper of this project's code)
    assert got["ours"] == []


@pytest.mark.slow
def test_the_champion_is_rescored_on_the_new_window_or_named_incomparable(
    result: TrainResult, frame: pl.DataFrame, tmp_path: Path
) -> None:
    store = mlflow_store(tmp_path)
    window = frame.filter(pl.col("ts") >= result.holdout_start)
    nothing = registry.compare_champion(store, MODEL, window, horizon=HORIZON)
    assert nothing.info is None and nothing.metrics is None and nothing.incomparable is None

    # A champion trained on other feature columns (a subset) is still scored, with its own columns.
    subset = FEATURE_COLUMNS[:12]
    small = train(
        frame, subset, horizon=HORIZON, n_trials=2, n_folds=2, holdout_fraction=0.25, seed=3, max_rounds=40
    )
    png = b"\x89PNG\r\n\x1a\n not really a png, just bytes"
    old = registry.log_and_register(
        small,
        tracking_uri=store,
        model_name=MODEL,
        feature_cols=subset,
        reference_features=frame.sample(100, seed=1),
        input_example=frame.head(3),
        decision=GateDecision(promote=True, reasons=["PASS forced for the test"]),
        extra_artifacts={"plots/predicted_vs_realized.png": png},
    )
    same = registry.compare_champion(store, MODEL, window, horizon=HORIZON)
    assert same.info is not None and same.info.version == old.version and same.incomparable is None
    expected = forecast_metrics(
        predict(small.booster, window, subset), window["label"].to_numpy(), overlap=HORIZON
    )
    assert same.metrics == expected
    assert same.notes == []  # trained before the window: a fair, out-of-sample comparison
    in_sample = registry.compare_champion(store, MODEL, frame, horizon=HORIZON)
    assert in_sample.metrics is not None and "partly in-sample" in in_sample.notes[0]

    # Incomparable: another horizon, or a window without one of its features.
    other_h = registry.compare_champion(store, MODEL, window, horizon=15)
    assert other_h.metrics is None
    assert other_h.incomparable == f"v{old.version} forecasts 5-minute returns, this model 15-minute ones"
    lacking = registry.compare_champion(store, MODEL, window.drop(subset[3]), horizon=HORIZON)
    assert lacking.metrics is None
    assert f"['{subset[3]}'] are not in the evaluation window" in str(lacking.incomparable)

    # The extra artifact and the holdout predictions are in the run, byte for byte / row for row.
    dst = str(tmp_path / "downloads")
    got = Path(
        mlflow.artifacts.download_artifacts(
            run_id=old.run_id,
            artifact_path="plots/predicted_vs_realized.png",
            dst_path=dst,
            tracking_uri=store,
        )
    )
    assert got.read_bytes() == png
    hold = pl.read_parquet(
        mlflow.artifacts.download_artifacts(
            run_id=old.run_id, artifact_path=registry.HOLDOUT_ARTIFACT, dst_path=dst, tracking_uri=store
        )
    )
    assert hold.equals(small.holdout)
    with pytest.raises(ValueError, match="must be relative"):
        registry.log_and_register(
            small,
            tracking_uri=store,
            model_name=MODEL,
            feature_cols=subset,
            reference_features=frame.head(10),
            input_example=frame.head(3),
            decision=GateDecision(False, []),
            extra_artifacts={"../escape.png": png},
        )


@pytest.mark.slow
def test_model_cache_reuses_a_loaded_version_and_serves_a_new_champion_at_once(
    result: TrainResult, frame: pl.DataFrame, tmp_path: Path
) -> None:
    from crypto_platform.ml import model_cache

    store = mlflow_store(tmp_path)
    decision = skill_gate(result.evaluation.model, result.evaluation.momentum, None)

    def register() -> registry.ModelVersionInfo:
        return registry.log_and_register(
            result,
            tracking_uri=store,
            model_name=MODEL,
            feature_cols=FEATURE_COLUMNS,
            reference_features=frame.sample(100, seed=3),
            input_example=frame.head(3),
            decision=decision,
        )

    assert register().version == "1"
    loads = model_cache.STATS.loads
    first = model_cache.load_alias(store, MODEL, registry.CHAMPION)
    again = model_cache.load_alias(store, MODEL, registry.CHAMPION)
    assert model_cache.STATS.loads == loads + 1  # loaded once, then served from the process cache
    assert again.model is first.model and again.info.version == "1"
    rows = frame.head(50)
    np.testing.assert_array_equal(again.predict(rows), registry.load_champion(store, MODEL).predict(rows))

    assert register().version == "2"  # promoted: the alias moves; the next call serves it
    newer = model_cache.load_alias(store, MODEL, registry.CHAMPION)
    assert newer.info.version == "2" and newer.model is not first.model
    assert model_cache.STATS.loads == loads + 2
    # the key carries the digest of the recorded artifact checksums, not only the version number
    key = model_cache.model_key(store, newer.info)
    assert key.version == "2" and len(key.digest) == 64


@pytest.mark.slow
def test_a_fresh_process_serves_the_champion_from_the_verified_file_cache_without_mlflow(
    champion: registry.ModelVersionInfo, store: str, frame: pl.DataFrame, tmp_path: Path
) -> None:
    from crypto_platform.ml import model_cache, registry_lookup

    # the alias read straight from the SQLite store is MLflow's own answer
    assert registry_lookup.alias_info(store, MODEL, registry.CHAMPION) == registry.alias_info(
        store, MODEL, registry.CHAMPION
    )
    with pytest.raises(registry.NoAliasError, match="no 'nope' version"):
        registry_lookup.alias_info(store, MODEL, "nope")
    assert registry_lookup.alias_info("http://mlflow.internal:5000", MODEL, registry.CHAMPION) is None

    cache = tmp_path / "models"
    model_cache.clear()
    first = model_cache.load_alias(store, MODEL, registry.CHAMPION, cache_dir=cache)
    current = registry.alias_info(store, MODEL, registry.CHAMPION).version  # tests above may move the alias
    assert (first.source, first.engine, first.info.version) == ("registry", "numpy", current)
    model_cache.clear()  # as a new process: only the file cache is left
    again = model_cache.load_alias(store, MODEL, registry.CHAMPION, cache_dir=cache)
    assert again.source == "file cache"
    rows = frame.head(200)
    np.testing.assert_array_equal(again.predict(rows), registry.load_champion(store, MODEL).predict(rows))

    [cached] = cache.rglob("model.lgb")
    cached.write_text(cached.read_text().replace("leaf_value=", "leaf_value=1 ", 1))  # tampered
    model_cache.clear()
    assert model_cache.load_alias(store, MODEL, registry.CHAMPION, cache_dir=cache).source == "registry"

    code = (
        "import sys; from pathlib import Path; from crypto_platform.ml import model_cache; "
        f"m = model_cache.load_alias({store!r}, {MODEL!r}, 'champion', cache_dir=Path({str(cache)!r})); "
        "heavy = ('mlflow', 'lightgbm', 'sklearn', 'scipy'); "
        "print(m.source, m.engine, *sorted(k for k in heavy if k in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["file", "cache", "numpy"]  # no MLflow, LightGBM, scikit-learn or scipy imported


@pytest.mark.slow
def test_the_drift_reference_is_served_from_the_verified_file_cache_and_registration_fills_it(
    champion: registry.ModelVersionInfo, store: str, tmp_path: Path
) -> None:
    from crypto_platform.ml import model_cache

    info = registry.alias_info(store, MODEL, registry.CHAMPION)  # tests above may move the alias
    logged = pl.read_parquet(io.BytesIO(drift_reference.reference_file(store, info)))
    cache = tmp_path / "models"
    assert model_cache.load_reference(store, info, cache_dir=cache).equals(logged)  # through MLflow
    [cached] = cache.rglob(model_cache.REFERENCE_FILE)
    cached.write_bytes(cached.read_bytes()[:-100])  # damaged: not served, read from the registry again
    assert model_cache.load_reference(store, info, cache_dir=cache).equals(logged)
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == info.tags["drift_reference_sha256"]

    # registration put the version's model and reference into this machine's default file cache: a new
    # process (the next live run) serves and drift-checks it without importing MLflow
    code = (
        "import sys; from crypto_platform.ml import model_cache, registry_lookup; "
        f"info = registry_lookup.resolve({store!r}, {MODEL!r}, 'champion'); "
        f"m = model_cache.load_alias({store!r}, {MODEL!r}, 'champion'); "
        f"ref = model_cache.load_reference({store!r}, info); "
        "print(m.source, m.info.version, ref.height, 'mlflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["file", "cache", info.version, str(logged.height), "False"]

    # a reference in the store that differs from the registered one is named, never compared with
    artifacts = Path(store.removeprefix("sqlite:///")).parent / "artifacts"
    [artifact] = [p for p in artifacts.rglob("reference_features.parquet") if info.run_id in str(p)]
    original = artifact.read_bytes()
    try:
        artifact.write_bytes(original + b"x")
        with pytest.raises(
            registry.ModelArtifactError, match=r"drift reference .* differs from the one registered"
        ):
            drift_reference.reference_file(store, info)
    finally:
        artifact.write_bytes(original)
