"""measure(): the platform run on the FTX month in a temporary project, the controls, the figures."""

from __future__ import annotations

import os
import platform
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bench.model_eval.controls import run_controls
from bench.model_eval.figures import (
    ControlFigures,
    Result,
    daily_ic,
    evaluation_of,
    importance_of,
    quintiles,
    second_run_of,
    silver_of,
)
from bench.model_eval.platform_run import PlatformRun, TrainingOptions, run_platform, use_temp_project


@dataclass(frozen=True)
class Options(TrainingOptions):
    """The CLI flags of `python -m bench.model_eval` (training options + the control seeds)."""

    control_seeds: tuple[int, ...] = (1, 2, 3)
    study_trials: int = 6  # Optuna trials per variant of the venue study


@dataclass
class Timings:
    """Seconds per phase, in order, printed as they complete."""

    laps: dict[str, float] = field(default_factory=dict)

    def lap(self, name: str, since: float) -> float:
        """Record the phase `name` that began at `since`; returns now."""
        now = time.perf_counter()
        self.laps[name] = now - since
        print(f"[model_eval] {name}: {now - since:.1f}s", flush=True)
        return now


def figures(opts: Options, run: PlatformRun, timings: dict[str, float], controls: ControlFigures) -> Result:
    """The report's figures from what the platform recorded and the controls."""
    from crypto_platform.transforms.features import FEATURE_COLUMNS, LOOKBACK_MINUTES

    evaluation = evaluation_of(run)
    return Result(
        options=opts,
        generated_at=datetime.now(UTC),
        python=platform.python_version(),
        cpus=os.cpu_count() or 0,
        timings=timings,
        silver=silver_of(run),
        training_set=dict(run.training_meta),
        n_features=len(FEATURE_COLUMNS),
        lookback_minutes=LOOKBACK_MINUTES,
        evaluation=evaluation,
        quintiles=quintiles(run.holdout, evaluation.horizon),
        daily=daily_ic(run.holdout),
        n_distinct_forecasts=run.holdout["prediction"].n_unique(),
        importance=importance_of(run.importance),
        second=second_run_of(run),
        controls=controls,
        model_name=run.model_name,
        version=str(run.version.version),
        mlflow_check=run.mlflow_check,
        artifacts=list(run.artifacts),
    )


def measure(opts: Options) -> Result:
    """Run the platform on the FTX month in a temporary project (deleted afterwards) and the controls."""
    t_start = time.perf_counter()
    timings = Timings()
    with tempfile.TemporaryDirectory(prefix="model_eval_") as tmp:
        use_temp_project(Path(tmp))
        run = run_platform(opts, timings.lap)
        t = time.perf_counter()
        controls = run_controls(opts, list(opts.control_seeds), run.training_set)
        timings.lap("controls (direct train calls)", t)
    timings.laps["total"] = time.perf_counter() - t_start
    return figures(opts, run, timings.laps, controls)
