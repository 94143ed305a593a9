"""The prediction API: FastAPI application factory over the gold tables (read-only, cached).

Routes: `/v1/predictions/latest` (every instrument) and `/v1/predictions/latest/{instrument}`,
`/v1/predictions/{instrument}?start=&end=` (a time range), `/v1/models/champion/evaluation` and
`/v1/models/{version}/evaluation` (gold/model_evaluations), `/health` (freshness per live instrument,
503 when stale) and the OpenAPI docs at `/docs`. Every answer comes from `queries` through the
`AnswerCache`; the header `X-Cache: hit|miss` says which.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import FastAPI, HTTPException, Path, Query, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from crypto_platform.checks.freshness import MAX_LAG_ENV
from crypto_platform.serving import queries
from crypto_platform.serving.settings import MAX_RANGE_ENV, ServingSettings
from crypto_platform.serving.store import PredictionStore
from crypto_platform.settings import Instrument, SettingsError

CACHE_HEADER = "X-Cache"
INSTRUMENT_DOC = "Instrument key as in the instruments file / partition keys, e.g. `sim.BTC-USDT`."


class Prediction(BaseModel):
    """One row of gold/predictions."""

    instrument: str = Field(description=INSTRUMENT_DOC)
    exchange: str
    symbol: str
    ts: datetime = Field(description="The minute the prediction is for (features of that minute's bar).")
    target_ts: datetime = Field(description="The bar whose close is forecast (ts + horizon).")
    horizon: int = Field(description="Forecast horizon in minutes.")
    close: float | None = Field(description="Close of the minute ts.")
    predicted_return: float = Field(description="Forecast log return from close(ts) to close(target_ts).")
    implied_price: float | None = Field(description="close * exp(predicted_return).")
    model_name: str
    model_version: int
    qualified: bool = Field(
        description="False: served by an unqualified challenger (allow_unqualified_model)."
    )
    predicted_at: datetime = Field(description="When the pipeline wrote the prediction.")


class LatestPrediction(Prediction):
    age_seconds: float = Field(description="Seconds since the minute ts closed (now - (ts + 1 min)).")


class LatestPredictions(BaseModel):
    as_of: datetime
    predictions: list[LatestPrediction]
    missing: list[str] = Field(description="Configured instruments without any prediction yet.")


class PredictionRange(BaseModel):
    instrument: str
    start: datetime = Field(description="Inclusive.")
    end: datetime = Field(description="Exclusive.")
    count: int
    predictions: list[Prediction]


class InstrumentFreshness(BaseModel):
    instrument: str
    live: bool = Field(description="Live source (synthetic, ccxt): only these decide the health status.")
    latest_ts: datetime | None
    lag_seconds: float | None = Field(description="now - end of the newest predicted minute.")
    fresh: bool
    reason: str | None = None


class Health(BaseModel):
    status: Literal["ok", "stale"]
    as_of: datetime
    stale_after_seconds: float
    reasons: list[str]
    instruments: list[InstrumentFreshness]


class ForecastFigures(BaseModel):
    forecast: str = Field(
        description="model; a baseline (zero, momentum, reversal, ridge); or champion (re-scored here)."
    )
    n: int | None = None
    mae: float | None = None
    rmse: float | None = None
    hit_rate: float | None = None
    hit_rate_null: float | None = None
    n_directional: int | None = None
    hit_p_value: float | None = None
    hit_p_value_naive: float | None = None
    rank_ic: float | None = None


class ModelEvaluation(BaseModel):
    model_name: str
    model_version: int
    champion: bool = Field(description="Whether this version is the champion (newest promoted version).")
    promoted: bool = Field(description="Whether the promotion gate promoted it when it was trained.")
    gate_reasons: list[str]
    champion_version_compared: str | None
    eval_window_start: datetime | None
    eval_window_end: datetime | None
    trained_at: datetime | None
    forecasts: list[ForecastFigures]


def _utc(ts: datetime) -> datetime:
    """Naive instants are taken as UTC; aware ones are converted to UTC."""
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _finite(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _lag(row: dict[str, Any], now: datetime) -> float:
    return round((now - (row["ts"] + queries.MINUTE)).total_seconds(), 3)


def _cached(response: Response, hit: bool) -> None:
    response.headers[CACHE_HEADER] = "hit" if hit else "miss"


def create_app(settings: ServingSettings | None = None) -> FastAPI:
    """The prediction API over the lake named by `settings` (default: from the environment)."""
    settings = settings or ServingSettings.from_env()
    store = PredictionStore(settings)

    def known_instrument(key: str) -> Instrument:
        try:
            return store.universe.instrument(key)
        except SettingsError as exc:
            raise HTTPException(404, detail=str(exc)) from exc

    insts = store.universe.instruments
    keys = tuple(i.key for i in insts)
    live = {i.key for i in insts if i.is_live}
    max_range = timedelta(hours=settings.max_range_hours)
    app = FastAPI(
        title="crypto_platform predictions",
        version="1",
        description=(
            "Read-only API over the platform's gold tables (gold/predictions, gold/model_evaluations), "
            f"read from the lake with DuckDB. Answers are cached and re-validated against the lake files "
            f"at most every {settings.cache_check_seconds:g} s (header `X-Cache`)."
        ),
    )
    app.state.store = store

    @app.get("/v1/predictions/latest", response_model=LatestPredictions, tags=["predictions"])
    async def latest_all(response: Response) -> dict[str, Any]:
        """The newest prediction of every configured instrument, with its age."""
        rows, hit = await store.latest(insts)
        _cached(response, hit)
        now = settings.clock()
        return {
            "as_of": now,
            "predictions": [{**rows[k], "age_seconds": _lag(rows[k], now)} for k in keys if k in rows],
            "missing": [k for k in keys if k not in rows],
        }

    @app.get("/v1/predictions/latest/{instrument}", response_model=LatestPrediction, tags=["predictions"])
    async def latest_one(
        response: Response, instrument: Annotated[str, Path(description=INSTRUMENT_DOC)]
    ) -> dict[str, Any]:
        """The newest prediction of one instrument: model, version, qualified flag, its minute and age."""
        inst = known_instrument(instrument)
        key = inst.key
        rows, hit = await store.latest((inst,))
        if key not in rows:
            raise HTTPException(404, detail=f"no prediction for instrument {key!r} yet (gold/predictions)")
        _cached(response, hit)
        return {**rows[key], "age_seconds": _lag(rows[key], settings.clock())}

    @app.get("/v1/predictions/{instrument}", response_model=PredictionRange, tags=["predictions"])
    async def prediction_range(
        response: Response,
        instrument: Annotated[str, Path(description=INSTRUMENT_DOC)],
        start: Annotated[
            datetime | None, Query(description="Inclusive, ISO 8601 (naive = UTC). Default end - 1 h.")
        ] = None,
        end: Annotated[
            datetime | None, Query(description="Exclusive, ISO 8601 (naive = UTC). Default now.")
        ] = None,
    ) -> dict[str, Any]:
        """Predictions of one instrument with start <= ts < end (at most the configured range)."""
        inst = known_instrument(instrument)
        stop = _utc(end) if end is not None else settings.clock().astimezone(UTC)
        begin = _utc(start) if start is not None else stop - timedelta(hours=1)
        if begin >= stop:
            raise HTTPException(
                422, detail=f"bad time range: start {begin.isoformat()} is not before end {stop.isoformat()}"
            )
        if stop - begin > max_range:
            raise HTTPException(
                400,
                detail=(
                    f"time range too large: {(stop - begin).total_seconds() / 3600:g} h requested, the limit "
                    f"is {settings.max_range_hours:g} h ({MAX_RANGE_ENV}); split the request"
                ),
            )
        rows, hit = await store.between(inst, begin, stop)
        _cached(response, hit)
        return {"instrument": inst.key, "start": begin, "end": stop, "count": len(rows), "predictions": rows}

    async def evaluation(version: int | None, response: Response) -> dict[str, Any]:
        (champion, rows), hit = await store.evaluation(version)
        if not rows:
            what = (
                "no champion: no evaluated version was promoted by the gate"
                if version is None
                else (f"no evaluation of model version {version}")
            )
            raise HTTPException(404, detail=f"{what} (gold/model_evaluations)")
        _cached(response, hit)
        first = rows[0]
        return {
            "model_name": first["model_name"],
            "model_version": first["model_version"],
            "champion": first["model_version"] == champion,
            "promoted": first["promoted"],
            "gate_reasons": [r for r in (first.get("gate_reasons") or "").splitlines() if r],
            "champion_version_compared": first.get("champion_version"),
            "eval_window_start": first.get("eval_window_start"),
            "eval_window_end": first.get("eval_window_end"),
            "trained_at": first.get("trained_at"),
            "forecasts": [
                {k: _finite(v) for k, v in r.items() if k in ForecastFigures.model_fields} for r in rows
            ],
        }

    @app.get("/v1/models/champion/evaluation", response_model=ModelEvaluation, tags=["models"])
    async def champion_evaluation(response: Response) -> dict[str, Any]:
        """The champion's evaluation figures (model vs the zero, momentum, reversal and ridge baselines)."""
        return await evaluation(None, response)

    @app.get("/v1/models/{version}/evaluation", response_model=ModelEvaluation, tags=["models"])
    async def version_evaluation(response: Response, version: Annotated[int, Path(ge=1)]) -> dict[str, Any]:
        """The evaluation figures of one registered model version (champion or challenger)."""
        return await evaluation(version, response)

    @app.get(
        "/health",
        response_model=Health,
        tags=["health"],
        responses={503: {"model": Health, "description": "A live instrument's predictions are stale."}},
    )
    async def health() -> JSONResponse:
        """Freshness of every instrument's predictions; 503 when a live instrument's are stale or absent."""
        now = settings.clock().astimezone(UTC)
        limit = settings.stale_after_seconds
        rows, _ = await store.latest(insts)
        items, reasons = [], []
        for k in keys:
            row = rows.get(k)
            lag = _lag(row, now) if row else None
            reason = None
            if row is None:
                reason = f"{k}: no prediction written yet"
            elif lag > limit:
                reason = (
                    f"{k}: newest prediction is for {row['ts']:%Y-%m-%d %H:%M} UTC, {lag:.0f} s after its "
                    f"minute closed (limit {limit:g} s, {MAX_LAG_ENV})"
                )
            if reason and k in live:
                reasons.append(reason)
            items.append(
                {
                    "instrument": k,
                    "live": k in live,
                    "latest_ts": row["ts"] if row else None,
                    "lag_seconds": lag,
                    "fresh": reason is None,
                    "reason": reason,
                }
            )
        body = Health(
            status="stale" if reasons else "ok",
            as_of=now,
            stale_after_seconds=limit,
            reasons=reasons,
            instruments=items,
        )
        return JSONResponse(body.model_dump(mode="json"), status_code=503 if reasons else 200)

    return app
