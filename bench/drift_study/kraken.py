"""Section (b) of the drift study: Kraken Q1 2023 against the FTX January 2022 reference.

On all minutes and on liquid minutes only (`empty_frac_60` <= LIQUID_EMPTY_FRAC): most Kraken minutes
are empty bars, so the detection on all minutes is mostly a detection of the liquidity regime.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import polars as pl

from bench.drift_study.data import DEFAULT, LIQUID_EMPTY_FRAC, full_days, on
from crypto_platform.monitoring.drift import INFO_FEATURES, DriftReport, Severity, drift_report

if TYPE_CHECKING:
    from bench.drift_study.measurement import Inputs


@dataclass(frozen=True)
class KrakenFeature:
    """One feature, Kraken's quarter vs the reference: all minutes and liquid minutes only."""

    feature: str
    role: str  # 'alarm' or 'info'
    severity: str | None  # None: not computed
    psi: float | None
    ks: float | None
    days_fired: int  # days >= WARN
    days: int
    liquid_severity: str | None
    liquid_psi: float | None
    liquid_ks: float | None
    note: str


@dataclass(frozen=True)
class Flatness:
    """How much of Kraken is empty (flat) bars, and what that does to the features."""

    ftx_zero: float  # share of minutes with zret_1 == 0
    k_zero: float
    k_empty_median: float  # median empty_frac_60
    k_liquid_share: float
    k_liquid_rows: int
    stoch_mid_empty: float  # share of Kraken's empty minutes with stoch_15 exactly 0.5
    ftx_empty: float  # share of empty minutes
    k_empty: float


@dataclass(frozen=True)
class KrakenCheck:
    """Section (b)."""

    quarter: str  # severity, all minutes
    quarter_zret1_psi: float
    liquid_quarter: str
    liquid_zret1_psi: float
    days: int
    days_warn: int  # days WARN or worse, all minutes
    days_error: int
    liquid_judged: int  # days with enough liquid minutes to be judged
    liquid_warn: int
    liquid_error: int
    features: list[KrakenFeature]
    flat: Flatness


def _sev(psi: float | None, ks: float | None) -> str | None:
    return DEFAULT.classify(psi, ks).value if psi is not None else None


def _kraken_features(
    quarter: DriftReport, liquid: DriftReport, per_day: list[DriftReport]
) -> list[KrakenFeature]:
    out = []
    for f in quarter.features:
        days = [r.feature(f.feature) for r in per_day]
        fired = sum(DEFAULT.classify(x.psi, x.ks) is not Severity.OK for x in days if x.psi is not None)
        fl = liquid.feature(f.feature)
        out.append(
            KrakenFeature(
                feature=f.feature,
                role="alarm" if f.monitored else "info",
                severity=_sev(f.psi, f.ks),
                psi=f.psi,
                ks=f.ks,
                days_fired=fired,
                days=len(days),
                liquid_severity=_sev(fl.psi, fl.ks),
                liquid_psi=fl.psi,
                liquid_ks=fl.ks,
                note=f.note or "",
            )
        )
    return out


def flatness(inp: Inputs, k_liquid: pl.DataFrame) -> Flatness:
    """Zero returns, empty bars and liquid minutes on both markets."""
    zero = pl.col("zret_1") == 0
    empty_stoch = (
        inp.kraken.select("ts", "is_empty")
        .join(inp.kraken_f, on="ts")
        .filter(pl.col("is_empty"))
        .select((pl.col("stoch_15") - 0.5).abs().le(1e-9).mean())
    )
    return Flatness(
        ftx_zero=float(inp.ftx_f.select(zero.mean()).item()),
        k_zero=float(inp.kraken_f.select(zero.mean()).item()),
        k_empty_median=float(inp.kraken_f["empty_frac_60"].median()),  # type: ignore[arg-type]
        k_liquid_share=k_liquid.height / inp.kraken_f.height,
        k_liquid_rows=k_liquid.height,
        stoch_mid_empty=float(empty_stoch.item()),
        ftx_empty=float(inp.ftx["is_empty"].mean()),  # type: ignore[arg-type]
        k_empty=float(inp.kraken["is_empty"].mean()),  # type: ignore[arg-type]
    )


def kraken_check(inp: Inputs) -> KrakenCheck:
    """Kraken against the January reference, the quarter and day by day, all minutes and liquid minutes."""
    ref, kx_days = inp.jan_ref, full_days(inp.kraken_f, history=0)
    kx_reports = [drift_report(ref, on(inp.kraken_f, d), info_features=INFO_FEATURES) for d in kx_days]
    quarter = drift_report(ref, inp.kraken_f, info_features=INFO_FEATURES)
    # on liquid minutes only: an empty minute is a flat bar (zero return, oscillators mid-range)
    k_liquid = inp.kraken_f.filter(pl.col("empty_frac_60") <= LIQUID_EMPTY_FRAC)
    liquid = drift_report(ref, k_liquid, info_features=INFO_FEATURES)
    kl_reports = [drift_report(ref, on(k_liquid, d), info_features=INFO_FEATURES) for d in kx_days]
    kl_judged = [r for r in kl_reports if any(f.psi is not None for f in r.features if f.monitored)]
    return KrakenCheck(
        quarter=quarter.severity.value,
        quarter_zret1_psi=quarter.feature("zret_1").psi,  # type: ignore[arg-type]
        liquid_quarter=liquid.severity.value,
        liquid_zret1_psi=liquid.feature("zret_1").psi,  # type: ignore[arg-type]
        days=len(kx_days),
        days_warn=sum(r.severity is not Severity.OK for r in kx_reports),
        days_error=sum(r.severity is Severity.ERROR for r in kx_reports),
        liquid_judged=len(kl_judged),
        liquid_warn=sum(r.severity is not Severity.OK for r in kl_judged),
        liquid_error=sum(r.severity is Severity.ERROR for r in kl_judged),
        features=_kraken_features(quarter, liquid, kx_reports),
        flat=flatness(inp, k_liquid),
    )
