"""measure(): every section of the drift study, as plain figures (rates are shares of days, 0..1)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date

import numpy as np
import polars as pl

from bench.drift_study.data import (
    CANDIDATES,
    DEFAULT,
    KS_GRID,
    PSI_GRID,
    REFERENCE_DAYS,
    SKILL_HOLDOUTS,
    WIDE_DRIFT_SET,
    Loaded,
    before,
    full_days,
    judged,
    load,
    on,
)
from bench.drift_study.gx import GxTiming, gx_timing
from bench.drift_study.kraken import KrakenCheck, kraken_check
from bench.drift_study.prediction import PredictionCalibration, prediction_calibration
from bench.drift_study.skill import SkillDay, SkillSummary, skill_days, skill_summary
from bench.drift_study.stats import (
    FeatureRow,
    Study,
    bad_ticks,
    fault_study,
    freeze_feed,
    study,
    toy_predictions,
)
from bench.report import pct
from crypto_platform.monitoring.drift import (
    DRIFT_FEATURES,
    INFO_FEATURES,
    Severity,
    drift_report,
    prediction_drift,
)
from crypto_platform.transforms.features import CALENDAR_FEATURES, FEATURE_COLUMNS

WarnError = tuple[float, float]  # share of days >= WARN, share of days ERROR


@dataclass(frozen=True)
class Inputs:
    """Candles and features of both markets, the judged columns, the feature sets and the day lists."""

    ftx: pl.DataFrame
    ftx_f: pl.DataFrame
    kraken: pl.DataFrame
    kraken_f: pl.DataFrame
    all_cols: list[str]  # FTX columns with enough finite values to be judged
    k_all: list[str]  # the same on Kraken
    chosen: list[str]  # DRIFT_FEATURES that can be judged
    liquidity: list[str]
    sets: dict[str, list[str]]
    jan: list[date]  # January days with a full preceding week
    k_days: list[date]  # Kraken days with a full preceding week
    jan_ref: pl.DataFrame  # all full January days: the reference of (a) and (b)


def inputs(loaded: Loaded | None = None) -> Inputs:
    """Both markets (`load()` unless given) and the columns, feature sets and days every section uses."""
    ftx, ftx_f, kraken, kraken_f = loaded or load()
    all_cols = judged(ftx_f, FEATURE_COLUMNS)
    chosen = [c for c in DRIFT_FEATURES if c in all_cols]
    liquidity = [c for c in ("volume_z_60", "empty_frac_60") if c in all_cols]
    sets = {
        "naive: all features": all_cols,
        "naive: all but calendar": [c for c in all_cols if c not in CALENDAR_FEATURES],
        "wide: scale-free + oscillators + liquidity": [c for c in WIDE_DRIFT_SET if c in all_cols],
        "chosen + liquidity levels": [*chosen, *liquidity],
        "**chosen: drift.DRIFT_FEATURES**": chosen,
    }
    jan_days = full_days(ftx_f, history=0)
    return Inputs(
        ftx=ftx,
        ftx_f=ftx_f,
        kraken=kraken,
        kraken_f=kraken_f,
        all_cols=all_cols,
        k_all=judged(kraken_f, FEATURE_COLUMNS),
        chosen=chosen,
        liquidity=liquidity,
        sets=sets,
        jan=[d for d in full_days(ftx_f) if d.month == 1],
        k_days=full_days(kraken_f),
        jan_ref=ftx_f.filter(pl.col("day").is_in(jan_days) & (pl.col("ts").dt.month() == 1)),
    )


# -------------------------------------------------------------------- (c) false alarms, day vs week


@dataclass(frozen=True)
class GridRow:
    """A feature set on one market: (share of days PSI >= p, share D >= k) per (PSI_GRID, KS_GRID) pair."""

    feature_set: str
    market: str
    rates: list[tuple[float, float]]


@dataclass(frozen=True)
class DefaultRow:
    """A feature set under the default thresholds on both markets."""

    feature_set: str
    ftx: WarnError
    kraken: WarnError


@dataclass(frozen=True)
class FalseAlarms:
    """Section (c)."""

    jan_study: Study
    k_study: Study
    grid: list[GridRow]
    defaults: list[DefaultRow]


def false_alarms(inp: Inputs) -> FalseAlarms:
    """Each day vs the preceding 7 days on both markets, over the threshold grid and the defaults."""
    jan_study = study(inp.ftx_f, inp.jan, inp.all_cols, lambda d: before(inp.ftx_f, d))
    k_study = study(inp.kraken_f, inp.k_days, inp.k_all, lambda d: before(inp.kraken_f, d))
    grid, defaults = [], []
    for name, cols in inp.sets.items():
        k_cols = [c for c in cols if c in inp.k_all]
        for market, st, cs in [("FTX Jan 2022", jan_study, cols), ("Kraken Q1 2023", k_study, k_cols)]:
            rates = [
                (st.rate(cs, p, None), st.rate(cs, None, k)) for p, k in zip(PSI_GRID, KS_GRID, strict=True)
            ]
            grid.append(GridRow(name, market, rates))
        defaults.append(
            DefaultRow(name, jan_study.warn_error(cols, DEFAULT), k_study.warn_error(k_cols, DEFAULT))
        )
    return FalseAlarms(jan_study, k_study, grid, defaults)


# ----------------------------------------------------------------------- (a) reference vs itself


@dataclass(frozen=True)
class SelfCheck:
    """Section (a): January against itself, and each January day against the whole month."""

    severity: str
    max_statistic: float
    in_sample_warn: int  # days WARN or worse
    in_sample_error: int


def self_check(inp: Inputs) -> SelfCheck:
    """The reference against itself (must be OK); in-sample days against the whole month."""
    report = drift_report(inp.jan_ref, inp.jan_ref, info_features=INFO_FEATURES)
    in_sample = [drift_report(inp.jan_ref, on(inp.ftx_f, d)).severity for d in inp.jan]
    return SelfCheck(
        severity=report.severity.value,
        max_statistic=max(max(f.psi or 0.0, f.ks or 0.0) for f in report.features),
        in_sample_warn=sum(s is not Severity.OK for s in in_sample),
        in_sample_error=sum(s is Severity.ERROR for s in in_sample),
    )


# ------------------------------------------------------------------- (d) candidate thresholds


@dataclass(frozen=True)
class Candidate:
    """A threshold set: false alarms, regime detection, planted-fault detection (alarm features)."""

    name: str
    is_default: bool
    ftx: WarnError
    kraken: WarnError
    regime_error: float  # Kraken days vs the January reference that are ERROR
    faults: list[WarnError]  # bad ticks 5 bp, bad ticks 10 bp, 3-hour feed freeze


@dataclass(frozen=True)
class Candidates:
    """Section (d)."""

    rows: list[Candidate]
    n_fault_days: int
    freeze_with_liquidity: WarnError  # the feed freeze judged with the liquidity features too


def candidates(inp: Inputs, fa: FalseAlarms) -> Candidates:
    """Each candidate's false alarms and detection, with planted faults on every other January day."""
    chosen, fault_days = inp.chosen, inp.jan[::2]
    faults = {
        "bad ticks 5 bp": fault_study(inp.ftx, fault_days, chosen, bad_ticks(5.0)),
        "bad ticks 10 bp": fault_study(inp.ftx, fault_days, chosen, bad_ticks(10.0)),
        "3-hour feed freeze": fault_study(inp.ftx, fault_days, [*chosen, *inp.liquidity], freeze_feed),
    }
    kx_study = study(inp.kraken_f, full_days(inp.kraken_f, history=0), chosen, lambda d: inp.jan_ref)
    rows = [
        Candidate(
            name=name,
            is_default=t == DEFAULT,
            ftx=fa.jan_study.warn_error(chosen, t),
            kraken=fa.k_study.warn_error(chosen, t),
            regime_error=kx_study.warn_error(chosen, t)[1],
            faults=[st.warn_error(chosen, t) for st in faults.values()],
        )
        for name, t in CANDIDATES.items()
    ]
    freeze = faults["3-hour feed freeze"].warn_error([*chosen, *inp.liquidity], DEFAULT)
    return Candidates(rows, len(fault_days), freeze)


# ----------------------------------------------------------------- (e) prediction drift, (f) skill


@dataclass(frozen=True)
class PredictionDrift:
    """Prediction drift of the toy model, each January day vs the preceding 7 days."""

    label: str
    psi_median: float
    psi_max: float
    warn: float  # share of days >= WARN
    error: float


def prediction_drifts(inp: Inputs) -> list[PredictionDrift]:
    """The toy vol-scaled forecast's drift, raw and divided by trailing volatility."""
    preds = toy_predictions(inp.ftx_f, inp.ftx, full_days(inp.ftx_f, history=0)[:REFERENCE_DAYS])
    out = []
    for label, scale in [("raw `predicted_return`", None), ("`predicted_return / rv_60`", "rv_60")]:
        reps = [prediction_drift(before(preds, d), on(preds, d), scale_column=scale) for d in inp.jan]
        psis = [r.features[0].psi for r in reps if r.features[0].psi is not None]
        w = sum(r.severity is not Severity.OK for r in reps) / len(reps)
        e = sum(r.severity is Severity.ERROR for r in reps) / len(reps)
        out.append(PredictionDrift(label, float(np.median(psis)), max(psis), w, e))  # type: ignore[arg-type]
    return out


@dataclass(frozen=True)
class SkillCheck:
    """Section (f): skill_lost on held-out FTX days, the model and a shuffled control."""

    summaries: list[SkillSummary]
    spans: list[str]  # training span per holdout fraction
    detail: list[SkillDay]  # per day, the longer holdout
    model_fired: int
    model_days: int
    control_passed: int
    control_days: int


def skill_check(inp: Inputs) -> SkillCheck:
    """Train the platform's model per holdout fraction; skill_lost per held-out day; a shuffled control."""
    summaries, spans = [], []
    detail: list[SkillDay] = []
    fired = passed = n_model = n_control = 0
    for frac in SKILL_HOLDOUTS:
        sd, span = skill_days(inp.ftx, inp.ftx_f, frac)
        summaries.append(skill_summary(f"model, holdout {pct(frac)}", sd))
        spans.append(f"holdout {pct(frac)}: {span}")
        if frac == SKILL_HOLDOUTS[-1]:
            detail, fired, n_model = sd, sum(d.lost for d in sd), len(sd)
            sc, _ = skill_days(inp.ftx, inp.ftx_f, frac, shuffle=True)
            summaries.append(skill_summary(f"control: shuffled forecasts, holdout {pct(frac)}", sc))
            passed, n_control = sum(not d.lost for d in sc), len(sc)
    return SkillCheck(summaries, spans, detail, fired, n_model, passed, n_control)


# ------------------------------------------------------------------------------------------ result


@dataclass(frozen=True)
class Result:
    """Everything MONITORING.md reports."""

    runtime_s: float
    features_s: float
    jan_days: list[date]
    kraken_days: int
    unjudged: list[str]  # alarm / info features that could not be judged on FTX
    zret60: float  # share of January days with PSI(zret_60) >= 0.1
    grid: list[GridRow]
    defaults: list[DefaultRow]
    jan_features: list[FeatureRow]
    kraken_features: list[FeatureRow]
    self_check: SelfCheck
    kraken: KrakenCheck
    candidates: Candidates
    predictions: list[PredictionDrift]
    skill: SkillCheck
    calibrated: PredictionCalibration
    gx_cold_s: float
    gx: list[GxTiming]

    @property
    def ok(self) -> bool:
        """The reference against itself is OK and the Kraken quarter is ERROR."""
        return self.self_check.severity == Severity.OK.value and self.kraken.quarter == Severity.ERROR.value


def measure() -> Result:
    """Run every section of the study on the real candles."""
    t0 = time.perf_counter()
    inp = inputs()
    t_feat = time.perf_counter() - t0
    fa = false_alarms(inp)
    checked, kraken, cands = self_check(inp), kraken_check(inp), candidates(inp, fa)
    predictions, skill = prediction_drifts(inp), skill_check(inp)
    calibrated = prediction_calibration(inp.ftx, inp.ftx_f)
    gx_cold, gx = gx_timing(inp.ftx)
    return Result(
        runtime_s=time.perf_counter() - t0,
        features_s=t_feat,
        jan_days=inp.jan,
        kraken_days=len(inp.k_days),
        unjudged=[c for c in (*DRIFT_FEATURES, *INFO_FEATURES) if c not in inp.all_cols],
        zret60=fa.jan_study.rate(["zret_60"], 0.1, None),
        grid=fa.grid,
        defaults=fa.defaults,
        jan_features=fa.jan_study.per_feature(inp.all_cols, DEFAULT),
        kraken_features=fa.k_study.per_feature([c for c in inp.k_all if c not in CALENDAR_FEATURES], DEFAULT),
        self_check=checked,
        kraken=kraken,
        candidates=cands,
        predictions=predictions,
        skill=skill,
        calibrated=calibrated,
        gx_cold_s=gx_cold,
        gx=gx,
    )
