"""ml.evaluation's gold/model_evaluations rows and champion note: exact rows from known metrics."""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime

import polars as pl

from crypto_platform.ml.evaluation import (
    EvaluationReport,
    ForecastMetrics,
    GateDecision,
    champion_markdown,
    evaluation_rows,
    forecast_table,
    with_champion_notes,
)
from crypto_platform.ml.registry import ChampionComparison, ModelVersionInfo

START, END = datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 2, tzinfo=UTC)
METRICS = [f.name for f in fields(ForecastMetrics)]


def _metrics(k: float) -> ForecastMetrics:
    return ForecastMetrics(*[k * (i + 1) for i in range(len(METRICS))])  # type: ignore[arg-type]


def _info(version: str, alias: str | None) -> ModelVersionInfo:
    return ModelVersionInfo("m", version, "run", f"models:/m/{version}", alias, False, [], ["f"], 5, "", "")


REPORT = EvaluationReport(_metrics(1.0), _metrics(10.0), _metrics(100.0), 5, START, END)


def test_the_forecast_table_has_one_row_per_forecast_and_the_champion_last() -> None:
    table = forecast_table(REPORT, _metrics(1000.0))
    assert table.columns == ["forecast", *METRICS]
    assert table["forecast"].to_list() == ["model", "zero", "momentum", "champion"]
    assert table["mae"].to_list() == [2.0, 20.0, 200.0, 2000.0]  # mae is the 2nd metric
    assert forecast_table(REPORT, None)["forecast"].to_list() == ["model", "zero", "momentum"]


def test_evaluation_rows_tag_every_forecast_with_version_verdict_and_window() -> None:
    decision = GateDecision(False, ["PASS a", "FAIL b"])
    trained = datetime(2024, 1, 3, tzinfo=UTC)
    rows = evaluation_rows(
        forecast_table(REPORT, None),
        _info("12", "challenger"),
        decision,
        champion_version="11",
        window=(START, END),
        trained_at=trained,
    )
    tags = rows.drop(METRICS)
    assert tags.rows() == [
        (f, "m", 12, "challenger", False, "PASS a\nFAIL b", "11", START, END, trained)
        for f in ["model", "zero", "momentum"]
    ]
    assert tags.schema["champion_version"] == pl.String
    none = evaluation_rows(
        forecast_table(REPORT, None), _info("1", "champion"), decision, champion_version=None,
        window=(START, END), trained_at=trained,
    )  # fmt: skip
    assert none["champion_version"].to_list() == [None, None, None]
    assert none.schema["champion_version"] == pl.String


def test_champion_notes_are_appended_to_the_gate_reasons_and_described() -> None:
    decision = GateDecision(True, ["PASS a"], "hit_rate")
    assert with_champion_notes(decision, []) is decision
    assert with_champion_notes(decision, ["NOTE n"]) == GateDecision(True, ["PASS a", "NOTE n"], "hit_rate")
    champ = _info("3", "champion")
    assert champion_markdown(ChampionComparison(None, None)) == "no champion: nothing to beat"
    assert champion_markdown(ChampionComparison(champ, None, "v3 forecasts 15-minute returns")) == (
        "champion v3 NOT compared: v3 forecasts 15-minute returns"
    )
    m = ForecastMetrics(10, 0.1, 0.2, 0.55, 0.5, 8, 0.01, 0.001, 0.123456)
    assert champion_markdown(ChampionComparison(champ, m, None, ["NOTE n"])) == (
        "champion v3 re-scored on this evaluation window: rank IC 0.1235, hit rate 0.55\n\nNOTE n"
    )
