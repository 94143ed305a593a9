"""The settings and the instruments file: valid ones load, every mistake is named precisely."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from crypto_platform.cli import demo_log, settings_table
from crypto_platform.platform_settings import PlatformSettings, SettingsWarning, env_name
from crypto_platform.settings import (
    DEFAULT_INSTRUMENTS_FILE,
    PROJECT_DIR,
    SettingsError,
    load_universe,
    parse_universe,
    symbol_slug,
)

P = Path("instruments.yaml")


def test_keys_and_slugs() -> None:
    u = parse_universe(
        {
            "instruments": [
                {"exchange": "sim", "symbol": "BTC/USDT"},
                {"exchange": "binanceusdm", "symbol": "BTC/USDT:USDT", "source": "ccxt"},
            ]
        },
        P,
    )
    assert u.keys == ["sim.BTC-USDT", "binanceusdm.BTC-USDT-USDT"]
    assert u.instrument("binanceusdm.BTC-USDT-USDT").quote == "USDT"
    assert symbol_slug("ETH/BTC") == "ETH-BTC"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"exchange": "Binance", "symbol": "BTC/USDT", "source": "ccxt"}, "exchange 'Binance'"),
        ({"exchange": "binance", "symbol": "BTCUSDT", "source": "ccxt"}, "symbol 'BTCUSDT'"),
        ({"exchange": "binance", "symbol": "BTC/USDT", "source": "kafka"}, "source 'kafka'"),
        (
            {"exchange": "binance", "symbol": "BTC/USDT", "source": "synthetic"},
            "only allowed with exchange 'sim'",
        ),
        ({"exchange": "sim", "symbol": "BTC/USDT", "source": "ccxt"}, "only allowed with exchange 'sim'"),
        ({"exchange": "binance", "symbol": "BTC/USDT", "source": "replay"}, "needs a 'path'"),
    ],
)
def test_bad_entries_are_named(entry: dict, message: str) -> None:
    with pytest.raises(SettingsError, match="instruments\\[0\\]") as err:
        parse_universe({"instruments": [entry]}, P)
    assert message in str(err.value)


def test_duplicates_and_unknown_keys() -> None:
    with pytest.raises(SettingsError, match=r"listed twice: sim\.BTC-USDT"):
        parse_universe({"instruments": [{"exchange": "sim", "symbol": "BTC/USDT"}] * 2}, P)
    u = parse_universe({"instruments": [{"exchange": "sim", "symbol": "BTC/USDT"}]}, P)
    with pytest.raises(SettingsError, match=r"unknown instrument 'sim\.DOGE-USDT'"):
        u.instrument("sim.DOGE-USDT")
    with pytest.raises(SettingsError, match="start_date"):
        parse_universe({"start_date": "yesterday", "instruments": [{"exchange": "sim", "symbol": "A/B"}]}, P)


@pytest.mark.parametrize(
    ("entry", "unknown", "hint"),
    [
        ({"exchange": "binance", "symbol": "BTC/USDT", "source": "ccxt", "api_ur": "http://proxy"}, "api_ur",
         "did you mean 'api_url'"),
        ({"exchange": "sim", "symbol": "BTC/USDT", "trade_per_minute": 5}, "trade_per_minute",
         "did you mean 'trades_per_minute'"),
        ({"exchange": "binance", "symbol": "BTC/USDT", "source": "replay", "path": "x.csv", "format": "csv"},
         "format", ""),
        ({"exchange": "sim", "symbol": "BTC/USDT", "api_url": "http://proxy"}, "api_url", ""),  # not ccxt
    ],
)  # fmt: skip
def test_unknown_instrument_options_are_rejected(entry: dict, unknown: str, hint: str) -> None:
    ok = {"exchange": "sim", "symbol": "ETH/USDT"}
    with pytest.raises(SettingsError) as err:
        parse_universe({"instruments": [ok, entry]}, P)
    message = str(err.value)
    assert message.startswith(f"{P}: instruments[1] ({entry['exchange']} {entry['symbol']}): ")
    assert f"unknown option {unknown!r} for source {entry.get('source', 'synthetic')!r}" in message
    assert hint in message and "allowed: " in message and "min_non_empty_share" in message


def test_every_option_in_use_stays_allowed() -> None:
    """The repo's instruments files and every option the code reads from an entry still load."""
    for path in [DEFAULT_INSTRUMENTS_FILE, Path(__file__).parent / "instruments_test.yaml"]:
        assert load_universe(path).instruments
    u = parse_universe(
        {
            "instruments": [
                {"exchange": "sim", "symbol": "BTC/USDT", "trades_per_minute": 30,
                 "min_non_empty_share": 0.9},
                {"exchange": "binance", "symbol": "BTC/USDT", "source": "ccxt", "api_url": "http://127.0.0.1:9",
                 "page_limit": 400, "max_retries": 2, "backoff_seconds": 0.1, "timeout_ms": 5000,
                 "exchange_options": {"fetchMarkets": ["spot"]}, "min_non_empty_share": None},
                {"exchange": "binanceusdm", "symbol": "BTC/USDT:USDT", "source": "replay", "path": "a.csv"},
                {"exchange": "ftx", "symbol": "BTC/USD:USD", "source": "candles", "path": "f.csv",
                 "format": "csv", "volume_unit": "quote", "api_url": "http://127.0.0.1:9", "max_retries": 1},
            ]
        },
        P,
    )  # fmt: skip
    assert u.instrument("binance.BTC-USDT").options["exchange_options"] == {"fetchMarkets": ["spot"]}


# ----------------------------------------------------------------------------------------------
# PlatformSettings: every CRYPTO_* variable, parsed once, validated, shown in the UI.

EVERY_SETTING = {
    "CRYPTO_INSTRUMENTS": "universe.yaml",
    "CRYPTO_LAKE_ROOT": "/srv/lake",
    "CRYPTO_S3_ENDPOINT_URL": "https://s3.eu-west-1.amazonaws.com",
    "CRYPTO_S3_ALLOW_HTTP": "no",
    "CRYPTO_WAREHOUSE_PATH": " wh.duckdb ",
    "MLFLOW_TRACKING_URI": "http://user:MLFLOW-PASSWORD@mlflow.internal:5000",
    "CRYPTO_WEBHOOK_URL": "https://hooks.example/services/WEBHOOK-TOKEN",
    "CRYPTO_AUTOMATION": "running",
    "CRYPTO_RETRAIN_COOLDOWN_HOURS": "1.5",
    "CRYPTO_LIVE_SENSOR": "TRUE",
    "CRYPTO_LIVE_INTERVAL_SECONDS": "30",
    "CRYPTO_LIVE_PREDICTIONS": "off",
    "CRYPTO_LIVE_LABELS": "yes",
    "CRYPTO_LIVE_CHECKS": "All",
    "CRYPTO_LIVE_QUALITY_ENGINE": "great_expectations",
    "CRYPTO_BACKFILL_PARTITIONS_PER_RUN": "30",
    "CRYPTO_LIVE_OVERLAP_SECONDS": "0",
    "CRYPTO_LIVE_CATCHUP_DAYS": "3",
    "CRYPTO_LIVE_STALE_RUN_MINUTES": "45.5",
    "CRYPTO_LIVE_SHARDS": "2",
    "CRYPTO_ALLOW_UNQUALIFIED_MODEL": "1",
    "CRYPTO_FRESHNESS_MAX_LAG_SECONDS": "90",
    "CRYPTO_SERVING_CACHE": "false",
    "CRYPTO_SERVING_CACHE_CHECK_SECONDS": "0",
    "CRYPTO_SERVING_MAX_RANGE_HOURS": "6",
    "CRYPTO_EXECUTOR": "Celery",
    "CRYPTO_CELERY_BROKER_URL": "redis://:BROKER-PASSWORD@redis.internal:6379/0",
    "CRYPTO_GC_YOUNG_THRESHOLD": "700",
}


def _settings(env: dict[str, str]) -> PlatformSettings:
    """from_env, with any warning an error (so a test that expects none sees one)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return PlatformSettings.from_env(env)


def _warnings(env: dict[str, str]) -> tuple[PlatformSettings, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        settings = PlatformSettings.from_env(env)
    return settings, [str(w.message) for w in caught if issubclass(w.category, SettingsWarning)]


def test_every_setting_parsed_from_its_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # a relative instruments path resolves against the working directory
    assert {spec.env for spec in PlatformSettings.specs()} == set(EVERY_SETTING)  # the table is complete
    assert _settings({}) == PlatformSettings()
    got = _settings(EVERY_SETTING)
    assert got == PlatformSettings(
        instruments=tmp_path.resolve() / "universe.yaml",
        lake_root="/srv/lake",
        s3_endpoint_url="https://s3.eu-west-1.amazonaws.com",
        s3_allow_http=False,
        warehouse_path="wh.duckdb",
        mlflow_tracking_uri="http://user:MLFLOW-PASSWORD@mlflow.internal:5000",
        webhook_url="https://hooks.example/services/WEBHOOK-TOKEN",
        automation=True,
        retrain_cooldown_hours=1.5,
        live_sensor=True,
        live_interval_seconds=30,
        live_predictions=False,
        live_labels=True,
        live_checks="all",
        live_quality_engine="great_expectations",
        live_overlap_seconds=0,
        live_shards=2,
        live_catchup_days=3,
        live_stale_run_minutes=45.5,
        backfill_partitions_per_run=30,
        allow_unqualified_model=True,
        freshness_max_lag_seconds=90.0,
        serving_cache=False,
        serving_cache_check_seconds=0.0,
        serving_max_range_hours=6.0,
        executor="celery",
        celery_broker_url="redis://:BROKER-PASSWORD@redis.internal:6379/0",
        gc_young_threshold=700,
    )
    assert got.sources == {spec.name: spec.env for spec in PlatformSettings.specs()}
    secrets = ("WEBHOOK-TOKEN", "MLFLOW-PASSWORD", "BROKER-PASSWORD")
    assert all(s not in repr(got) for s in secrets)  # secrets stay out of logs
    assert _settings({var: "  " for var in EVERY_SETTING}) == PlatformSettings()  # empty = unset
    assert (
        env_name("live_sensor") == "CRYPTO_LIVE_SENSOR"
        and env_name("mlflow_tracking_uri") == "MLFLOW_TRACKING_URI"
    )


@pytest.mark.parametrize(
    ("var", "raw", "expected"),
    [
        ("CRYPTO_LIVE_SENSOR", "maybe", "expected running or stopped (or true / false)"),
        ("CRYPTO_AUTOMATION", "sometimes", "expected running or stopped (or true / false)"),
        ("CRYPTO_LIVE_PREDICTIONS", "perhaps", "expected true or false (1/true/yes/on or 0/false/no/off)"),
        ("CRYPTO_RETRAIN_COOLDOWN_HOURS", "six", "expected a number >= 0"),  # was a bare ValueError
        ("CRYPTO_RETRAIN_COOLDOWN_HOURS", "-1", "expected a number >= 0"),
        ("CRYPTO_LIVE_INTERVAL_SECONDS", "2", "expected a whole number >= 5"),
        ("CRYPTO_LIVE_INTERVAL_SECONDS", "7.5", "expected a whole number >= 5"),
        ("CRYPTO_LIVE_CHECKS", "some", "expected one of blocking, all, none"),
        ("CRYPTO_LIVE_CATCHUP_DAYS", "-1", "expected a whole number >= 0"),
        ("CRYPTO_LIVE_STALE_RUN_MINUTES", "0.5", "expected a number >= 1"),
        ("CRYPTO_FRESHNESS_MAX_LAG_SECONDS", "0", "expected a number > 0"),
        ("CRYPTO_SERVING_MAX_RANGE_HOURS", "0", "expected a number > 0"),
        ("CRYPTO_SERVING_CACHE", "maybe", "expected true or false (1/true/yes/on or 0/false/no/off)"),
        ("CRYPTO_GC_YOUNG_THRESHOLD", "50", "expected a whole number >= 100"),  # 0 would turn it off
    ],
)
def test_a_bad_value_names_the_variable_the_value_and_what_is_expected(
    var: str, raw: str, expected: str
) -> None:
    with pytest.raises(SettingsError) as err:
        _settings({var: raw})
    assert str(err.value) == f"{var}={raw!r}: {expected}"


def test_a_bad_secret_is_named_but_never_shown() -> None:
    with pytest.raises(SettingsError) as err:
        _settings({"CRYPTO_WEBHOOK_URL": "hooks.example/services/WEBHOOK-TOKEN"})  # no scheme
    assert (
        str(err.value)
        == "CRYPTO_WEBHOOK_URL (a secret, value not shown): expected an http:// or https:// URL"
    )


def test_old_names_still_work_for_one_release_with_a_warning_naming_the_new_one() -> None:
    old = {
        "CRYPTO_PLATFORM_INSTRUMENTS": "/srv/universe.yaml",
        "CRYPTO_PLATFORM_WEBHOOK_URL": "http://127.0.0.1:9/hook",
        "CRYPTO_PLATFORM_AUTOMATION": "running",
        "CRYPTO_PLATFORM_RETRAIN_COOLDOWN_HOURS": "2",
    }
    settings, messages = _warnings(old)
    assert (settings.instruments, settings.webhook_url) == (
        Path("/srv/universe.yaml"),
        "http://127.0.0.1:9/hook",
    )
    assert (settings.automation, settings.retrain_cooldown_hours) == (True, 2.0)
    assert settings.sources == {
        "instruments": "CRYPTO_PLATFORM_INSTRUMENTS",
        "webhook_url": "CRYPTO_PLATFORM_WEBHOOK_URL",
        "automation": "CRYPTO_PLATFORM_AUTOMATION",
        "retrain_cooldown_hours": "CRYPTO_PLATFORM_RETRAIN_COOLDOWN_HOURS",
    }
    renamed = {"INSTRUMENTS", "WEBHOOK_URL", "AUTOMATION", "RETRAIN_COOLDOWN_HOURS"}
    assert sorted(messages) == sorted(
        f"CRYPTO_PLATFORM_{n} is deprecated: rename it to CRYPTO_{n} "
        "(the old name goes away in the next release)"
        for n in renamed
    )
    # a bad value under the old name names the old name (the one the user wrote)
    with pytest.raises(
        SettingsError, match=r"^CRYPTO_PLATFORM_RETRAIN_COOLDOWN_HOURS='soon': expected a number"
    ):
        _warnings({"CRYPTO_PLATFORM_RETRAIN_COOLDOWN_HOURS": "soon"})
    # both names, same value: the new one is used (and the old one still warned about)
    both, messages = _warnings({"CRYPTO_AUTOMATION": "running", "CRYPTO_PLATFORM_AUTOMATION": "running"})
    assert both.automation and both.sources["automation"] == "CRYPTO_AUTOMATION" and len(messages) == 1
    # both names, different values: which one was meant is not guessed
    with pytest.raises(SettingsError) as err:
        _warnings({"CRYPTO_AUTOMATION": "running", "CRYPTO_PLATFORM_AUTOMATION": "stopped"})
    assert str(err.value) == (
        "CRYPTO_AUTOMATION and its deprecated name CRYPTO_PLATFORM_AUTOMATION are both set, to different "
        "values: remove CRYPTO_PLATFORM_AUTOMATION"
    )


@pytest.mark.parametrize(
    ("var", "hint"),
    [
        ("CRYPTO_LIVE_SENSR", "did you mean CRYPTO_LIVE_SENSOR?"),
        ("CRYPTO_LAKE_ROT", "did you mean CRYPTO_LAKE_ROOT?"),
        (
            "CRYPTO_PLATFORM_WEBHOK_URL",
            "did you mean CRYPTO_WEBHOOK_URL?",
        ),  # a typo of an old name: the new one
        ("CRYPTO_LIVE_INTERVAL", "did you mean CRYPTO_LIVE_INTERVAL_SECONDS?"),
        ("CRYPTO_LIVE_TURBO", "not a setting"),  # our own name family: never someone else's variable
    ],
)
def test_an_unknown_setting_is_an_error_with_a_hint(var: str, hint: str) -> None:
    with pytest.raises(SettingsError) as err:
        _settings({var: "SECRET-VALUE"})
    message = str(err.value)
    assert message.startswith(f"unknown setting {var} ({hint}); settings: CRYPTO_INSTRUMENTS, ")
    assert "SECRET-VALUE" not in message  # a mistyped secret is not echoed


def test_other_crypto_variables_are_someone_elses_a_warning_not_an_error() -> None:
    settings, messages = _warnings({"CRYPTO_API_KEY": "k", "CRYPTOGRAPHY_OPENSSL": "1", "PATH": "/bin"})
    assert settings == PlatformSettings()
    assert len(messages) == 1 and messages[0].startswith(
        "CRYPTO_API_KEY is not a crypto_platform setting (ignored)"
    )


def test_settings_table_shows_values_and_never_secrets(capsys: pytest.CaptureFixture[str]) -> None:
    settings, _ = _warnings({**EVERY_SETTING, "CRYPTO_AUTOMATION": "", "CRYPTO_PLATFORM_AUTOMATION": "on"})
    rows = {var: shown for var, shown, _ in settings.rows()}
    assert rows["CRYPTO_LIVE_INTERVAL_SECONDS"] == "30" and rows["CRYPTO_LIVE_PREDICTIONS"] == "false"
    assert rows["CRYPTO_WEBHOOK_URL"] == "set (via CRYPTO_WEBHOOK_URL)"
    assert rows["MLFLOW_TRACKING_URI"] == "set (via MLFLOW_TRACKING_URI)"
    assert rows["CRYPTO_AUTOMATION"] == "true (via deprecated CRYPTO_PLATFORM_AUTOMATION)"
    assert PlatformSettings().rows()[4][:2] == ("CRYPTO_WEBHOOK_URL", "unset")
    table = settings_table(settings)
    assert "WEBHOOK-TOKEN" not in table and "MLFLOW-PASSWORD" not in table
    assert table.splitlines()[0].split() == ["variable", "value", "meaning"]
    assert len(table.splitlines()) == 1 + len(EVERY_SETTING)


def test_the_demo_logs_beside_its_lake_never_into_the_repository(tmp_path: Path) -> None:
    """The demo's command log follows the lake: data/logs by default, the temp folder of a test's lake."""
    assert demo_log(PlatformSettings()) == PROJECT_DIR / "data" / "logs" / "demo.log"
    assert demo_log(PlatformSettings(lake_root=str(tmp_path / "lake"))) == tmp_path / "logs" / "demo.log"
    on_s3 = PlatformSettings(lake_root="s3://bucket/lake")
    assert demo_log(on_s3) == PROJECT_DIR / "data" / "logs" / "demo.log"
