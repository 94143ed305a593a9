"""A throwaway S3-compatible server for tests: moto's `moto_server` on 127.0.0.1, in-memory.

`moto_server` is not part of the project's locked environment; it is on this machine's image (the
system Python's `moto[server]`) and is run as a separate process. A missing `moto_server` is an error
naming what to install, never a skip.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

from crypto_platform_tests.postgres_server import free_port


def moto_server_command() -> str:
    found = shutil.which("moto_server")
    if found is None:
        raise RuntimeError("moto_server not found on PATH: install it with `pip install 'moto[server]'`")
    return found


@contextmanager
def s3_server(timeout_s: float = 20.0) -> Iterator[str]:
    """Start moto_server on a free loopback port; yields its endpoint URL, stops it on exit."""
    port = free_port()
    # its request log goes to a file: a pipe nobody reads fills after a few hundred requests and then
    # blocks the server (every client waits forever)
    log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed in the finally below
    proc = subprocess.Popen(
        [moto_server_command(), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=log,
        text=True,
    )
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"moto_server exited with {proc.returncode}: {log.read()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"moto_server did not listen on 127.0.0.1:{port} in {timeout_s} s"
                    ) from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
