"""Which version an alias points at, read straight from a local MLflow SQLite store (no MLflow import).

A live run asks this every tick (a new champion is served on the next tick); through `MlflowClient`
the same question costs the MLflow import (seconds in every fresh run process). The query reads
MLflow's own tables (`registered_model_aliases`, `model_versions`, `model_version_tags`, default
workspace) read-only; when the store is not a local SQLite file, or its schema is not the one
expected (another MLflow version), the answer is None and the caller asks MLflow itself.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from crypto_platform.ml.model_info import ModelVersionInfo, info_from_tags, no_alias_error

_VERSION = """
select v.version, v.run_id, v.status from registered_model_aliases a
join model_versions v on v.workspace = a.workspace and v.name = a.name and v.version = a.version
where a.workspace = 'default' and a.name = ? and a.alias = ?
"""
_TAGS = "select key, value from model_version_tags where workspace = 'default' and name = ? and version = ?"


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a `sqlite:///…` tracking URI (relative to the working directory), else None."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return Path(tracking_uri.removeprefix("sqlite:///")).absolute()


def alias_info(tracking_uri: str, model_name: str, alias: str) -> ModelVersionInfo | None:
    """The version behind `alias`, as `registry.alias_info` answers it; None: ask MLflow instead.

    NoChampionError / NoAliasError when the store has no such alias (or no such model), and when its
    SQLite file does not exist yet: nothing was ever registered there (MLflow would first create the
    store, seconds of imports and migrations in a fresh process, to give the same answer).
    """
    path = sqlite_path(tracking_uri)
    if path is None:
        return None
    if not path.exists():
        raise no_alias_error(alias, model_name, tracking_uri)
    try:
        with closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=30)) as db:
            row = db.execute(_VERSION, (model_name, alias)).fetchone()
            if row is None:
                raise no_alias_error(alias, model_name, tracking_uri)
            version, run_id, status = row
            if status != "READY":
                return None  # registration still in progress: MLflow's own answer decides
            tags = dict(db.execute(_TAGS, (model_name, version)).fetchall())
    except sqlite3.Error:
        return None  # another MLflow schema (or a locked / damaged file): MLflow answers
    return info_from_tags(model_name, str(version), run_id, alias, tags)


def resolve(tracking_uri: str, model_name: str, alias: str) -> ModelVersionInfo:
    """The version behind `alias`: from a local store without importing MLflow when it can answer
    (`alias_info`), else from MLflow (`registry.alias_info`); NoChampionError / NoAliasError when unset."""
    info = alias_info(tracking_uri, model_name, alias)
    if info is None:  # not a local SQLite store (or a registration in progress): MLflow answers
        from crypto_platform.ml import registry

        info = registry.alias_info(tracking_uri, model_name, alias)
    return info
