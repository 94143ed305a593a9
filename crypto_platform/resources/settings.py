"""The settings in force, shown in the Dagster UI: the `settings` resource, one field per setting.

The UI shows every resource's configuration (Deployment > Resources > settings): here each field is
one setting, its description names the environment variable and what it means, and the value is the
one the code location loaded. A secret (webhook URL, MLflow URI) is passed as an `EnvVar`, so the UI
shows the variable's name, never its value (and its field is marked secret: a plain value is masked).
No asset or sensor requires this resource: the settings reach them when the definitions are built
(crypto_platform/definitions.py); this is their window.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field, create_model

from crypto_platform.platform_settings import PlatformSettings, Setting


def _kind(spec: Setting) -> type:
    return type(spec.default) if isinstance(spec.default, bool | int | float) else str


def _shown(value: Any) -> Any:
    return str(value) if isinstance(value, Path) else value


def _field(spec: Setting) -> Any:
    secret = {"dagster__is_secret": True} if spec.secret else None  # the UI masks the value
    return Field(
        default=_shown(spec.default), description=f"{spec.env}: {spec.doc}", json_schema_extra=secret
    )


SettingsResource: type[dg.ConfigurableResource] = create_model(  # type: ignore[call-overload]
    "SettingsResource",
    __base__=dg.ConfigurableResource,
    __doc__="The platform settings the code location loaded (environment variables, read once).",
    **{spec.name: (_kind(spec), _field(spec)) for spec in PlatformSettings.specs()},
)


def secret(settings: PlatformSettings, name: str) -> str:
    """A secret setting as resource config: an EnvVar of the variable that set it (shown by name), or ''."""
    var = settings.sources.get(name)
    return dg.EnvVar(var) if var else ""


def settings_resource(settings: PlatformSettings) -> dg.ConfigurableResource:
    """The `settings` resource showing `settings` (secrets as EnvVar)."""
    values = {
        spec.name: secret(settings, spec.name) if spec.secret else _shown(getattr(settings, spec.name))
        for spec in PlatformSettings.specs()
    }
    return SettingsResource(**values)
