"""A key-shaped Account or namespace name never reaches the operator's log or Events.

``sk-live-...`` is a valid Kubernetes name: the core prints such a name as
``<name that looks like a key>``; every log line and Event message does too.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Mapping
from typing import Any

import pythonjsonlogger.json

from controller.cluster import hosting
from controller.cluster.runtime import clients
from controller.core import credentials

NAME = "sk-live-abcdef0123456789"


def _logged(*args: Any, exc: bool = False) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(pythonjsonlogger.json.JsonFormatter())
    handler.addFilter(hosting.RedactingFilter())
    logger = logging.getLogger("test-redacting")
    logger.addHandler(handler)
    try:
        if exc:
            try:
                raise RuntimeError(f"apply ConfigMap {NAME}/integration-settings: 409")
            except RuntimeError:
                logger.exception(*args)
        else:
            logger.warning(*args)
    finally:
        logger.removeHandler(handler)
    return stream.getvalue()


def test_a_key_shaped_name_is_masked_in_every_log_line() -> None:
    line = _logged("account %s: wrote %s/integration-settings", NAME, NAME)
    assert NAME[:8] not in line and "<name that looks like a key>" in line
    assert "integration-settings" in line
    traceback = _logged("%s: failed; retrying after a backoff", NAME, exc=True)
    assert NAME[:8] not in traceback and "RuntimeError" in traceback


def test_ordinary_names_are_kept() -> None:
    text = "account acct-123: wrote acct-123/integration-settings (uid 4e1c-b5e3, model dall-e-3)"
    assert credentials.redact(text) == text


def test_an_event_message_is_masked() -> None:
    sent: list[Mapping[str, Any]] = []

    class Session:
        async def request(self, method: str, path: str, body: Any, *rest: Any) -> bytes:
            sent.append(body)
            return b"{}"

    client = clients.Client(Session())  # type: ignore[arg-type]
    involved = {"kind": "Account", "name": "acct", "uid": "u"}
    asyncio.run(client.post_event(involved, "Warning", "OutputConflict", f"namespace {NAME}"))
    assert sent and NAME[:8] not in sent[0]["message"]
