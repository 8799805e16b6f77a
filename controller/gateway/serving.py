"""The HTTP side: OpenAI's routes, each request authenticated, enforced and proxied.

- ``POST /v1/chat/completions`` and ``POST /v1/images/generations``: the body is checked and
  filled by ``core.enforcement``, sent to ``{endpoint}/chat/completions`` (or
  ``/images/generations``) of the credential the integration uses, with the platform key
  as ``Authorization: Bearer``. ``GET /v1/models``: the models this account may use.
- Errors are OpenAI-shaped (``{"error": {"message", "type", "param", "code"}}``) so the
  official SDKs raise their usual exceptions; they name the reason, never the token.
- The provider's answer passes through: status, body and a few headers (content type,
  request id, ``Retry-After``), never its reason phrase or other headers. Error answers
  are scrubbed of key fragments (``connections.scrub``, string by string inside JSON);
  any answer that holds a run of 8 characters of a key is scrubbed the same way. Nothing
  else is rewritten: a successful answer goes out byte for byte.
- ``stream: true``: the events are written as they arrive, chunk by chunk. A chunk's
  tail that could begin a key fragment (up to 7 bytes, only when they occur in a key) waits
  for the next chunk, so a fragment split across two reads is caught too; an SSE event
  ends with ``\\n\\n``, which no key holds, so nothing is held in practice. A client that
  goes away cancels the handler (``handler_cancellation``), which closes the upstream
  connection.
- Bounds: the request body (``max_body``, 413), the answer (``max_answer``, 502), the
  upstream connect and read timeouts (504 ``provider_timeout``; while streaming, the
  longest silence between two chunks), and the upstream connection pool (``connections``:
  requests beyond it wait for a free connection). ``HTTPS_PROXY``/``NO_PROXY`` (and a
  proxy's credentials in ``.netrc``) are honoured as aiohttp's ``trust_env`` reads them, but
  once, at start, and per endpoint: ``trust_env`` reads the environment and ``.netrc`` again
  on a worker thread for every request, which was 40 % of the gateway's CPU at 500
  requests/s. Redirects are not followed (the key would travel with them), and a plain
  ``http://`` endpoint on another host gets no key unless ``allow_insecure`` (502 saying so;
  ``test-connection``'s rule: loopback is allowed).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import json
import logging
import ssl
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import aiohttp
from aiohttp import web, web_protocol

from controller.core import catalog, connections, enforcement, merging
from controller.gateway import metrics, sources

log = logging.getLogger("settings_controller.gateway")

INVALID_TOKEN = "invalid_token"
KEY_MISSING = "key_missing"
UNREACHABLE = "provider_unreachable"
TIMEOUT = "provider_timeout"
TOO_LARGE = "body_too_large"
UNKNOWN_ROUTE = "unknown_route"
MALFORMED = "malformed_request"
PASSED_HEADERS = ("Content-Type", "X-Request-Id", "OpenAI-Processing-Ms", "Retry-After")
EVENT_STREAM = "text/event-stream"

Rule = Callable[
    [catalog.Catalog, merging.AccountResult, Mapping[str, Any]],
    enforcement.Admitted | enforcement.Refusal,
]


@dataclasses.dataclass(frozen=True)
class Limits:
    max_body: int = 4 << 20  # bytes of a request body
    max_answer: int = 32 << 20  # bytes of a provider's (non-streamed) answer, decoded
    timeout: float = 60.0  # seconds until the provider's headers, and between stream chunks
    connect_timeout: float = 10.0
    connections: int = 100  # upstream connections at once
    allow_insecure: bool = False  # send keys to plain http:// endpoints on other hosts too


class _TooLarge(Exception):
    pass


class _Scrubber:
    """Key fragments out of provider bytes: a quick test (a run of 8 characters of a key,
    searched in C), the full ``connections.scrub`` only when it hits, or on error answers."""

    def __init__(self, secrets: Sequence[str]) -> None:
        self.secrets = tuple(secrets)
        w = connections.WINDOW
        raw = [s.encode() for s in self.secrets if s]
        self.windows = tuple({s[i : i + w] for s in raw for i in range(max(len(s) - w + 1, 1))})
        # Every tail (1..7 bytes) that a key holds: what may begin a fragment.
        self.tails = frozenset(
            s[i : i + n] for s in raw for n in range(1, w) for i in range(len(s))
        )

    def leaks(self, data: bytes) -> bool:
        return any(window in data for window in self.windows)

    def hold(self, data: bytes) -> int:
        for n in range(min(connections.WINDOW - 1, len(data)), 0, -1):
            if data[-n:] in self.tails:
                return n
        return 0

    def text(self, text: str) -> str:
        return connections.scrub(text, self.secrets)

    def body(self, data: bytes) -> bytes:
        """``data`` with key fragments scrubbed: string by string when it is JSON (so it stays
        JSON the SDK can read), else as text."""
        text = data.decode("utf-8", "replace")
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):
            return self.text(text).encode()
        return json.dumps(self._value(value)).encode()

    def _value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self._value(v) for v in value]
        if isinstance(value, dict):
            return {self.text(str(k)): self._value(v) for k, v in value.items()}
        return value


def error(refusal: enforcement.Refusal) -> web.Response:
    headers = {"WWW-Authenticate": "Bearer"} if refusal.status == 401 else None
    return web.json_response(refusal.body(), status=refusal.status, headers=headers)


def _usage(value: Any) -> tuple[int, int]:
    usage = value.get("usage") if isinstance(value, dict) else None
    if not isinstance(usage, dict):
        return 0, 0
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    return (
        prompt if isinstance(prompt, int) and not isinstance(prompt, bool) else 0,
        completion if isinstance(completion, int) and not isinstance(completion, bool) else 0,
    )


@dataclasses.dataclass
class _Request:
    """What one request has come to, for the metrics and the log line."""

    route: str
    started: float
    plan: str = "none"
    account: str | None = None
    namespace: str | None = None
    outcome: str = "ok"
    waited: float = 0.0  # seconds spent waiting on the provider


class Gateway:
    def __init__(
        self,
        source: sources.Source,
        limits: Limits | None = None,
        counted: metrics.Metrics | None = None,
    ) -> None:
        self.source = source
        self.limits = limits or Limits()
        self.metrics = counted or metrics.Metrics()
        self._session: aiohttp.ClientSession | None = None
        self._scrubber = _Scrubber(())
        self._proxies: dict[str, aiohttp.helpers.ProxyInfo] = {}
        self._routes: dict[str, tuple[Any, Any]] = {}  # endpoint -> (proxy, proxy auth)

    async def open(self) -> None:
        lim = self.limits
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=lim.connections,
                limit_per_host=lim.connections,
                ssl=ssl.create_default_context(),
            ),
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=lim.connect_timeout, sock_read=lim.timeout
            ),
            trust_env=False,  # read once here instead (``_route``)
            auto_decompress=True,
            raise_for_status=False,
        )

        self._proxies = aiohttp.helpers.proxies_from_env()

    def _route(self, endpoint: str) -> tuple[Any, Any]:
        """The proxy (and its credentials) for ``endpoint``, as ``trust_env`` would choose."""
        hit = self._routes.get(endpoint)
        if hit is None:
            parts = urllib.parse.urlsplit(endpoint)
            info = self._proxies.get(parts.scheme)
            if info is None or urllib.request.proxy_bypass(parts.netloc):
                hit = (None, None)
            else:
                hit = (info.proxy, info.proxy_auth)
            self._routes[endpoint] = hit
        return hit

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.limits.max_body)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/images/generations", self.images)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_route("*", "/{tail:.*}", self.unknown)
        return app

    # --- routes ---------------------------------------------------------------------

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._proxy(request, "chat", enforcement.chat, "/chat/completions")

    async def images(self, request: web.Request) -> web.StreamResponse:
        return await self._proxy(request, "images", enforcement.image, "/images/generations")

    async def models(self, request: web.Request) -> web.StreamResponse:
        state = _Request("models", time.perf_counter())
        try:
            who = await self._who(request, state)
            if isinstance(who, enforcement.Refusal):
                return self._refuse(state, who)
            data = [
                {"id": m, "object": "model", "created": 0, "owned_by": "settings-controller"}
                for m in enforcement.models(who.result)
            ]
            return web.json_response({"object": "list", "data": data})
        finally:
            self._done(state)

    async def healthz(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text="ok\n")

    async def unknown(self, request: web.Request) -> web.StreamResponse:
        return error(
            enforcement.Refusal(
                404,
                UNKNOWN_ROUTE,
                "this gateway serves POST /v1/chat/completions, POST /v1/images/generations "
                "and GET /v1/models",
            )
        )

    # --- the steps ------------------------------------------------------------------

    async def _who(
        self, request: web.Request, state: _Request
    ) -> sources.Settings | enforcement.Refusal:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return enforcement.Refusal(
                401, INVALID_TOKEN, "no bearer token: send Authorization: Bearer <token>"
            )
        namespace = await self.source.authenticate(token)
        if isinstance(namespace, enforcement.Refusal):
            return namespace
        state.namespace = namespace
        settings = self.source.settings(namespace)
        if isinstance(settings, sources.Settings):
            state.plan, state.account = settings.plan, settings.account
        return settings

    async def _body(self, request: web.Request) -> Mapping[str, Any] | enforcement.Refusal:
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return enforcement.Refusal(
                413, TOO_LARGE, f"the request body is larger than {self.limits.max_body} bytes"
            )
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):
            return enforcement.Refusal(400, enforcement.INVALID_VALUE, "the body is not JSON")
        if not isinstance(body, dict):
            return enforcement.Refusal(
                400, enforcement.INVALID_VALUE, "the body must be a JSON object"
            )
        return body

    def _refuse(self, state: _Request, refusal: enforcement.Refusal) -> web.Response:
        state.outcome = refusal.code
        return error(refusal)

    def _done(self, state: _Request) -> None:
        overhead = time.perf_counter() - state.started - state.waited
        self.metrics.observe(state.route, max(overhead, 0.0))
        self.metrics.count(state.route, state.plan, state.outcome, state.account)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "%s %s: %s (%.1f ms of our own)",
                state.namespace or "-",
                state.route,
                state.outcome,
                overhead * 1000,
            )

    async def _proxy(
        self, request: web.Request, route: str, rule: Rule, path: str
    ) -> web.StreamResponse:
        state = _Request(route, time.perf_counter())
        try:
            return await self._proxy_steps(request, state, rule, path)
        except asyncio.CancelledError:
            state.outcome = "client_closed"
            raise
        finally:
            self._done(state)

    async def _proxy_steps(
        self, request: web.Request, state: _Request, rule: Rule, path: str
    ) -> web.StreamResponse:
        who = await self._who(request, state)
        if isinstance(who, enforcement.Refusal):
            return self._refuse(state, who)
        body = await self._body(request)
        if isinstance(body, enforcement.Refusal):
            return self._refuse(state, body)
        admitted = rule(self.source.catalog, who.result, body)
        if isinstance(admitted, enforcement.Refusal):
            return self._refuse(state, admitted)
        credential = self.source.credential(admitted.integration, admitted.slot)
        if credential is None:
            return self._refuse(
                state,
                enforcement.Refusal(
                    503,
                    KEY_MISSING,
                    f"the platform key for {admitted.integration}.{admitted.slot} is not there",
                ),
            )
        if not self.limits.allow_insecure and insecure(credential.endpoint):
            return self._refuse(
                state,
                enforcement.Refusal(
                    502,
                    UNREACHABLE,
                    f"{connections.printable_endpoint(credential.endpoint)} is plain http on "
                    "another host: the platform key would cross the network unencrypted; the "
                    "gateway runs with --allow-insecure-endpoint to send it anyway",
                ),
            )
        secrets = self.source.secrets()
        if secrets != self._scrubber.secrets:
            self._scrubber = _Scrubber(secrets)
        scrubber = self._scrubber
        payload = json.dumps(admitted.body).encode()
        headers = {
            "Authorization": f"Bearer {credential.key}",
            "Content-Type": "application/json",
            "Accept": request.headers.get("Accept", "application/json"),
        }
        assert self._session is not None, "Gateway.open() first"
        proxy, proxy_auth = self._route(credential.endpoint)
        waiting = time.perf_counter()
        try:
            async with asyncio.timeout(self.limits.timeout + self.limits.connect_timeout):
                upstream = await self._session.post(
                    credential.endpoint + path,
                    data=payload,
                    headers=headers,
                    allow_redirects=False,
                    proxy=proxy,
                    proxy_auth=proxy_auth,
                )
        except TimeoutError:
            state.waited += time.perf_counter() - waiting
            return self._refuse(state, _timeout(credential))
        except aiohttp.ClientError as e:
            state.waited += time.perf_counter() - waiting
            return self._refuse(state, _unreachable(credential, e))
        state.waited += time.perf_counter() - waiting
        async with upstream:
            state.outcome = (
                "ok" if upstream.status < 400 else f"provider_{upstream.status // 100}xx"
            )
            kind = upstream.headers.get("Content-Type", "")
            if upstream.status == 200 and kind.startswith(EVENT_STREAM):
                return await self._stream(request, state, upstream, scrubber)
            return await self._answer(state, upstream, scrubber, credential)

    async def _answer(
        self,
        state: _Request,
        upstream: aiohttp.ClientResponse,
        scrubber: _Scrubber,
        credential: sources.Credential,
    ) -> web.StreamResponse:
        waiting = time.perf_counter()
        try:
            async with asyncio.timeout(self.limits.timeout):
                data = await _read_bounded(upstream, self.limits.max_answer)
        except TimeoutError:
            state.waited += time.perf_counter() - waiting
            return self._refuse(state, _timeout(credential))
        except _TooLarge:
            state.waited += time.perf_counter() - waiting
            return self._refuse(
                state,
                enforcement.Refusal(
                    502,
                    UNREACHABLE,
                    f"{connections.printable_endpoint(credential.endpoint)}: the answer is "
                    f"larger than {self.limits.max_answer} bytes",
                ),
            )
        except aiohttp.ClientError as e:
            state.waited += time.perf_counter() - waiting
            return self._refuse(state, _unreachable(credential, e))
        state.waited += time.perf_counter() - waiting
        if upstream.status >= 400 or scrubber.leaks(data):
            data = scrubber.body(data)
        elif len(data) < (1 << 20) and data[:1] == b"{":
            with contextlib.suppress(ValueError, RecursionError):
                prompt, completion = _usage(json.loads(data))
                self.metrics.usage(state.plan, state.account, prompt, completion)
        return web.Response(body=data, status=upstream.status, headers=_headers(upstream, scrubber))

    async def _stream(
        self,
        request: web.Request,
        state: _Request,
        upstream: aiohttp.ClientResponse,
        scrubber: _Scrubber,
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers=_headers(upstream, scrubber))
        response.headers["Cache-Control"] = "no-cache"
        await response.prepare(request)
        pending, line = b"", b""
        waiting = time.perf_counter()
        try:
            async for chunk in upstream.content.iter_any():
                state.waited += time.perf_counter() - waiting
                data = pending + chunk
                if scrubber.leaks(data):
                    data = scrubber.text(data.decode("utf-8", "replace")).encode()
                held = scrubber.hold(data)
                pending, data = (data[-held:], data[:-held]) if held else (b"", data)
                if data:
                    await response.write(data)
                    line = self._usage_lines(state, line + data)
                waiting = time.perf_counter()
            state.waited += time.perf_counter() - waiting
        except (TimeoutError, aiohttp.ClientError) as e:
            state.waited += time.perf_counter() - waiting
            state.outcome = TIMEOUT if isinstance(e, TimeoutError) else UNREACHABLE
            refusal = enforcement.Refusal(
                504 if isinstance(e, TimeoutError) else 502,
                state.outcome,
                "the provider's stream broke off"
                + (" (no chunk in time)" if isinstance(e, TimeoutError) else ""),
            )
            pending = b"data: " + json.dumps(refusal.body()).encode() + b"\n\n"
        if pending:
            await response.write(pending)
        await response.write_eof()
        return response

    def _usage_lines(self, state: _Request, data: bytes) -> bytes:
        """Count the usage an event carries; the unfinished last line, at most 64 KiB, kept."""
        *lines, rest = data.split(b"\n")
        for item in lines:
            if item.startswith(b"data: {") and b'"usage"' in item:
                with contextlib.suppress(ValueError, RecursionError):
                    prompt, completion = _usage(json.loads(item[6:]))
                    self.metrics.usage(state.plan, state.account, prompt, completion)
        return rest[-(64 << 10) :]


async def _read_bounded(upstream: aiohttp.ClientResponse, limit: int) -> bytes:
    parts, size = [], 0
    async for chunk in upstream.content.iter_chunked(1 << 16):
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        parts.append(chunk)
    return b"".join(parts)


def _headers(upstream: aiohttp.ClientResponse, scrubber: _Scrubber) -> dict[str, str]:
    out = {}
    for name in PASSED_HEADERS:
        value = upstream.headers.get(name)
        if value is not None and not scrubber.leaks(value.encode()):
            out[name] = scrubber.text(value) if name != "Content-Type" else value
    return out


def insecure(endpoint: str) -> bool:
    """A plain ``http://`` endpoint on another host: the key would cross the network
    unencrypted (``test-connection``'s rule; loopback is allowed, its bytes stay here)."""
    parts = urllib.parse.urlsplit(endpoint)
    if parts.scheme.lower() != "http":
        return False
    host = parts.hostname or ""
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True


def _timeout(credential: sources.Credential) -> enforcement.Refusal:
    return enforcement.Refusal(
        504,
        TIMEOUT,
        f"{connections.printable_endpoint(credential.endpoint)}: the provider did not answer in time",
    )


def _unreachable(credential: sources.Credential, e: BaseException) -> enforcement.Refusal:
    return enforcement.Refusal(
        502,
        UNREACHABLE,
        f"{connections.printable_endpoint(credential.endpoint)}: no usable answer from the "
        f"provider ({type(e).__name__})",
    )


class _QuietHandler(web_protocol.RequestHandler):
    """aiohttp's protocol handler, but a request its parser refuses (a header line too
    long, a control character in a header) is answered with an OpenAI-shaped error that
    quotes nothing: aiohttp's own answer, and its log line, quote the bytes it refused,
    which for an ``Authorization`` header is the start of a token."""

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        # The type only: a parser's message quotes the bytes it refused.
        if status >= 500:
            log.error("a request failed: %s", type(exc).__name__)
        else:
            log.debug("refused a request: %s (HTTP %d)", type(exc).__name__, status)
        if request.writer.output_size > 0:
            raise ConnectionError("an answer was under way: the connection is closed")
        refusal = enforcement.Refusal(
            status,
            MALFORMED if status < 500 else "internal_error",
            f"the request could not be read (HTTP {status})"
            if status < 500
            else "the gateway failed to answer",
        )
        response = web.json_response(refusal.body(), status=status)
        response.force_close()
        return response


class _QuietServer(web.Server):
    def __call__(self) -> web_protocol.RequestHandler:
        return _QuietHandler(self, loop=self._loop, **self._kwargs)


class _Runner(web.AppRunner):
    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _QuietServer
        return server


async def serve(
    gateway: Gateway,
    host: str,
    port: int,
    stop: asyncio.Event,
    metrics_at: tuple[str, int] | None = None,
    ready: Callable[[int, int | None], None] | None = None,
) -> None:
    """Serve until ``stop`` is set; ``ready`` is told the ports bound (0 asks for a free one),
    the API's and the metrics' (None when off)."""
    await gateway.open()
    runner = _Runner(gateway.app(), handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    runners: list[web.AppRunner] = [runner]
    metrics_port: int | None = None
    if metrics_at is not None:
        app = web.Application()

        async def exposition(request: web.Request) -> web.Response:
            return web.Response(
                body=gateway.metrics.exposition(),
                headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
            )

        app.router.add_get("/metrics", exposition)
        metrics_runner = web.AppRunner(app, access_log=None)
        await metrics_runner.setup()
        await web.TCPSite(metrics_runner, *metrics_at).start()
        runners.append(metrics_runner)
        metrics_port = _port(metrics_runner, metrics_at[1])
    if ready is not None:
        ready(_port(runner, port), metrics_port)
    try:
        await stop.wait()
    finally:
        for r in runners:
            await r.cleanup()
        await gateway.close()


def _port(runner: web.AppRunner, asked: int) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return asked
