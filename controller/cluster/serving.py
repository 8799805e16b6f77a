"""The operator's own HTTP endpoints: the probes, and /metrics behind TLS and RBAC.

Both servers start before anything talks to the API server, so a kubelet sees
a live process while it waits for the Lease or for an API server that is not
up yet.

* Probes (``--health-probe-bind-address``, plain HTTP as the kubelet probes
  it): ``/healthz`` answers while the event loop runs; ``/readyz`` says
  whether the replica is ready (``Operator.readiness``: listed and leading, or
  a standby that reached the API server).
* Metrics (``--metrics-bind-address``): HTTPS by default, with the
  certificate of ``--metrics-cert-dir`` (tls.crt, tls.key; read again when
  they change, as cert-manager rotates them) or one made at start-up; and
  only for a bearer token the API server authenticates (TokenReview) whose
  user may ``get`` the non-resource URL ``/metrics`` (SubjectAccessReview),
  as controller-runtime's ``WithAuthenticationAndAuthorization`` filter
  does. Decisions are cached for ``TTL`` seconds (at most ``CACHE_SIZE``
  tokens, by their SHA-256), so a scrape every few seconds costs no API call
  each time, and at most ``REVIEWS`` reviews run at once whatever is sent.
  ``--metrics-secure=false`` serves plain HTTP without the filter.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime
import hashlib
import ipaddress
import logging
import os
import pathlib
import socket
import ssl
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import aiohttp.web
import prometheus_client as prom

from controller.cluster.runtime import clients

log = logging.getLogger(__name__)

TTL = 10.0  # seconds a token's decision is reused
CACHE_SIZE = 1024  # tokens remembered at most (the least recently used go first)
REVIEWS = 4  # reviews running at once; further scrapes wait their turn
MAX_TOKEN = 8192  # bytes: longer is no Kubernetes token (aiohttp refuses headers of 8 KiB+)
CERT_POLL = 2.0  # seconds between looks at --metrics-cert-dir


class Reviewer(Protocol):
    """What the filter needs from ``clients.Client``: the seam to fake in tests."""

    async def review_token(self, token: str) -> dict[str, Any]: ...

    async def review_access(self, user: Mapping[str, Any], path: str, verb: str) -> bool: ...


class Gate:
    """TokenReview then SubjectAccessReview for one path, with a small bounded cache."""

    def __init__(
        self,
        reviewer: Reviewer,
        path: str = "/metrics",
        ttl: float = TTL,
        size: int = CACHE_SIZE,
        reviews: int = REVIEWS,
    ) -> None:
        self.reviewer = reviewer
        self.path = path
        self.ttl, self.size = ttl, size
        self._reviews = asyncio.Semaphore(reviews)
        self._cache: collections.OrderedDict[bytes, tuple[float, int]] = collections.OrderedDict()
        self.calls = 0  # reviews asked of the API server (tests read it)

    async def status(self, authorization: str | None) -> tuple[int, str]:
        """200, 401 (no or a refused token) or 403 (a user without the RBAC), with a reason;
        503 when the API server could not be asked."""
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return 401, "a bearer token is required"
        if len(token) > MAX_TOKEN or not token.isascii() or not token.isprintable() or " " in token:
            return 401, "not a token"
        key = hashlib.sha256(token.encode()).digest()
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            self._cache.move_to_end(key)
            return cached[1], _REASONS[cached[1]]
        async with self._reviews:
            cached = self._cache.get(key)  # decided while this one waited its turn
            if cached is not None and cached[0] > time.monotonic():
                return cached[1], _REASONS[cached[1]]
            try:
                code = await self._review(token)
            except clients.RequestError as e:
                log.warning("could not review a token for %s: %s", self.path, e)
                return 503, "the API server could not review the token"
        self._cache[key] = (time.monotonic() + self.ttl, code)
        self._cache.move_to_end(key)
        while len(self._cache) > self.size:
            self._cache.popitem(last=False)
        return code, _REASONS[code]

    async def _review(self, token: str) -> int:
        self.calls += 1
        status = await self.reviewer.review_token(token)
        if not status.get("authenticated"):
            return 401
        self.calls += 1
        allowed = await self.reviewer.review_access(status.get("user") or {}, self.path, "get")
        return 200 if allowed else 403


_REASONS = {200: "ok", 401: "the token is not valid", 403: "forbidden: get /metrics not allowed"}


@dataclasses.dataclass(frozen=True)
class Certificate:
    """A key pair on disk for TLS: ``directory``/tls.crt and tls.key."""

    directory: pathlib.Path

    @property
    def files(self) -> tuple[pathlib.Path, pathlib.Path]:
        return self.directory / "tls.crt", self.directory / "tls.key"

    def stamp(self) -> tuple[tuple[int, int, int], ...]:
        """What changes when either file is replaced (a Secret volume swaps a symlink)."""
        return tuple(
            (st.st_ino, st.st_mtime_ns, st.st_size) for st in (os.stat(p) for p in self.files)
        )

    def load(self, context: ssl.SSLContext) -> None:
        crt, key = self.files
        context.load_cert_chain(crt, key)


def tls_context(cert_dir: pathlib.Path | None) -> ssl.SSLContext:
    """A server context with the certificate of ``cert_dir``, else a self-signed one."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_dir is not None:
        Certificate(cert_dir).load(context)
        return context
    # ssl loads a chain only from files: a private temporary directory, removed at once.
    with tempfile.TemporaryDirectory() as tmp:
        crt, key = self_signed()
        directory = pathlib.Path(tmp)
        for name, data in (("tls.crt", crt), ("tls.key", key)):
            fd = os.open(directory / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with open(fd, "wb") as fh:
                fh.write(data)
        Certificate(directory).load(context)
    return context


def self_signed(days: int = 365) -> tuple[bytes, bytes]:
    """A self-signed P-256 certificate (PEM) and its key for this host: what
    controller-runtime makes when no certificate is mounted."""
    # Imported here: only the secure metrics server needs it, once.
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    host = socket.gethostname()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "settings-controller-metrics")])
    now = datetime.datetime.now(datetime.UTC)
    alt_names: list[x509.GeneralName] = [
        x509.DNSName(host),
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return (
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


async def reload_certificate(
    cert: Certificate, context: ssl.SSLContext, every: float = CERT_POLL
) -> None:
    """Load ``cert`` into ``context`` again whenever its files change (new connections
    get it; open ones keep theirs). A broken pair is logged and the old one kept."""
    seen = cert.stamp()
    while True:
        await asyncio.sleep(every)
        try:
            stamp = cert.stamp()
            if stamp == seen:
                continue
            cert.load(context)
        except (OSError, ssl.SSLError) as e:
            log.warning("metrics certificate in %s not reloaded: %s", cert.directory, e)
            continue
        seen = stamp
        log.info("metrics certificate reloaded from %s", cert.directory)


class ServerLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """What aiohttp's request handler logs through, in place of its ``aiohttp.server``.

    aiohttp logs a request its parser refuses as ``Error handling request`` with the
    exception's traceback, and the exception's text quotes the offending header line:
    a scraper's ``Authorization: Bearer <token>`` written whole into the log, one
    multi-line traceback per request any peer sends. Here every such line is one
    warning naming the exception's class (and HTTP code) only: never the request's
    content, never a traceback; the log's RedactingFilter is not the only guard, as
    it masks only key-shaped words and a bearer token need not look like a key.
    """

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        exc_info = kwargs.pop("exc_info", None)
        error = exc_info if isinstance(exc_info, BaseException) else None
        if exc_info is True:
            error = sys.exc_info()[1]
        if error is not None:
            code = getattr(error, "code", None)
            what = type(error).__name__ + (f" {code}" if isinstance(code, int) else "")
            msg, args = f"{msg} (%s; request not logged)", (*args, what)
        self.logger.log(min(level, logging.WARNING), msg, *args)


async def start(
    app: aiohttp.web.Application, host: str, port: int, context: ssl.SSLContext | None = None
) -> aiohttp.web.AppRunner:
    """Serve ``app`` on ``host:port`` (host ``""``: every interface, IPv4 and IPv6).

    A request aiohttp refuses is logged as one warning without its content
    (``ServerLog``); requests themselves are not logged."""
    runner = aiohttp.web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        logger=ServerLog(log, {}),
        shutdown_timeout=1.0,
    )
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, host or None, port, ssl_context=context)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


def probes(ready: Callable[[], tuple[bool, str]]) -> aiohttp.web.Application:
    """``/healthz`` (alive: the event loop answers) and ``/readyz`` (``ready()``)."""

    async def healthz(_: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.Response(text="ok")

    async def readyz(_: aiohttp.web.Request) -> aiohttp.web.Response:
        ok, why = ready()
        return aiohttp.web.Response(text=why, status=200 if ok else 503)

    app = aiohttp.web.Application()
    app.add_routes([aiohttp.web.get("/healthz", healthz), aiohttp.web.get("/readyz", readyz)])
    return app


def metrics(registry: prom.CollectorRegistry, gate: Gate | None) -> aiohttp.web.Application:
    """``/metrics`` in Prometheus' text format, for whom ``gate`` lets in (None: anyone)."""

    async def serve(request: aiohttp.web.Request) -> aiohttp.web.Response:
        if gate is not None:
            code, reason = await gate.status(request.headers.get("Authorization"))
            if code != 200:
                headers = {"WWW-Authenticate": 'Bearer realm="metrics"'} if code == 401 else {}
                return aiohttp.web.Response(status=code, text=reason + "\n", headers=headers)
        return aiohttp.web.Response(
            body=prom.generate_latest(registry), headers={"Content-Type": prom.CONTENT_TYPE_LATEST}
        )

    app = aiohttp.web.Application()
    app.add_routes([aiohttp.web.get("/metrics", serve)])
    return app
