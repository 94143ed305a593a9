"""Drift checks: gold features and gold predictions against the served model's training reference.

The reference is the feature sample the registry stored with the model version behind the alias
(default 'champion', `model_cache.load_reference`). The current window is, in a partitioned
run, each (instrument, day) cell of the run; in an unpartitioned run (the hourly monitoring job, a
check-only run) the newest `window_hours` of each instrument. Each window is compared with the
reference rows of the same instrument (all reference rows when it has too few).

Severity (`crypto_platform.monitoring.drift`, thresholds and feature choice from bench/MONITORING.md):
OK passes; WARN fails with AssetCheckSeverity.WARN (shown, pages nobody); ERROR fails with
AssetCheckSeverity.ERROR (notified, and the retraining sensor considers a retrain). No model behind the
alias yet: the check passes with a note. Neither check is blocking: drift is a reason to look (and
maybe retrain), not proof that the data is wrong.

Prediction drift compares the model's output on the current window with the *same model's* output on
the reference features (model_version of the predictions must match), scaled by `rv_60` by default:
a raw return forecast is implicitly volatility-scaled and would alarm on every volatility change
(17% of ordinary January days at ERROR unscaled, 0% scaled; MONITORING.md section e). Its thresholds
are calibrated on the reference's own day-to-day variation (`monitoring.drift_calibration`): a
model's forecasts are smooth within a day, so with the feature thresholds it alarmed on a third of
the days on which the model kept its skill (MONITORING.md section g).
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import dagster as dg
import polars as pl
from pydantic import Field

from crypto_platform import tables
from crypto_platform.metadata import ABOUT_LATEST_DATA, md_table
from crypto_platform.monitoring import drift as dm
from crypto_platform.monitoring import drift_calibration as cal
from crypto_platform.partitions import DayPartition, run_partitions
from crypto_platform.resources.lake import LakeResource
from crypto_platform.resources.mlflow import MlflowResource
from crypto_platform.settings import Instrument, load_universe
from crypto_platform.transforms.features import INDEX_COLUMNS

FEATURE_DRIFT_CHECK = "feature_drift"
PREDICTION_DRIFT_CHECK = "prediction_drift"
_SEVERITY = {dm.Severity.WARN: dg.AssetCheckSeverity.WARN, dm.Severity.ERROR: dg.AssetCheckSeverity.ERROR}


class _DriftConfigBase(dg.Config):
    model_alias: str = Field(
        default="champion", description="Registry alias whose stored reference is compared."
    )
    window_hours: float = Field(
        default=24.0, description="Unpartitioned runs: the newest hours of each instrument form the window."
    )
    psi_warn: float = Field(default=dm.PSI_WARN, description="PSI at or above which a feature is WARN.")
    psi_error: float = Field(default=dm.PSI_ERROR, description="PSI at or above which a feature is ERROR.")
    ks_warn: float = Field(
        default=dm.KS_WARN, description="KS statistic D at or above which a feature is WARN."
    )
    ks_error: float = Field(
        default=dm.KS_ERROR, description="KS statistic D at or above which a feature is ERROR."
    )
    min_rows: int = Field(default=dm.MIN_ROWS, description="Fewer finite values on either side: not judged.")


class FeatureDriftConfig(_DriftConfigBase):
    features: list[str] = Field(
        default=list(dm.DRIFT_FEATURES), description="Scale-free features whose drift raises WARN / ERROR."
    )
    info_features: list[str] = Field(
        default=list(dm.INFO_FEATURES),
        description="Features reported alongside that never raise the severity.",
    )


class PredictionDriftConfig(_DriftConfigBase):
    scale_column: str | None = Field(
        default="rv_60",
        description="Feature the forecast is divided by before comparing (removes the vol scale); null: raw.",
    )
    calibrate: bool = Field(
        default=True,
        description=(
            "Raise the thresholds to the reference's own day-to-day variation (each reference day vs the "
            "rest: WARN at its q0.9, ERROR at calibration_margin x its maximum; never below the defaults)."
        ),
    )
    calibration_margin: float = Field(
        default=cal.MARGIN, description="ERROR at this multiple of the largest reference day's PSI / D."
    )


@dataclass
class _Window:
    """One compared window: a run cell or an instrument's newest hours."""

    label: str
    instrument: Instrument
    frame: pl.DataFrame


@dataclass
class _Outcome:
    label: str
    report: dm.DriftReport | None
    notes: list[str] = field(default_factory=list)


@dg.asset_check(
    asset=tables.FEATURES.key,
    name=FEATURE_DRIFT_CHECK,
    description=(
        "PSI and KS drift of the scale-free features (returns over trailing volatility, volatility "
        "ratio, bounded oscillators) of each partition of the run (or the newest 24 h per instrument) "
        "against the champion's stored training reference. WARN / ERROR map to the check's severity; "
        "passes with a note while there is no champion."
    ),
)
def feature_drift(
    context: dg.AssetCheckExecutionContext,
    config: FeatureDriftConfig,
    lake: LakeResource,
    mlflow_registry: MlflowResource,
) -> dg.AssetCheckResult:
    from crypto_platform.ml import model_cache, registry_lookup
    from crypto_platform.ml.model_info import NoAliasError

    uri, name = mlflow_registry.uri, mlflow_registry.model_name
    try:
        # no model behind the alias (a fresh platform's first backfill): known without importing MLflow
        info = registry_lookup.resolve(uri, name, config.model_alias)
        reference = model_cache.load_reference(uri, info)  # MLflow only if this machine has no copy
    except NoAliasError as exc:
        return _no_model(exc, config.model_alias)
    windows, parts = _windows(context, lake, tables.FEATURES, config.window_hours, lambda df, _part: df)
    about_latest = parts is None or lake.includes_newest(tables.FEATURES, parts)

    def compare(ref: pl.DataFrame, cur: pl.DataFrame, notes: list[str]) -> dm.DriftReport:
        usable = [f for f in config.features if f in ref.columns and f in cur.columns]
        info_usable = [f for f in config.info_features if f in ref.columns and f in cur.columns]
        lost = sorted(set(config.features + config.info_features) - set(usable + info_usable))
        if lost:
            notes.append(f"features missing from reference or window: {', '.join(lost)}")
        return dm.drift_report(
            ref,
            cur,
            usable,
            config.psi_warn,
            config.psi_error,
            config.ks_warn,
            config.ks_error,
            info_features=info_usable,
            min_rows=config.min_rows,
        )

    outcomes = [_compare(w, reference, config.min_rows, compare) for w in windows]
    return _result(outcomes, reference, info, about_latest, subject="features")


@dg.asset_check(
    asset=tables.PREDICTIONS.key,
    name=PREDICTION_DRIFT_CHECK,
    description=(
        "PSI and KS drift of the forecast (divided by rv_60) of each partition of the run (or the newest "
        "24 h per instrument) against the same model version's forecasts on its stored training "
        "reference. WARN / ERROR map to the check's severity; passes with a note while there is no champion."
    ),
)
def prediction_drift(
    context: dg.AssetCheckExecutionContext,
    config: PredictionDriftConfig,
    lake: LakeResource,
    mlflow_registry: MlflowResource,
) -> dg.AssetCheckResult:
    from crypto_platform.ml import model_cache
    from crypto_platform.ml.model_info import NoAliasError

    try:
        model = model_cache.load_alias(mlflow_registry.uri, mlflow_registry.model_name, config.model_alias)
        reference = model_cache.load_reference(mlflow_registry.uri, model.info)  # the same version's
    except NoAliasError as exc:
        return _no_model(exc, config.model_alias)
    info = model.info
    scale = config.scale_column
    if scale is not None and scale not in reference.columns:
        raise dg.Failure(f"scale column {scale!r} is not in the model's reference features")
    ref_pred = reference.with_columns(
        pl.Series("predicted_return", model.predict(reference), dtype=pl.Float64)
    )

    def with_scale(preds: pl.DataFrame, part: DayPartition) -> pl.DataFrame:
        preds = preds.filter(pl.col("model_version").cast(pl.String) == str(info.version))
        if scale is None or preds.is_empty():
            return preds
        feats = lake.read_partition(tables.FEATURES, part)
        if feats is None or scale not in feats.columns:
            return preds.with_columns(pl.lit(None, pl.Float64).alias(scale))
        return preds.join(feats.select(*INDEX_COLUMNS, scale), on=INDEX_COLUMNS, how="left")

    windows, parts = _windows(context, lake, tables.PREDICTIONS, config.window_hours, with_scale)
    about_latest = parts is None or lake.includes_newest(tables.PREDICTIONS, parts)

    def compare(ref: pl.DataFrame, cur: pl.DataFrame, notes: list[str]) -> dm.DriftReport:
        t = dm.DriftThresholds(config.psi_warn, config.psi_error, config.ks_warn, config.ks_error)
        if config.calibrate:
            calibration = _calibration(ref, scale, t, config)
            t = calibration.thresholds
            notes.append(calibration.note)
        return dm.prediction_drift(
            ref,
            cur,
            "predicted_return",
            scale_column=scale,
            psi_warn=t.psi_warn,
            psi_error=t.psi_error,
            ks_warn=t.ks_warn,
            ks_error=t.ks_error,
            min_rows=config.min_rows,
        )

    outcomes = [_compare(w, ref_pred, config.min_rows, compare) for w in windows]
    result = _result(outcomes, ref_pred, info, about_latest, subject=f"predictions of v{info.version}")
    return result


DRIFT_CHECKS: list[dg.AssetChecksDefinition] = [feature_drift, prediction_drift]


def _calibration(
    ref: pl.DataFrame, scale: str | None, base: dm.DriftThresholds, config: PredictionDriftConfig
) -> cal.Calibration:
    """The prediction thresholds calibrated on the reference forecasts' day-to-day variation."""
    value = pl.col("predicted_return").cast(pl.Float64)
    if scale is not None:
        value = pl.when(pl.col(scale) > 0).then(value / pl.col(scale))
    if "ts" not in ref.columns:
        return cal.Calibration(base, 0, None, None, None, None, "default thresholds: reference has no ts")
    by = tuple(c for c in ("exchange", "symbol") if c in ref.columns)
    return cal.calibrate(
        ref.with_columns(value.alias("_value")),
        "_value",
        base,
        by=by,
        margin=config.calibration_margin,
        min_rows=config.min_rows,
    )


# ----------------------------------------------------------------------------------------------


def _no_model(exc: Exception, alias: str) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=True,
        description=f"skipped: no '{alias}' model yet, so there is no training reference to compare with",
        metadata={"severity": "SKIPPED", "note": str(exc), ABOUT_LATEST_DATA: True},
    )


def _windows(
    context: dg.AssetCheckExecutionContext,
    lake: LakeResource,
    table: tables.Table,
    window_hours: float,
    prep: Callable[[pl.DataFrame, DayPartition], pl.DataFrame],
) -> tuple[list[_Window], list[DayPartition] | None]:
    """The current windows of a gold table: one per run cell, or each instrument's newest hours."""
    parts = run_partitions(context)
    windows: list[_Window] = []
    if parts is not None:
        for part in parts:
            df = lake.read_partition(table, part)
            if df is None:
                raise dg.Failure(f"{table} {part} is not materialized; nothing to compare")
            windows.append(_Window(part.key, part.instrument, prep(df, part)))
        return windows, parts
    days = math.ceil(window_hours / 24) + 1
    for inst in load_universe().instruments:
        frames = [
            prep(df, p)
            for p in lake.newest_parts(table, inst, days)
            if (df := lake.read_partition(table, p)) is not None
        ]
        frames = [f for f in frames if f.height]
        if not frames:
            continue
        df = pl.concat(frames, how="diagonal_relaxed")
        end = df["ts"].max()
        df = df.filter(pl.col("ts") > end - timedelta(hours=window_hours))  # type: ignore[operator]
        windows.append(_Window(f"{inst.key} newest {window_hours:g} h", inst, df))
    context.log.info(f"unpartitioned run: newest {window_hours:g} h of {len(windows)} instruments")
    return windows, None


def _compare(
    window: _Window,
    reference: pl.DataFrame,
    min_rows: int,
    compare: Callable[[pl.DataFrame, pl.DataFrame, list[str]], dm.DriftReport],
) -> _Outcome:
    notes: list[str] = []
    if window.frame.is_empty():
        return _Outcome(window.label, None, ["no rows to compare"])
    ref = reference
    if {"exchange", "symbol"} <= set(reference.columns):
        own = reference.filter(
            (pl.col("exchange") == window.instrument.exchange)
            & (pl.col("symbol") == window.instrument.symbol)
        )
        if own.height >= min_rows:
            ref = own
        else:
            notes.append(f"pooled reference: only {own.height} reference rows of {window.instrument.key}")
    return _Outcome(window.label, compare(ref, window.frame, notes), notes)


def _result(
    outcomes: Sequence[_Outcome], reference: pl.DataFrame, info, about_latest: bool, *, subject: str
) -> dg.AssetCheckResult:
    judged = [o for o in outcomes if o.report is not None]
    meta: dict[str, object] = {
        "model": f"{info.name} v{info.version}",
        "alias": str(info.alias),
        "reference_rows": reference.height,
        "windows": len(outcomes),
        ABOUT_LATEST_DATA: about_latest,
    }
    if not judged:
        meta["severity"] = dm.Severity.OK.value
        return dg.AssetCheckResult(
            passed=True, metadata=meta, description=f"no {subject} in the window: nothing judged"
        )
    worst = max(judged, key=lambda o: (o.report.severity.rank, _max_stat(o.report)))  # type: ignore[union-attr]
    report = worst.report
    assert report is not None
    meta.update(report.to_metadata())  # the worst window's severity, drifted features, PSI / KS
    meta["worst_window"] = worst.label
    counts = {s: sum(o.report.severity is s for o in judged) for s in dm.Severity}  # type: ignore[union-attr]
    meta["windows_by_severity"] = ", ".join(f"{s.value} {n}" for s, n in counts.items())
    meta["per_window"] = dg.MetadataValue.md(
        md_table(
            [
                {
                    "window": o.label,
                    "severity": o.report.severity.value if o.report else "-",
                    "rows": o.report.n_current if o.report else 0,
                    "drifted": ", ".join(f.feature for f in o.report.drifted) if o.report else "-",
                    "notes": "; ".join(o.notes) or "-",
                }
                for o in outcomes
            ]
        )
    )
    notes = sorted({n for o in outcomes for n in o.notes})
    if notes:
        meta["notes"] = "; ".join(notes)[:600]
    description = f"{subject}: {report.summary()} (worst window {worst.label}; {meta['windows_by_severity']})"
    if report.severity is dm.Severity.OK:
        return dg.AssetCheckResult(passed=True, metadata=meta, description=description)
    return dg.AssetCheckResult(
        passed=False, severity=_SEVERITY[report.severity], metadata=meta, description=description
    )


def _max_stat(report: dm.DriftReport) -> float:
    stats = [max(f.psi or 0.0, f.ks or 0.0) for f in report.features if f.monitored]
    return max(stats, default=0.0)
