"""Forecast evaluation against naive baselines, feature importance, and the promotion (skill) gate.

The trap with short-horizon returns: they are mostly noise around zero, so the zero forecast is
close to MAE/RMSE-optimal and a model "beating" it on MAE says little. Skill shows in the ranking
(Spearman rank IC) and the direction (hit rate on moves that are not zero), which is what the gate
uses. Baselines, both known at the same moment as the features (bar t closed):

* zero: predicts a log return of 0 (no move);
* momentum: predicts that the last h minutes repeat, log(close[t] / close[t-h]) (null -> 0).

The hit rate is tested (one-sided binomial) against the larger of 50% and the chance level
implied by the sign frequencies, P(pred>0)P(real>0) + P(pred<0)P(real<0): a model that merely
predicts the sign of a trending window's drift has a high hit rate but no skill. Overlapping labels
(an h-minute label every minute) are not independent observations, so the test is run on the
effective sample (hits and trials divided by the overlap h); the naive p-value is reported too.

Fitted baselines (`baselines`: short-term reversal, ridge) join them when the caller passes their
forecasts. The gate's baseline check compares the model with the BEST baseline on the primary metric
by a paired test that accounts for overlapping labels (`significance`: HAC standard errors).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Literal

import numpy as np
import polars as pl

from crypto_platform.ml.significance import METRICS, BaselineTest, paired_test

if TYPE_CHECKING:  # types only (lightgbm: the rolling evaluation asset loads this with the code location)
    import lightgbm as lgb

    # registry imports this module
    from crypto_platform.ml.registry import ChampionComparison, ModelVersionInfo

PrimaryMetric = Literal["rank_ic", "hit_rate", "mae", "rmse"]
HIGHER_IS_BETTER: dict[str, bool] = METRICS
METRIC_NAMES = [
    "n",
    "mae",
    "rmse",
    "hit_rate",
    "hit_rate_null",
    "n_directional",
    "hit_p_value",
    "hit_p_value_naive",
    "rank_ic",
]


@dataclass(frozen=True)
class ForecastMetrics:
    """Accuracy of one forecast against the realised returns (NaN where a metric is undefined)."""

    n: int
    mae: float
    rmse: float
    hit_rate: float  # share of same-sign pairs among rows where forecast and outcome are both non-zero
    hit_rate_null: float  # the tested chance level: max(0.5, sign-frequency chance level)
    n_directional: int  # how many such rows
    hit_p_value: float  # one-sided binomial test of hit_rate > hit_rate_null, overlap-adjusted sample
    hit_p_value_naive: float  # the same test treating every (overlapping) row as independent
    rank_ic: float  # Spearman rank correlation of forecast and outcome (NaN for a constant forecast)

    def as_dict(self) -> dict[str, float]:
        """The metrics as a flat name -> number mapping."""
        return {k: float(v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class EvaluationReport:
    """Model vs the zero and momentum baselines on one evaluation window, plus gain importance."""

    model: ForecastMetrics
    zero: ForecastMetrics
    momentum: ForecastMetrics
    horizon: int
    window_start: datetime
    window_end: datetime  # last bar time in the window (inclusive)
    importance: pl.DataFrame = field(default_factory=pl.DataFrame)
    baselines: dict[str, ForecastMetrics] = field(default_factory=dict)  # fitted ones (reversal, ridge)
    specs: dict[str, str] = field(default_factory=dict)  # baseline name -> what it forecasts
    tests: dict[str, dict[str, BaselineTest]] = field(default_factory=dict)  # metric -> baseline -> test

    def table(self, primary: str = "rank_ic") -> pl.DataFrame:
        """One row per forecast (model, zero, momentum, fitted baselines) with every metric as a column.

        When the report holds the paired tests (`evaluate` makes them), baseline rows also say what they
        forecast (spec) and the model's advantage over them on `primary` with its one-sided HAC p-value.
        """
        if not self.tests:
            return pl.DataFrame([{"forecast": k, **m.as_dict()} for k, m in self.forecasts().items()])
        rows = []
        for k, m in self.forecasts().items():
            t = self.tests.get(primary, {}).get(k)
            rows.append(
                {
                    "forecast": k,
                    **m.as_dict(),
                    "spec": self.specs.get(k),
                    "advantage_metric": primary if t else None,
                    "model_advantage": t.advantage if t else None,
                    "model_advantage_p": t.p_value if t else None,
                }
            )
        return pl.DataFrame(rows, schema_overrides={"spec": pl.String, "advantage_metric": pl.String})

    def forecasts(self) -> dict[str, ForecastMetrics]:
        """{'model': ..., 'zero': ..., 'momentum': ..., then each fitted baseline}."""
        return {"model": self.model, "zero": self.zero, "momentum": self.momentum, **self.baselines}

    def best_baseline(self, primary: str = "rank_ic") -> BaselineTest:
        """The model vs the baseline that scores best on `primary` on this window."""
        tests = self.tests.get(primary)
        if not tests:
            raise ValueError(f"best_baseline: no baseline test for metric {primary!r}")
        return min(tests.values(), key=lambda t: t.advantage if _finite(t.advantage) else math.inf)


@dataclass(frozen=True)
class GateDecision:
    """Whether to promote a model to champion, with one PASS/FAIL line per check."""

    promote: bool
    reasons: list[str]
    primary: str = "rank_ic"


def forecast_metrics(prediction: np.ndarray, realised: np.ndarray, *, overlap: int = 1) -> ForecastMetrics:
    """MAE, RMSE, directional hit rate with its one-sided binomial p-value, and Spearman rank IC."""
    pred = np.asarray(prediction, dtype=float)
    real = np.asarray(realised, dtype=float)
    if pred.shape != real.shape:
        raise ValueError(f"forecast_metrics: {pred.shape} predictions vs {real.shape} outcomes")
    ok = np.isfinite(pred) & np.isfinite(real)
    pred, real = pred[ok], real[ok]
    n = int(pred.size)
    if n == 0:
        nan = float("nan")
        return ForecastMetrics(0, nan, nan, nan, 0.5, 0, 1.0, 1.0, nan)
    err = pred - real
    directional = (pred != 0) & (real != 0)
    n_dir = int(directional.sum())
    up_pred, up_real = pred[directional] > 0, real[directional] > 0
    hits = int((up_pred == up_real).sum())
    hit_rate = hits / n_dir if n_dir else float("nan")
    a, b = (float(up_pred.mean()), float(up_real.mean())) if n_dir else (0.5, 0.5)
    null = max(0.5, a * b + (1 - a) * (1 - b))
    return ForecastMetrics(
        n=n,
        mae=float(np.mean(np.abs(err))),
        rmse=float(np.sqrt(np.mean(err**2))),
        hit_rate=hit_rate,
        hit_rate_null=null,
        n_directional=n_dir,
        hit_p_value=_binom_p(hits, n_dir, max(1, overlap), null),
        hit_p_value_naive=_binom_p(hits, n_dir, 1, null),
        rank_ic=rank_ic(pred, real),
    )


def rank_ic(prediction: np.ndarray, realised: np.ndarray) -> float:
    """Spearman rank correlation (NaN when either side is constant or there are < 3 points)."""
    pred = np.asarray(prediction, dtype=float)
    real = np.asarray(realised, dtype=float)
    if pred.size < 3 or np.ptp(pred) == 0 or np.ptp(real) == 0:
        return float("nan")
    from scipy import stats  # imported when a score is computed, not when the code location loads

    return float(stats.spearmanr(pred, real).statistic)


def evaluate(
    frame: pl.DataFrame,
    prediction: np.ndarray,
    *,
    horizon: int,
    momentum_col: str,
    label_col: str = "label",
    booster: lgb.Booster | None = None,
    baselines: dict[str, np.ndarray] | None = None,
    specs: dict[str, str] | None = None,
) -> EvaluationReport:
    """Score a model's predictions on `frame` (ts, label, momentum column) against the baselines.

    `baselines` adds fitted baselines' forecasts on the same rows (name -> forecast), `specs` says
    what each forecasts. Every baseline is also compared with the model by a paired HAC test.
    """
    if frame.height == 0:
        raise ValueError("evaluate: empty evaluation window")
    if len(prediction) != frame.height:
        raise ValueError(f"evaluate: {len(prediction)} predictions for {frame.height} rows")
    missing = [c for c in ["ts", label_col, momentum_col] if c not in frame.columns]
    if missing:
        raise ValueError(f"evaluate: frame lacks columns {missing}")
    real = frame[label_col].cast(pl.Float64).to_numpy()
    momentum = frame[momentum_col].cast(pl.Float64).fill_null(0.0).fill_nan(0.0).to_numpy()
    pred = np.asarray(prediction, dtype=float)
    extra = {k: np.asarray(v, dtype=float) for k, v in (baselines or {}).items()}
    clash = sorted(set(extra) & {"model", "zero", "momentum", "champion"})
    if clash:
        raise ValueError(f"evaluate: baseline names {clash} are reserved")
    bad = {k: v.shape for k, v in extra.items() if v.shape != real.shape}
    if bad:
        raise ValueError(f"evaluate: baseline forecasts {bad} do not match the {frame.height} rows")
    specs = {
        "zero": "0 (no move)",
        "momentum": f"{momentum_col} (the last {horizon} minutes repeat)",
        **(specs or {}),
    }
    every = {"zero": np.zeros_like(real), "momentum": momentum, **extra}
    times = frame["ts"].dt.epoch("us").to_numpy()
    tests = {
        metric: {
            name: paired_test(
                pred, b, real, times, metric=metric, lag=horizon - 1, baseline_name=name, spec=specs[name]
            )
            for name, b in every.items()
        }
        for metric in HIGHER_IS_BETTER
    }
    return EvaluationReport(
        model=forecast_metrics(pred, real, overlap=horizon),
        zero=forecast_metrics(np.zeros_like(real), real, overlap=horizon),
        momentum=forecast_metrics(momentum, real, overlap=horizon),
        baselines={k: forecast_metrics(v, real, overlap=horizon) for k, v in extra.items()},
        specs=specs,
        tests=tests,
        horizon=horizon,
        window_start=frame["ts"].min(),  # type: ignore[arg-type]
        window_end=frame["ts"].max(),  # type: ignore[arg-type]
        importance=feature_importance(booster) if booster is not None else pl.DataFrame(),
    )


def feature_importance(booster: lgb.Booster) -> pl.DataFrame:
    """(feature, gain, gain_share, splits), by total gain, largest first."""
    gain = booster.feature_importance(importance_type="gain").astype(float)
    splits = booster.feature_importance(importance_type="split").astype(np.int64)
    total = float(gain.sum()) or 1.0
    return pl.DataFrame(
        {
            "feature": booster.feature_name(),
            "gain": gain,
            "gain_share": gain / total,
            "splits": splits,
        }
    ).sort(["gain", "feature"], descending=[True, False])


def skill_gate(
    model_metrics: ForecastMetrics,
    momentum_metrics: ForecastMetrics,
    champion_metrics: ForecastMetrics | None,
    primary: PrimaryMetric = "rank_ic",
    *,
    alpha: float = 0.05,
    incomparable_champion: str | None = None,
    replace_incomparable: bool = False,
    baselines: BaselineTest | None = None,
) -> GateDecision:
    """Promote only if rank IC > 0, the baselines are beaten, hit rate > 50% (p < alpha), champion beaten.

    With `baselines` (`EvaluationReport.best_baseline(primary)`) the model must beat the best baseline
    on the primary metric with a one-sided HAC p < alpha; without it (callers that have no fitted
    baselines), only momentum's rank IC is to be beaten.

    `incomparable_champion` (with `champion_metrics` None) says why a current champion cannot be
    scored on this window (another horizon, features missing): it has not been beaten, so the check
    fails unless `replace_incomparable` explicitly allows replacing it on the other checks alone.
    """
    if primary not in HIGHER_IS_BETTER:
        raise ValueError(f"skill_gate: primary must be one of {sorted(HIGHER_IS_BETTER)}, got {primary!r}")
    ic, mom_ic = model_metrics.rank_ic, momentum_metrics.rank_ic
    checks: list[tuple[bool, str]] = [
        (_finite(ic) and ic > 0, f"rank IC {_fmt(ic)} > 0"),
        _baseline_check(baselines, primary, alpha)
        if baselines is not None
        else (
            _finite(ic) and (not _finite(mom_ic) or ic > mom_ic),
            f"rank IC {_fmt(ic)} > momentum rank IC {_fmt(mom_ic)}",
        ),
        (
            _finite(model_metrics.hit_rate)
            and model_metrics.hit_rate > 0.5
            and model_metrics.hit_p_value < alpha,
            f"hit rate {_fmt(model_metrics.hit_rate)} > 0.5, one-sided binomial p "
            f"{_fmt(model_metrics.hit_p_value)} < {alpha} against chance {_fmt(model_metrics.hit_rate_null)}"
            " (overlap-adjusted)",
        ),
    ]
    mine = getattr(model_metrics, primary)
    if champion_metrics is None and incomparable_champion:
        outcome = (
            "replace_incomparable_champion is set: judged without it"
            if replace_incomparable
            else "not beaten, so it stays champion (set replace_incomparable_champion to replace it)"
        )
        checks.append(
            (replace_incomparable, f"current champion not comparable ({incomparable_champion}): {outcome}")
        )
    elif champion_metrics is None:
        checks.append((True, "no current champion to beat"))
    else:
        theirs = getattr(champion_metrics, primary)
        higher = HIGHER_IS_BETTER[primary]
        better = _finite(mine) and (not _finite(theirs) or (mine > theirs if higher else mine < theirs))
        op = ">" if higher else "<"
        checks.append(
            (better, f"{primary} {_fmt(mine)} {op} champion's {_fmt(theirs)} on the same evaluation window")
        )
    reasons = [("PASS " if ok else "FAIL ") + text for ok, text in checks]
    return GateDecision(promote=all(ok for ok, _ in checks), reasons=reasons, primary=primary)


def _baseline_check(t: BaselineTest, primary: str, alpha: float) -> tuple[bool, str]:
    if t.metric != primary:
        raise ValueError(
            f"skill_gate: the baseline test is on {t.metric!r}, the primary metric is {primary!r}"
        )
    ok = _finite(t.advantage) and t.advantage > 0 and t.p_value < alpha
    return ok, (
        f"{primary} {_fmt(t.model_value)} beats the best baseline, {t.baseline} ({t.spec}) "
        f"{_fmt(t.baseline_value)}, by {_fmt(t.advantage)}: one-sided HAC p {_fmt(t.p_value)} < {alpha} "
        f"(Hansen-Hodrick lag {t.lag}, {t.n_times} bar times)"
    )


def with_champion_notes(decision: GateDecision, notes: list[str]) -> GateDecision:
    """The decision with the champion comparison's notes (why the comparison favours it) appended."""
    return replace(decision, reasons=[*decision.reasons, *notes]) if notes else decision


def forecast_table(
    report: EvaluationReport, champion: ForecastMetrics | None, primary: str = "rank_ic"
) -> pl.DataFrame:
    """One row per forecast (model, zero, momentum, fitted baselines, and the champion re-scored on the
    same window); baseline rows carry the model's advantage on `primary` with its HAC p-value."""
    table = report.table(primary)
    if champion is None:
        return table
    return pl.concat([table, pl.DataFrame([{"forecast": "champion", **champion.as_dict()}])], how="diagonal")


def evaluation_rows(
    table: pl.DataFrame,
    info: ModelVersionInfo,
    decision: GateDecision,
    *,
    champion_version: str | None,
    window: tuple[datetime, datetime],
    trained_at: datetime,
) -> pl.DataFrame:
    """gold/model_evaluations rows: the forecast table tagged with the version, the gate's verdict and
    reasons, the champion version compared with and the evaluation window."""
    return table.with_columns(
        pl.lit(info.name).alias("model_name"),
        pl.lit(int(info.version)).alias("model_version"),
        pl.lit(info.alias).alias("alias"),
        pl.lit(decision.promote).alias("promoted"),
        pl.lit("\n".join(decision.reasons)).alias("gate_reasons"),
        pl.lit(champion_version, pl.String).alias("champion_version"),
        pl.lit(window[0]).alias("eval_window_start"),
        pl.lit(window[1]).alias("eval_window_end"),
        pl.lit(trained_at).alias("trained_at"),
    )


def champion_markdown(current: ChampionComparison) -> str:
    """What the gate compared the new version with (champion version and its score, or why not)."""
    if current.info is None:
        return "no champion: nothing to beat"
    who = f"champion v{current.info.version}"
    if current.metrics is None:
        return f"{who} NOT compared: {current.incomparable}"
    m = current.metrics
    text = f"{who} re-scored on this evaluation window: rank IC {m.rank_ic:.4g}, hit rate {m.hit_rate:.4g}"
    return "\n\n".join([text, *current.notes])


def _binom_p(hits: int, trials: int, overlap: int, null: float) -> float:
    """One-sided binomial p-value of P(hit) > null, with hits and trials shrunk by the label overlap."""
    k, n = round(hits / overlap), round(trials / overlap)
    if n <= 0:
        return 1.0
    from scipy import stats

    return float(stats.binomtest(min(k, n), n, null, alternative="greater").pvalue)


def _finite(x: float) -> bool:
    return x is not None and math.isfinite(x)


def _fmt(x: float) -> str:
    return "n/a" if not _finite(x) else f"{x:.4g}"
