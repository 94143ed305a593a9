"""DuckDB over an S3 lake, offline: the `httpfs` extension from the locked `duckdb-extension-httpfs`
package (built for the locked duckdb, Python and CLI alike) and an S3 secret for the lake's endpoint.

DuckDB downloads extensions on first use by default, which fails without internet; the package ships
the extension file, which `LOAD '<file>'` takes directly. The secret holds the credentials of the
process (boto3's standard chain, as the lake uses them) and is TEMPORARY: it lives in the connection,
never in the warehouse file.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import duckdb

from crypto_platform.resources.lake.s3 import S3Store


def httpfs_extension() -> Path:
    """The httpfs extension file for the installed duckdb (a clear error when the package is missing)."""
    try:
        import duckdb_extension_httpfs
    except ImportError as exc:
        raise RuntimeError(
            "reading an s3:// lake with DuckDB needs the `duckdb-extension-httpfs` package "
            "(a locked dependency)"
        ) from exc
    path = Path(duckdb_extension_httpfs.__file__).parent / "extensions" / f"v{duckdb.__version__}"
    found = path / "httpfs.duckdb_extension"
    if not found.is_file():
        raise RuntimeError(
            f"no httpfs extension for duckdb {duckdb.__version__} at {found}: pin both to one version"
        )
    return found


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def secret_sql(store: S3Store, name: str = "crypto_lake", *, from_env: bool = False) -> str:
    """CREATE SECRET for the lake's bucket: endpoint and URL style of the store; the credentials the
    process holds now, or (`from_env`, for a script a user runs) read by DuckDB from AWS_* variables."""
    options = {"TYPE": "s3", "SCOPE": _quote(f"s3://{store.bucket}"), "REGION": _quote(store.region)}
    if store.endpoint_url:
        url = urlsplit(store.endpoint_url)
        options |= {
            "ENDPOINT": _quote(url.netloc),
            "URL_STYLE": "'path'",
            "USE_SSL": str(url.scheme == "https"),
        }
    if from_env:
        options |= {"KEY_ID": "getenv('AWS_ACCESS_KEY_ID')", "SECRET": "getenv('AWS_SECRET_ACCESS_KEY')"}
    else:
        opts = store.storage_options
        if "aws_access_key_id" in opts:
            options |= {
                "KEY_ID": _quote(opts["aws_access_key_id"]),
                "SECRET": _quote(opts["aws_secret_access_key"]),
            }
        if "aws_session_token" in opts:
            options["SESSION_TOKEN"] = _quote(opts["aws_session_token"])
    body = ", ".join(f"{k} {v}" for k, v in options.items())
    return f"CREATE OR REPLACE TEMPORARY SECRET {name} ({body})"


def connect_s3(con: duckdb.DuckDBPyConnection, store: S3Store) -> duckdb.DuckDBPyConnection:
    """Make `con` read the lake's bucket: httpfs loaded from the locked package, a temporary secret."""
    con.execute(f"LOAD {_quote(str(httpfs_extension()))}")
    con.execute(secret_sql(store))
    return con
