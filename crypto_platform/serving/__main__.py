"""`./run serve` (= `python -m crypto_platform.serving`): the prediction API on uvicorn.

Binds 127.0.0.1 by default (not reachable from other machines unless `--host` says so); the port is
`--port`, else $PORT, else 8000. Everything else comes from the environment (`ServingSettings`).
"""

from __future__ import annotations

import argparse
import os

import uvicorn

from crypto_platform.serving.app import create_app
from crypto_platform.serving.settings import ServingSettings

DEFAULT_PORT = 8000


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="./run serve", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=None, help=f"port (default $PORT, else {DEFAULT_PORT}; 0: any free port)"
    )
    parser.add_argument("--no-cache", action="store_true", help="answer every request from the lake")
    parser.add_argument("--access-log", action="store_true", help="log every request (off: faster)")
    args = parser.parse_args(argv)
    port = args.port if args.port is not None else int(os.environ.get("PORT") or DEFAULT_PORT)
    settings = ServingSettings.from_env(**({"cache": False} if args.no_cache else {}))
    uvicorn.run(
        create_app(settings),
        host=args.host,
        port=port,
        access_log=args.access_log,
        log_level="info",
        server_header=False,
    )


if __name__ == "__main__":
    main()
