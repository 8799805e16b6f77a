"""One authenticated call per key, the cheapest each provider documents.

* OpenAI (text and DALL-E): ``GET {endpoint}/models`` with ``Authorization: Bearer``.
* Runware: ``POST {endpoint}`` with a JSON array holding one ``authentication``
  task (``{"taskType": "authentication", "apiKey": ...}``); it answers
  ``{"data": [{"taskType": "authentication", ...}]}`` or ``{"errors": [...]}``.

Plain aiohttp (already the operator's HTTP stack), not the ``openai`` package:
the check is one GET, and that client brings pydantic and httpx, and retries
on its own (twice by default), which would hide the 429s and timeouts this
check exists to report. ``trust_env=True`` makes every call honour
``HTTPS_PROXY``, ``HTTP_PROXY`` and ``NO_PROXY``. Provider bodies are read only
to tell success from failure; of their text only the error code is kept
(``connections.provider_code``: a short identifier with nothing of the key).
"""

from __future__ import annotations

import asyncio
import datetime
import json
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import aiohttp

from controller.core import connections

Target = connections.Target
Outcome = connections.Outcome
Reason = connections.Reason

_MAX_BODY = 1 << 20  # a models list is ~50 KiB; anything past 1 MiB is not needed to decide


def session() -> aiohttp.ClientSession:
    """The session for provider calls: proxy variables honoured, no cookies kept."""
    return aiohttp.ClientSession(
        trust_env=True,
        cookie_jar=aiohttp.DummyCookieJar(),
        headers={"User-Agent": "settings-controller (key check)"},
    )


def _openai(target: Target, key: str) -> tuple[str, str, dict[str, str], Any]:
    return "GET", f"{target.endpoint}/models", {"Authorization": f"Bearer {key}"}, None


def _runware(target: Target, key: str) -> tuple[str, str, dict[str, str], Any]:
    return (
        "POST",
        target.endpoint,
        {"Content-Type": "application/json"},
        [{"taskType": "authentication", "apiKey": key}],
    )


def _openai_code(body: Any) -> Any:
    error = body.get("error") if isinstance(body, dict) else None
    return error.get("code") if isinstance(error, dict) else None


def _runware_code(body: Any) -> Any:
    errors = body.get("errors") if isinstance(body, dict) else None
    first = errors[0] if isinstance(errors, list) and errors else None
    return first.get("code") if isinstance(first, dict) else None


def _openai_ok(body: Any) -> Reason:
    return (
        Reason.VERIFIED if isinstance(body, dict) and "data" in body else Reason.UNEXPECTED_RESPONSE
    )


def _runware_ok(body: Any) -> Reason:
    if not isinstance(body, dict):
        return Reason.UNEXPECTED_RESPONSE
    errors = body.get("errors")
    if isinstance(errors, list) and errors:
        codes = {e.get("code") for e in errors if isinstance(e, dict)}
        return Reason.INVALID_KEY if "invalidApiKey" in codes else Reason.UNEXPECTED_RESPONSE
    data = body.get("data")
    if isinstance(data, list) and any(
        isinstance(d, dict) and d.get("taskType") == "authentication" for d in data
    ):
        return Reason.VERIFIED
    return Reason.UNEXPECTED_RESPONSE


# provider -> (the request, what a 2xx body says, where an error body keeps its code)
_CALLS: Mapping[str, tuple[Callable[..., Any], Callable[[Any], Reason], Callable[[Any], Any]]] = {
    "openai": (_openai, _openai_ok, _openai_code),
    "runware": (_runware, _runware_ok, _runware_code),
}


def supported(provider: str) -> bool:
    return provider in _CALLS


async def check(
    http: aiohttp.ClientSession, target: Target, key: str | None, timeout: float
) -> Outcome:
    """Check one key; never raises for anything the network or the provider does."""
    now = _now()
    if not key:
        return Outcome(target, Reason.MISSING_KEY, 0.0, now)
    build, interpret, code_of = _CALLS[target.provider]
    method, url, headers, payload = build(target, key)
    started = time.perf_counter()
    status: int | None = None
    retry_after = None
    try:
        async with asyncio.timeout(timeout):
            async with http.request(
                method, url, headers=headers, json=payload, allow_redirects=False
            ) as response:
                status = response.status
                retry_after = connections.retry_after_seconds(response.headers.get("Retry-After"))
                raw = await response.content.read(_MAX_BODY)
    except TimeoutError:
        return Outcome(target, Reason.TIMEOUT, time.perf_counter() - started, now)
    except (aiohttp.ClientError, OSError, ValueError) as e:
        # The class name only: exception texts can carry URLs with userinfo.
        return Outcome(
            target,
            Reason.UNREACHABLE,
            time.perf_counter() - started,
            now,
            detail=type(e).__name__,
        )
    latency = time.perf_counter() - started
    body = _json(raw)
    reason = connections.reason_for_status(status)
    if reason is Reason.VERIFIED:
        reason = interpret(body)
    code = connections.provider_code(code_of(body), [key])
    detail = f"provider code {code}" if code and reason is not Reason.VERIFIED else ""
    return Outcome(
        target, reason, latency, now, status=status, retry_after=retry_after, detail=detail
    )


async def check_all(
    targets: Iterable[Target],
    key_of: Callable[[Target], str | None],
    timeout: float = 10.0,
    concurrency: int = 4,
    http: aiohttp.ClientSession | None = None,
) -> list[Outcome]:
    """Check every target, ``concurrency`` at a time, in the order given."""
    slots = asyncio.Semaphore(concurrency)
    own = http is None
    client = http or session()

    async def one(target: Target) -> Outcome:
        async with slots:
            return await check(client, target, key_of(target), timeout)

    try:
        return list(await asyncio.gather(*(one(t) for t in targets)))
    finally:
        if own:
            await client.close()


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
