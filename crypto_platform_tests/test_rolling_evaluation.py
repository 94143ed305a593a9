"""Rolling out-of-sample evaluation: exact figures against DuckDB SQL / scipy, the asset, model_skill.

The unit tests score a small frame and compare every figure with an independent computation; the
materialize test registers a real champion, writes features and labels of a planted market to a tmp
lake and scores a day the champion never saw, through Dagster's harness.
"""

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import polars as pl
import pytest
from scipy import stats

from crypto_platform import tables
from crypto_platform.assets.rolling_evaluation import model_skill
from crypto_platform.ml import registry
from crypto_platform.ml.baselines import fit_reversal
from crypto_platform.ml.rolling_evaluation import (
    FittedBaselines,
    cell_rows,
    pooled_skill,
    score_cell,
)
from crypto_platform.partitions import DayPartition
from crypto_platform.resources.lake import LakeResource
from crypto_platform.settings import load_universe
from crypto_platform.transforms.features import build_features
from crypto_platform.transforms.labels import forward_return_labels
from crypto_platform_tests.fixtures import (
    ASSETS,
    MODEL_NAME,
    evaluation,
    key,
    meta,
    mlflow_store,
    planted_candles,
    register_champion,
    resources,
    small_model,
    write_scores,
)

H = 5


def _frame(n: int = 400, seed: int = 1) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    ret = rng.normal(0, 1e-3, n)
    label = -0.3 * ret + rng.normal(0, 1e-3, n)
    label[::37] = 0.0  # some rows without a move: no call for the hit rate
    return pl.DataFrame(
        {
            "ts": [datetime(2024, 1, 1, tzinfo=UTC) + timedelta(minutes=i) for i in range(n)],
            "ret_1": rng.normal(0, 5e-4, n),
            "ret_5": ret,
            "ret_15": rng.normal(0, 2e-3, n),
            "label": label,
        }
    )


def _sql_scores(con: duckdb.DuckDBPyConnection, forecast: str) -> tuple:
    """n, rank IC (Pearson of average ranks), hit rate on non-zero pairs, MAE: DuckDB SQL."""
    return con.execute(
        f"""
        with r as (select {forecast} as f, label,
                          rank() over (order by {forecast})
                            + (count(*) over (partition by {forecast}) - 1) / 2.0 as rf,
                          rank() over (order by label) + (count(*) over (partition by label) - 1) / 2.0 as rl
                   from t)
        select count(*), corr(rf, rl),
               avg(case when f <> 0 and label <> 0 then (sign(f) = sign(label))::int end),
               count(case when f <> 0 and label <> 0 then 1 end),
               avg(abs(f - label))
        from r"""
    ).fetchone()


def test_score_cell_matches_duckdb_and_scipy() -> None:
    frame = _frame()
    pred = -0.25 * frame["ret_5"].to_numpy() + np.random.default_rng(2).normal(0, 2e-4, frame.height)
    reversal = fit_reversal(frame)  # fitted on the same frame: only the scoring is under test here
    scores = score_cell(frame, pred, FittedBaselines(reversal, None), horizon=H)
    assert scores["forecast"].to_list() == ["model", "zero", "momentum", "reversal"]
    con = duckdb.connect()
    t = frame.with_columns(pl.Series("model", pred), (reversal.sign * pl.col(reversal.column)).alias("rev"))
    con.register("t", t.to_arrow())
    for name, column in [("model", "model"), ("momentum", "ret_5"), ("reversal", "rev")]:
        n, ic, hit, n_dir, mae = _sql_scores(con, column)
        row = scores.filter(pl.col("forecast") == name).row(0, named=True)
        assert row["n"] == n == frame.height
        assert row["rank_ic"] == pytest.approx(ic, abs=1e-12)
        assert row["hit_rate"] == pytest.approx(hit, abs=1e-12)
        assert row["n_directional"] == n_dir
        assert row["mae"] == pytest.approx(mae, rel=1e-12)
        # the hit-rate p-value: one-sided binomial on the overlap-adjusted sample (hits / h, trials / h)
        k, m = round(hit * n_dir / H), round(n_dir / H)
        p = stats.binomtest(k, m, row["hit_rate_null"], alternative="greater").pvalue
        assert row["hit_p_value"] == pytest.approx(p, rel=1e-9)
    zero = scores.filter(pl.col("forecast") == "zero").row(0, named=True)
    assert zero["rank_ic"] is None and zero["mae"] == pytest.approx(float(np.abs(frame["label"]).mean()))
    assert scores.filter(pl.col("forecast") == "model")["model_advantage"][0] is None
    mom = scores.filter(pl.col("forecast") == "momentum").row(0, named=True)
    model_ic = scores.filter(pl.col("forecast") == "model")["rank_ic"][0]
    assert mom["model_advantage"] == pytest.approx(model_ic - mom["rank_ic"], abs=1e-12)
    assert 0.0 <= mom["model_advantage_p"] < 0.05  # the model reverses; momentum points the wrong way


def test_pooled_skill_is_the_row_weighted_mean_ic_and_the_exact_pooled_hit_rate() -> None:
    now = datetime(2024, 1, 3, tzinfo=UTC)
    cells = []
    for k, seed in enumerate([1, 2, 3]):
        frame = _frame(200 + 100 * k, seed)
        pred = -frame["ret_5"].to_numpy()
        scores = score_cell(frame, pred, FittedBaselines(None, None), horizon=H)
        cells.append(
            cell_rows(
                scores,
                exchange="sim",
                symbol=f"S{k}/USDT",
                day=date(2024, 1, 1),
                model_name="m",
                model_version="3",
                horizon=H,
                in_sample=False,
                scored_at=now,
            )
        )
    rows = pl.concat(cells)
    assert rows.columns[:3] == ["exchange", "symbol", "day"]
    con = duckdb.connect()
    con.register("r", rows.to_arrow())
    ic, hit, n = con.execute(
        "select sum(rank_ic * n) / sum(n), sum(hit_rate * n_directional) / sum(n_directional), sum(n)"
        " from r where forecast = 'model'"
    ).fetchone()
    model = pooled_skill(rows)[0]
    assert (model.forecast, model.cells, model.n) == ("model", 3, n)
    assert model.rank_ic == pytest.approx(ic, abs=1e-12)
    assert model.hit_rate == pytest.approx(hit, abs=1e-12)
    assert [p.forecast for p in pooled_skill(rows)] == ["model", "zero", "momentum"]


# ---------------------------------------------------------------------------------- the asset


def _write_planted_lake(lake: LakeResource) -> pl.DataFrame:
    """Features and 5-minute labels of the planted market (the champion's own market), per day."""
    candles = planted_candles(4000)
    feats, labels = build_features(candles), forward_return_labels(candles, H)
    universe = load_universe()
    for (symbol, day), df in feats.group_by("symbol", pl.col("ts").dt.date().alias("day")):
        part = DayPartition(universe.instrument(f"sim.{symbol.replace('/', '-')}"), day)
        lake.write_partition(df, tables.FEATURES, part)
        lake.write_partition(
            labels.filter((pl.col("symbol") == symbol) & (pl.col("ts").dt.date() == day)), tables.LABELS, part
        )
    return feats.join(labels, on=["exchange", "symbol", "ts"])


@pytest.mark.slow  # registers a model and materializes through Dagster's harness
def test_rolling_evaluation_scores_an_unseen_day_and_model_skill_judges_it(tmp_path: Path) -> None:
    lake = LakeResource(root=str(tmp_path / "lake"))
    joined = _write_planted_lake(lake)
    store = mlflow_store(tmp_path)
    frame, result, _ = small_model()
    info = register_champion(store, frame)
    day = date(2024, 5, 3)
    assert result.train_end < datetime(2024, 5, 3, tzinfo=UTC)  # the scored day is out of sample
    key = str(dg.MultiPartitionKey({"date": day.isoformat(), "instrument": "sim.BTC-USDT"}))
    with dg.DagsterInstance.ephemeral() as instance:
        res = dg.materialize(
            [*ASSETS, model_skill],
            selection=dg.AssetSelection.assets(tables.ROLLING_EVALUATION.key),
            partition_key=key,
            instance=instance,
            resources=resources(tmp_path, store),
        )
        assert res.success
        ev = evaluation(res, "model_skill")
    part = DayPartition(load_universe().instrument("sim.BTC-USDT"), day)
    rows = lake.read_partition(tables.ROLLING_EVALUATION, part)
    assert rows is not None
    assert rows["forecast"].to_list() == ["model", "zero", "momentum", "reversal", "ridge"]
    assert rows["model_version"].unique().to_list() == [info.version] and not rows["in_sample"].any()

    # independently: the registered champion loaded by MLflow, the day's rows, scored in DuckDB SQL
    champion = registry.load_champion(store, MODEL_NAME)
    t = joined.filter((pl.col("symbol") == "BTC/USDT") & (pl.col("ts").dt.date() == day))
    t = t.with_columns(pl.Series("model", champion.predict(t)))
    con = duckdb.connect()
    con.register("t", t.to_arrow())
    for name, column in [("model", "model"), ("momentum", "ret_5")]:
        n, ic, hit, _, mae = _sql_scores(con, column)
        row = rows.filter(pl.col("forecast") == name).row(0, named=True)
        assert (row["n"], row["rank_ic"], row["hit_rate"]) == (n, pytest.approx(ic), pytest.approx(hit))
        assert row["mae"] == pytest.approx(mae)
    assert rows.filter(pl.col("forecast") == "model")["rank_ic"][0] > 0.1  # the planted signal is learnt

    # the warehouse view and the check read the same rows
    view = duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True)
    assert view.execute("select count(*) from gold.rolling_evaluation").fetchone() == (5,)
    assert ev.passed and ev.metadata["sufficient"].value is True
    assert ev.metadata["rank_ic"].value == pytest.approx(rows["rank_ic"][0], abs=1e-6)


# ------------------------------------------------------------------------------- model_skill


def _skill(tmp: Path, instance: dg.DagsterInstance, partition_key: str | None = None):
    res = dg.materialize(
        [*ASSETS, model_skill],
        selection=dg.AssetSelection.checks(model_skill),
        instance=instance,
        resources=resources(tmp),
        tags={"dagster/partition": partition_key} if partition_key else None,
    )
    return evaluation(res, "model_skill")


def test_model_skill_judges_the_newest_scored_day_without_rescoring(tmp_path: Path) -> None:
    lake = LakeResource(root=str(tmp_path / "lake"))
    with dg.DagsterInstance.ephemeral() as instance:
        empty = _skill(tmp_path, instance)
        assert empty.passed and meta(empty, "n") == 0 and "not judged" in (empty.description or "")

        write_scores(lake, ["2022-01-10"], skill=-0.5)  # an old day the model got wrong
        write_scores(lake, ["2022-01-11"], skill=0.5)  # the newest day: skilled
        ok = _skill(tmp_path, instance)
        assert ok.passed and meta(ok, "days") == "2022-01-11" and meta(ok, "rank_ic") > 0.3
        stored = lake.read_partition(
            tables.ROLLING_EVALUATION,
            DayPartition(load_universe().instrument("sim.BTC-USDT"), date(2022, 1, 11)),
        )
        assert meta(ok, "rank_ic") == pytest.approx(stored["rank_ic"][0], abs=1e-6)
        assert meta(ok, "about_latest_data") is True and "momentum" in meta(ok, "best_baseline")

        old = _skill(tmp_path, instance, key("2022-01-10"))  # the run's partition: that day, about history
        assert not old.passed and old.severity == dg.AssetCheckSeverity.ERROR
        assert meta(old, "lost") is True and "rank IC" in (old.description or "")
        assert meta(old, "about_latest_data") is False

        write_scores(lake, ["2022-01-12"], skill=-0.5)  # the newest day turns against the market
        bad = _skill(tmp_path, instance)
        assert not bad.passed and bad.severity == dg.AssetCheckSeverity.ERROR and meta(bad, "rank_ic") < -0.3
