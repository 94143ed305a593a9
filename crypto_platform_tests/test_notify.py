"""Notifier against a real local HTTP receiver (127.0.0.1, ephemeral port)."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from crypto_platform.monitoring.notify import (
    Notifier,
    format_check_failure,
    format_run_failure,
    slack_payload,
)
from crypto_platform_tests.fixtures import recorded_connections


@dataclass
class Receiver:
    url: str
    requests: list[dict] = field(default_factory=list)
    status: int = 200
    delay_s: float = 0.0


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    rec = Receiver(url=f"http://127.0.0.1:{server.server_address[1]}/hooks/T000/B000")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            rec.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
            time.sleep(rec.delay_s)
            self.send_response(rec.status)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server.RequestHandlerClass = Handler
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield rec
    server.shutdown()
    server.server_close()


@pytest.mark.slow
def test_send_posts_slack_json(receiver: Receiver) -> None:
    ok = Notifier(receiver.url).send("Check failed: candles_1m", {"partition": "2024-01-01|x", "rows": 1440})
    assert ok is True
    assert len(receiver.requests) == 1
    req = receiver.requests[0]
    assert req["path"] == "/hooks/T000/B000"
    assert req["headers"]["Content-Type"].startswith("application/json")
    body = json.loads(req["body"])
    assert body["text"] == "Check failed: candles_1m\npartition: 2024-01-01|x\nrows: 1440"
    header = {"type": "plain_text", "text": "Check failed: candles_1m"}
    assert body["blocks"][0] == {"type": "header", "text": header}
    assert body["blocks"][1] == {
        "type": "section",
        "fields": [
            {"type": "mrkdwn", "text": "*partition*\n2024-01-01|x"},
            {"type": "mrkdwn", "text": "*rows*\n1440"},
        ],
    }


@pytest.mark.slow
def test_no_url_sends_nothing(receiver: Receiver) -> None:
    with recorded_connections() as attempts:
        for url in (None, "", "   "):
            n = Notifier(url)
            assert not n.enabled
            assert n.send("title", {"a": 1}) is False
    assert attempts == []  # no connection anywhere, not just none to this receiver
    assert receiver.requests == []

    # the guard does see a real send (so the empty list above means something)
    port = receiver.url.split(":")[2].split("/")[0]
    with recorded_connections() as attempts:
        assert Notifier(receiver.url).send("title", {"a": 1}) is True
    assert any(a.startswith("connect ('127.0.0.1', " + port) for a in attempts), attempts


@pytest.mark.slow
def test_failures_are_logged_not_raised(receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="crypto_platform.monitoring.notify")
    receiver.status = 500
    assert Notifier(receiver.url).send("t", {}) is False
    assert len(receiver.requests) == 1
    assert "HTTP 500" in caplog.text
    assert "/hooks/T000" not in caplog.text  # the webhook URL is a secret: only the host is logged

    receiver.status, receiver.delay_s = 200, 2.0
    assert Notifier(receiver.url, timeout_s=0.3).send("slow", {}) is False  # timed out: logged, not raised
    assert "notification 'slow'" in caplog.text and "timed out" in caplog.text

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    assert Notifier(f"http://127.0.0.1:{closed}/x", timeout_s=1).send("refused", {}) is False
    assert Notifier("file:///etc/passwd").send("not http", {}) is False
    assert Notifier("not a url").send("garbage", {}) is False


@pytest.mark.slow
def test_format_helpers_round_trip(receiver: Receiver) -> None:
    title, fields = format_check_failure(
        "silver/candles_1m",
        "2024-01-01|binance.BTC-USDT",
        "candles_suite",
        {"failed_expectations": "high_ge_low", "high_ge_low.unexpected_count": 3, "share": 0.123456789},
    )
    assert title == "Check failed: silver/candles_1m / candles_suite"
    assert fields["partition"] == "2024-01-01|binance.BTC-USDT"
    assert fields["high_ge_low.unexpected_count"] == "3" and fields["share"] == "0.123457"
    assert Notifier(receiver.url).send(title, fields)
    body = json.loads(receiver.requests[0]["body"])
    assert "*high_ge_low.unexpected_count*\n3" in [f["text"] for f in body["blocks"][1]["fields"]]

    title, fields = format_run_failure("daily_pipeline", "abc-123", "ValueError: boom\n" + "x" * 5000)
    assert title == "Run failed: daily_pipeline"
    assert fields["run_id"] == "abc-123" and len(fields["error"]) < 2000


def test_many_fields_split_into_sections() -> None:
    payload = slack_payload("t" * 300, {f"k{i}": i for i in range(23)})
    assert len(payload["blocks"][0]["text"]["text"]) == 150
    assert [len(b["fields"]) for b in payload["blocks"][1:]] == [10, 10, 3]
