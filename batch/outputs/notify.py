"""--notify-url: POST the run's summary to a webhook when the run ends.

The body is summary.json plus a Slack-compatible `text` field (one line: counts and exit code),
so the same URL works for a Slack incoming webhook and for a home-grown receiver.

A notification is a courtesy, never part of the run's outcome: any failure to deliver it (refused,
reset, TLS, timeout, a non-2xx answer, a redirect) is logged as a warning and `notify` returns
False; it never raises for those. TLS certificates are verified (a CA bundle may be given for a
private receiver). Webhook URLs often carry their secret in the path (Slack's do), so the log
names only the scheme, host and port.
"""

from __future__ import annotations

import json
import logging
import os
import ssl

import aiohttp
from yarl import URL

from batch.model import Status
from batch.outputs.report import Summary, summary_json_default

log = logging.getLogger(__name__)

_EXIT_WORDS = {
    0: "ok",
    1: "some devices failed",
    2: "usage error",
    3: "aborted",
    4: "storage error",
}


def notification_text(summary: Summary) -> str:
    """One line for a chat message: counts, duration and exit code (Slack-escaped)."""
    counts = ", ".join(f"{summary.counts_by_status.get(s, 0)} {s.value}" for s in Status)
    where = " (sandbox)" if summary.sandbox else ""
    words = _EXIT_WORDS.get(summary.exit_code, "stopped")
    line = (
        f"fleet-renew{where}: {counts} of {summary.devices} devices"
        f" in {summary.duration_s:.0f} s; exit {summary.exit_code} ({words})"
    )
    if summary.aborted_reason:
        line += f"; aborted: {summary.aborted_reason}"
    line = " ".join(line.split())  # one line, whatever the reason said
    # Slack reads <...> as links and mentions: escape its three control characters.
    return line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def notification_body(summary: Summary) -> bytes:
    """The JSON body: summary.json's document plus `text`."""
    document = summary.to_json()
    document["text"] = notification_text(summary)
    return json.dumps(document, default=summary_json_default).encode("utf-8")


async def notify(
    url: str,
    summary: Summary,
    *,
    timeout_s: float = 10.0,
    ca_bundle: str | os.PathLike[str] | None = None,
) -> bool:
    """POST the summary to `url`; True on a 2xx answer, else log a warning and return False."""
    body = notification_body(summary)
    where = _safe_origin(url)
    context = ssl.create_default_context(cafile=ca_bundle) if ca_bundle else True
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session,
            session.post(
                url,
                data=body,
                headers={"Content-Type": "application/json"},
                allow_redirects=False,  # a redirect would turn the POST into a GET elsewhere
                ssl=context,
            ) as response,
        ):
            status = response.status
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
        # ValueError: a malformed URL (aiohttp's InvalidURL is one, and yarl raises it too).
        log.warning("notification to %s failed: %s", where, _reason(exc))
        return False
    if not 200 <= status < 300:
        log.warning("notification to %s failed: HTTP %d", where, status)
        return False
    log.info("notification sent to %s", where)
    return True


def _reason(exc: BaseException) -> str:
    """The kind of failure, without str(exc): some aiohttp errors quote the full URL."""
    if isinstance(exc, aiohttp.ClientConnectorError) and exc.os_error.strerror:
        return f"{type(exc).__name__} ({exc.os_error.strerror})"
    return type(exc).__name__


def _safe_origin(url: str) -> str:
    """scheme://host:port of `url`, without the path, query or user info that may be secret."""
    try:
        parsed = URL(url)
        return f"{parsed.scheme}://{parsed.host}:{parsed.port}" if parsed.host else "(bad URL)"
    except ValueError:
        return "(bad URL)"
