"""Connection checks, the calls: one authenticated request per key, the cheapest each
provider documents.

* OpenAI (text and DALL-E): ``GET {endpoint}/models`` with ``Authorization: Bearer``.
* Runware: ``POST {endpoint}`` with a JSON array holding one ``authentication``
  task (``{"taskType": "authentication", "apiKey": ...}``); it answers
  ``{"data": [{"taskType": "authentication", ...}]}`` or ``{"errors": [...]}``.

Plain aiohttp (already the operator's HTTP stack), not the ``openai`` package:
the check is one GET, and that client brings pydantic and httpx, and retries
on its own (twice by default), which would hide the 429s and timeouts this
check exists to report. ``trust_env=True`` makes every call honour
``HTTPS_PROXY``, ``HTTP_PROXY`` and ``NO_PROXY``; the TLS context is made with the
session, so ``SSL_CERT_FILE``/``SSL_CERT_DIR`` (a private CA) are read then, not
when aiohttp was imported.

The provider is the other side of a trust boundary. Its answer arrives in any
number of writes, chunked and compressed: the body is read whole, up to
``MAX_BODY`` decoded bytes (aiohttp inflates a bounded amount per read, so a
compression bomb stops at the bound too), all within the check's timeout. A
check never raises, whatever the provider sends (deep or huge JSON, malformed
HTTP, a stall, redirects): every key gets one ``Outcome``. Of the provider's
text only the error code is kept (``connections.provider_code``: a short
identifier with no 8-character run of any key); reason phrases and headers are
never copied.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import aiohttp
from aiohttp import http_exceptions

from controller.core import connections  # the same concept one layer down: what answers mean

Target = connections.Target
Outcome = connections.Outcome
Reason = connections.Reason

# A models list is ~50-100 KiB decoded; past 1 MiB an answer is not one the provider
# documents, and is not read further.
MAX_BODY = 1 << 20


class _TooLarge(Exception):
    pass


def session() -> aiohttp.ClientSession:
    """The session for provider calls: proxy variables honoured, no cookies kept, and the
    system's trust store as ``SSL_CERT_FILE``/``SSL_CERT_DIR`` name it now."""
    return aiohttp.ClientSession(
        trust_env=True,
        cookie_jar=aiohttp.DummyCookieJar(),
        headers={"User-Agent": "settings-controller (connection check)"},
        connector=aiohttp.TCPConnector(ssl=ssl.create_default_context()),
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
                try:
                    raw = await _read(response.content, MAX_BODY)
                except BaseException:
                    _abort(response)
                    raise
    except TimeoutError:  # a status line without its whole body is no answer either
        return Outcome(target, Reason.TIMEOUT, time.perf_counter() - started, now)
    except _TooLarge:
        return Outcome(
            target,
            Reason.UNEXPECTED_RESPONSE,
            time.perf_counter() - started,
            now,
            status=status,
            detail=f"body larger than {MAX_BODY // 1024} KiB",
        )
    except (aiohttp.ClientError, http_exceptions.HttpProcessingError, OSError, ValueError) as e:
        # The class name only: exception texts can carry URLs with userinfo, and a malformed
        # answer's text (a status line, a header) is the provider's, never copied.
        no_answer = status is None and not isinstance(e, aiohttp.ClientResponseError)
        return Outcome(
            target,
            Reason.UNREACHABLE if no_answer else Reason.UNEXPECTED_RESPONSE,
            time.perf_counter() - started,
            now,
            status=status,
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


def _abort(response: aiohttp.ClientResponse) -> None:
    """Drop the connection of an answer not read to its end (a stall, a bomb, a timeout): a
    graceful TLS close would wait on the provider, up to 30 s per check, for its goodbye."""
    connection = response.connection
    transport = connection.transport if connection is not None else None
    if transport is not None:
        transport.abort()


async def _read(stream: aiohttp.StreamReader, limit: int) -> bytes:
    """The whole body, decoded, however many writes it came in; ``_TooLarge`` past ``limit``."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await stream.read(limit + 1 - size)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise _TooLarge


async def check_all(
    targets: Iterable[Target],
    key_of: Callable[[Target], str | None],
    timeout: float = 10.0,
    concurrency: int = 4,
    http: aiohttp.ClientSession | None = None,
) -> list[Outcome]:
    """Check every target, ``concurrency`` at a time, in the order given: one Outcome each,
    whatever happens to the others; no detail holds an 8-character run of any key checked."""
    targets = list(targets)
    slots = asyncio.Semaphore(concurrency)
    own = http is None
    client = http or session()
    keys: list[str] = []

    async def one(target: Target) -> Outcome:
        async with slots:
            started = time.perf_counter()
            try:
                key = key_of(target)
                if key:
                    keys.append(key)
                return await check(client, target, key, timeout)
            except Exception as e:  # a bug here must cost one row, never the round
                return Outcome(
                    target,
                    Reason.UNEXPECTED_RESPONSE,
                    time.perf_counter() - started,
                    _now(),
                    detail=f"check failed: {type(e).__name__}",
                )

    try:
        outcomes = list(await asyncio.gather(*(one(t) for t in targets)))
    finally:
        if own:
            await client.close()
            # Closed TLS transports release their sockets over the loop's next iterations
            # (aiohttp's advice: a short sleep); a caller's asyncio.run closes the loop next.
            await asyncio.sleep(0.05)
    return [
        dataclasses.replace(o, detail=connections.scrub(o.detail, keys)) if o.detail else o
        for o in outcomes
    ]


def _json(raw: bytes) -> Any:
    """The decoded body, or None when it is not JSON: malformed, not UTF-8, an integer of
    thousands of digits, or nested past the interpreter's recursion limit (the C decoder
    recurses, and stops cleanly with RecursionError)."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
