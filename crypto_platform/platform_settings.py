"""The platform's settings: every environment variable, parsed and validated once, in one object.

`PlatformSettings` holds every `CRYPTO_*` variable (one prefix; MLflow keeps its own
`MLFLOW_TRACKING_URI`). It is built once per process by `load_settings()` when the code location
loads; `crypto_platform/definitions.py` passes it to the sensors, schedules, checks and resources and
shows it in the UI as the `settings` resource. No other module reads the environment for a setting.
A bad value is a SettingsError naming the variable, the value (never a secret's) and what is expected.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_DIR = PACKAGE_DIR.parent
DEFAULT_INSTRUMENTS_FILE = PACKAGE_DIR / "config" / "instruments.yaml"


class SettingsError(ValueError):
    """A setting or the instruments file is invalid; the message names the variable or entry, and why."""


ENV_PREFIX = "CRYPTO_"
# Name families that only this platform uses: an unknown name in them is a typo, never another tool's.
OWN_PREFIXES = ("CRYPTO_PLATFORM_", "CRYPTO_LIVE_", "CRYPTO_FRESHNESS_", "CRYPTO_RETRAIN_", "CRYPTO_SERVING_")
# Asset checks in live runs: the blocking ones (the data-quality gates: bad bronze/silver never feeds
# gold), every check of the selected assets (drift too: slow), or none (fastest, no gate).
LIVE_CHECK_MODES = ("blocking", "all", "none")
# How the blocking quality checks of a live run validate: the polars contract (same rules, no GX
# import) or the Great Expectations suites (the reference; ~5 s of import per run process).
LIVE_QUALITY_ENGINES = ("contract", "great_expectations")
# Late-arriving trades: how far before the watermark each fetch re-reads (and the settling delay);
# the default of CRYPTO_LIVE_OVERLAP_SECONDS and of raw/trades' `overlap_seconds` config.
DEFAULT_OVERLAP_SECONDS = 120
# How a run executes its steps (crypto_platform/automation/distributed.py): in one process, or as Celery
# tasks on workers that may run on other machines.
EXECUTORS = ("in_process", "celery")
# Python's cyclic garbage collector in the processes that load the code location (gc_tuning.py): a young
# collection every 10,000 net allocations instead of CPython's 700, so that the full collections, which
# walk every object of a heap that Dagster, Great Expectations and MLflow fill with ~1 M long-lived ones,
# come ~10x less often (bench/GC.md).
GC_YOUNG_THRESHOLD = 10_000
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
Parser = Callable[[str, str], Any]


class SettingsWarning(UserWarning):
    """A setting spelled by its deprecated name, or a CRYPTO_* variable that is no setting (ignored)."""


def _flag(var: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE or value in _FALSE:
        return value in _TRUE
    raise SettingsError(f"{var}={raw!r}: expected true or false ({'/'.join(_TRUE)} or {'/'.join(_FALSE)})")


def _status(var: str, raw: str) -> bool:
    """'running' (or true) / 'stopped' (or false): the default status of sensors or schedules."""
    value = raw.strip().lower()
    if value in ("running", "stopped"):
        return value == "running"
    try:
        return _flag(var, raw)
    except SettingsError:
        raise SettingsError(f"{var}={raw!r}: expected running or stopped (or true / false)") from None


def _number(minimum: float, *, integer: bool = False, above: bool = False) -> Parser:
    """A parser of numbers >= minimum (> minimum when `above`); whole numbers only when `integer`."""
    kind = "a whole number" if integer else "a number"
    bound = f"{'>' if above else '>='} {minimum:g}"

    def parse(var: str, raw: str) -> float | int:
        try:
            value: float | int = int(raw) if integer else float(raw)
        except ValueError:
            raise SettingsError(f"{var}={raw!r}: expected {kind} {bound}") from None
        if value < minimum or (above and value == minimum):
            raise SettingsError(f"{var}={raw!r}: expected {kind} {bound}")
        return value

    return parse


def _choice(*allowed: str) -> Parser:
    def parse(var: str, raw: str) -> str:
        value = raw.strip().lower()
        if value not in allowed:
            raise SettingsError(f"{var}={raw!r}: expected one of {', '.join(allowed)}")
        return value

    return parse


def _text(var: str, raw: str) -> str:
    return raw.strip()


def _path(var: str, raw: str) -> Path:
    return Path(raw.strip()).expanduser().resolve()


def _url(var: str, raw: str) -> str:
    """An http(s) URL; a secret, so an error names the variable but never shows the value."""
    value = raw.strip()
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SettingsError(f"{var} (a secret, value not shown): expected an http:// or https:// URL")
    return value


def _endpoint(var: str, raw: str) -> str:
    """An http(s) endpoint URL without credentials in it (they come from the AWS chain)."""
    value = raw.strip()
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.username or parts.password:
        raise SettingsError(
            f"{var} (value not shown): expected an http:// or https:// URL without credentials"
        )
    return value


def _meta(parse: Parser, doc: str, *, env: str = "", old: tuple[str, ...] = (), secret: bool = False) -> Any:
    """How a PlatformSettings field is read: parser, meaning, variable (default CRYPTO_<NAME>), old names."""
    return {"parse": parse, "doc": doc, "env": env, "old": old, "secret": secret}


@dataclass(frozen=True)
class Setting:
    """How one setting is read: its field, variable, deprecated names, parser and meaning."""

    name: str
    env: str
    old: tuple[str, ...]
    default: Any
    parse: Parser
    doc: str
    secret: bool


@dataclass(frozen=True)
class PlatformSettings:
    """Every setting of the platform; `from_env` reads them (variable CRYPTO_<FIELD NAME>, upper case)."""

    # fmt: off
    instruments: Path = field(default=DEFAULT_INSTRUMENTS_FILE, metadata=_meta(
        _path, "instruments file (the universe: partition keys)", old=("CRYPTO_PLATFORM_INSTRUMENTS",)))
    lake_root: str = field(default="data/lake", metadata=_meta(
        _text, "lake root: a folder (relative: to the project) or s3://<bucket>/<prefix>"))
    warehouse_path: str = field(default="data/warehouse.duckdb", metadata=_meta(
        _text, "DuckDB file of views over the lake"))
    mlflow_tracking_uri: str = field(default="", repr=False, metadata=_meta(
        _text, "MLflow tracking + registry URI (MLflow's own variable; empty: data/mlflow/mlflow.db)",
        env="MLFLOW_TRACKING_URI", secret=True))
    webhook_url: str = field(default="", repr=False, metadata=_meta(
        _url, "Slack-compatible webhook for run and check failures (empty: nothing sent)",
        old=("CRYPTO_PLATFORM_WEBHOOK_URL",), secret=True))
    automation: bool = field(default=False, metadata=_meta(
        _status, "running: the schedules and the retraining sensor start with the code location",
        old=("CRYPTO_PLATFORM_AUTOMATION",)))
    retrain_cooldown_hours: float = field(default=6.0, metadata=_meta(
        _number(0), "minimum time between drift/skill-triggered retrainings",
        old=("CRYPTO_PLATFORM_RETRAIN_COOLDOWN_HOURS",)))
    live_sensor: bool = field(default=False, metadata=_meta(
        _status, "running: the live sensors start with the daemon"))
    live_interval_seconds: int = field(default=5, metadata=_meta(
        _number(5, integer=True), "minimum interval between live sensor ticks"))
    live_predictions: bool = field(default=True, metadata=_meta(
        _flag, "include gold/predictions in live runs"))
    live_labels: bool = field(default=False, metadata=_meta(_flag, "include gold/labels in live runs"))
    live_checks: str = field(default="blocking", metadata=_meta(
        _choice(*LIVE_CHECK_MODES), "asset checks in live runs: blocking (quality gates), all, none"))
    live_quality_engine: str = field(default="contract", metadata=_meta(
        _choice(*LIVE_QUALITY_ENGINES), "how live runs' quality gates validate: contract (polars) or "
        "great_expectations"))
    live_overlap_seconds: int = field(default=DEFAULT_OVERLAP_SECONDS, metadata=_meta(
        _number(0, integer=True), "late-trade re-read before the raw watermark"))
    live_catchup_days: int = field(default=1, metadata=_meta(
        _number(0, integer=True), "days before today the live sensor may still finish"))
    live_stale_run_minutes: float = field(default=30.0, metadata=_meta(
        _number(1), "an 'in progress' live run older than this is abandoned (and its max runtime)"))
    live_shards: int = field(default=1, metadata=_meta(
        _number(1, integer=True), "runs per exchange per tick: its due partitions cut into up to this many "
        "runs that may run at once, each spacing its exchange requests by this factor"))
    backfill_partitions_per_run: int = field(default=0, metadata=_meta(
        _number(0, integer=True), "partitions per run of a daemon backfill (BackfillPolicy.multi_run); "
        "0: one run per backfill (single_run, what `dagster asset materialize --partition-range` needs)"))
    allow_unqualified_model: bool = field(default=False, metadata=_meta(
        _flag, "live predictions may use the latest challenger when there is no champion"))
    freshness_max_lag_seconds: float = field(default=180.0, metadata=_meta(
        _number(0, above=True), "live_data_lag warns when live data is older than this"))
    serving_cache: bool = field(default=True, metadata=_meta(
        _flag, "prediction API: cache answers (false: every request reads DuckDB)"))
    serving_cache_check_seconds: float = field(default=1.0, metadata=_meta(
        _number(0), "prediction API: longest time a cached answer is served without re-checking the lake"))
    serving_max_range_hours: float = field(default=24.0, metadata=_meta(
        _number(0, above=True), "prediction API: longest time range one request may ask for"))
    s3_endpoint_url: str = field(default="", metadata=_meta(
        _endpoint, "S3 endpoint of an s3:// lake root (empty: AWS; credentials: the AWS chain)"))
    s3_allow_http: bool = field(default=False, metadata=_meta(
        _flag, "allow a plain http:// S3 endpoint (local S3-compatible servers)"))
    executor: str = field(default="in_process", metadata=_meta(
        _choice(*EXECUTORS), "how a run executes its steps: in_process (one process) or celery (each "
        "step a task on the Celery workers of CRYPTO_CELERY_BROKER_URL)"))
    celery_broker_url: str = field(default="", repr=False, metadata=_meta(
        _text, "Celery broker and result backend of CRYPTO_EXECUTOR=celery, e.g. redis://127.0.0.1:6379/0",
        secret=True))
    gc_young_threshold: int = field(default=GC_YOUNG_THRESHOLD, metadata=_meta(
        _number(100, integer=True), "allocations between young collections of Python's cyclic garbage "
        "collector in every process that loads the code location (CPython's default: 700; bench/GC.md)"))
    # fmt: on
    # field -> the variable that set it (absent: the default); how a secret is passed on as an EnvVar
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False, repr=False)

    @classmethod
    def specs(cls) -> tuple[Setting, ...]:
        """Every setting, in declaration order."""
        return tuple(
            Setting(
                f.name, f.metadata["env"] or ENV_PREFIX + f.name.upper(), f.metadata["old"], f.default,
                f.metadata["parse"], f.metadata["doc"], f.metadata["secret"],
            )
            for f in dataclasses.fields(cls)
            if f.metadata
        )  # fmt: skip

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PlatformSettings:
        """Parse and validate the settings in `env` (default: this process's environment).

        Empty values count as unset. A deprecated name still works, with a SettingsWarning naming the
        new one; an unknown CRYPTO_* name close to a setting, or in one of our name families, is a
        SettingsError ("did you mean"); any other CRYPTO_* variable is someone else's: a warning.
        """
        env = os.environ if env is None else env
        specs = cls.specs()
        _reject_unknown(env, specs)
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        for spec in specs:
            found = _lookup(env, spec)
            if found is not None:
                var, raw = found
                values[spec.name] = spec.parse(var, raw)
                sources[spec.name] = var
        return cls(**values, sources=sources)

    def rows(self) -> list[tuple[str, str, str]]:
        """(variable, value as shown, meaning) per setting; a secret shows only whether it is set."""
        out = []
        for spec in self.specs():
            value = getattr(self, spec.name)
            if spec.secret:
                shown = f"set (via {self.sources[spec.name]})" if spec.name in self.sources else "unset"
            else:
                shown = str(value).lower() if isinstance(value, bool) else str(value)
            if not spec.secret and spec.name in self.sources and self.sources[spec.name] != spec.env:
                shown += f" (via deprecated {self.sources[spec.name]})"
            out.append((spec.env, shown, spec.doc))
        return out


def env_name(setting: str) -> str:
    """The environment variable of a PlatformSettings field, e.g. 'live_sensor' -> 'CRYPTO_LIVE_SENSOR'."""
    for spec in PlatformSettings.specs():
        if spec.name == setting:
            return spec.env
    raise KeyError(setting)


INSTRUMENTS_ENV = env_name("instruments")


def _lookup(env: Mapping[str, str], spec: Setting) -> tuple[str, str] | None:
    """(variable, value) of a setting, preferring its name over a deprecated one; None when unset."""
    new = env.get(spec.env, "")
    for old in spec.old:
        if old not in env:
            continue
        warnings.warn(
            f"{old} is deprecated: rename it to {spec.env} (the old name goes away in the next release)",
            SettingsWarning,
            stacklevel=3,
        )
        if new.strip() and env[old].strip() and env[old].strip() != new.strip():
            raise SettingsError(
                f"{spec.env} and its deprecated name {old} are both set, to different values: remove {old}"
            )
        if not new.strip() and env[old].strip():
            return old, env[old]
    return (spec.env, new) if new.strip() else None


def _reject_unknown(env: Mapping[str, str], specs: tuple[Setting, ...]) -> None:
    """A mistyped setting is an error (never silently the default); other CRYPTO_* names: a warning."""
    meant = {s.env: s.env for s in specs} | {old: s.env for s in specs for old in s.old}
    for var in sorted(v for v in env if v.startswith(ENV_PREFIX) and v not in meant):
        close = difflib.get_close_matches(var, sorted(meant), n=1, cutoff=0.8)
        if close or var.startswith(OWN_PREFIXES):
            hint = f"did you mean {meant[close[0]]}?" if close else "not a setting"
            raise SettingsError(
                f"unknown setting {var} ({hint}); settings: {', '.join(s.env for s in specs)}"
            )
        warnings.warn(
            f"{var} is not a crypto_platform setting (ignored); settings: {', '.join(s.env for s in specs)}",
            SettingsWarning,
            stacklevel=3,
        )


@cache
def load_settings() -> PlatformSettings:
    """The settings of this process, read from its environment once (when the code location loads)."""
    return PlatformSettings.from_env()
