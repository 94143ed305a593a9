"""Slack-compatible webhook notifications (stdlib urllib); never raises into the pipeline.

No webhook URL configured -> nothing is sent and no connection is attempted. A failed post (bad URL,
refused connection, timeout, non-2xx answer) is logged and reported as False. The URL is a secret:
logs name only its host.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)

_MAX_TITLE = 150  # Slack header block limit
_MAX_FIELD = 1900  # Slack section field text limit is 2000
_FIELDS_PER_SECTION = 10  # Slack limit


class Notifier:
    """Posts alerts to a Slack-compatible incoming webhook, only when a URL is configured."""

    def __init__(self, webhook_url: str | None, timeout_s: float = 5) -> None:
        self.webhook_url = webhook_url.strip() if webhook_url and webhook_url.strip() else None
        self.timeout_s = timeout_s

    @property
    def enabled(self) -> bool:
        return self.webhook_url is not None

    def send(self, title: str, fields: Mapping[str, Any] | None = None) -> bool:
        """Post the alert; True when the webhook accepted it, False when disabled or on any failure."""
        if self.webhook_url is None:
            return False
        host = urlsplit(self.webhook_url).hostname or "?"
        if urlsplit(self.webhook_url).scheme not in {"http", "https"}:
            logger.warning("notification not sent: webhook URL for %s is not http(s)", host)
            return False
        body = json.dumps(slack_payload(title, fields or {}), default=str).encode()
        request = urllib.request.Request(
            self.webhook_url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json; charset=utf-8"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                status = response.status
        except urllib.error.HTTPError as exc:
            logger.warning("notification %r rejected by %s: HTTP %s", title, host, exc.code)
            return False
        except Exception as exc:  # URLError, timeouts, resets...: alerting must never break a run
            logger.warning("notification %r to %s failed: %s", title, host, exc)
            return False
        if not 200 <= status < 300:
            logger.warning("notification %r to %s answered HTTP %s", title, host, status)
            return False
        return True


def slack_payload(title: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """Slack message JSON: plain `text` fallback plus header and field `blocks`."""
    items = [(str(k), _clip(_text(v), _MAX_FIELD)) for k, v in fields.items()]
    text = "\n".join([title, *[f"{k}: {v}" for k, v in items]])
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _clip(title, _MAX_TITLE)}}
    ]
    for i in range(0, len(items), _FIELDS_PER_SECTION):
        chunk = items[i : i + _FIELDS_PER_SECTION]
        blocks.append(
            {"type": "section", "fields": [{"type": "mrkdwn", "text": f"*{k}*\n{v}"} for k, v in chunk]}
        )
    return {"text": text, "blocks": blocks}


def format_check_failure(
    asset: str, partition: str | None, check: str, figures: Mapping[str, Any]
) -> tuple[str, dict[str, str]]:
    """(title, fields) for a failed asset check: `Notifier.send(*format_check_failure(...))`."""
    title = f"Check failed: {asset} / {check}"
    fields = {"asset": asset, "partition": partition or "-", "check": check}
    fields.update({str(k): _text(v) for k, v in figures.items()})
    return title, fields


def format_run_failure(job: str, run_id: str, error: str) -> tuple[str, dict[str, str]]:
    """(title, fields) for a failed run: `Notifier.send(*format_run_failure(...))`."""
    return f"Run failed: {job}", {"job": job, "run_id": run_id, "error": _clip(error.strip(), _MAX_FIELD)}


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
