"""The operator's HTTP: one aiohttp session authenticated from a kubeconfig.

lightkube over httpx2 costs about 1.4 ms of client CPU per server-side apply
here, aiohttp 0.3 ms (tests/bench, same API server, same concurrency); on two
cores shared with the API server that difference is the fan-out's rate. kopf
already depends on aiohttp. Credentials come from lightkube's kubeconfig
parsing: tokens (a token file is re-read, so a projected ServiceAccount token
rotates), client certificates, basic auth, and exec plugins (run again when
their credential expires or the API server answers 401).
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import os
import re
import ssl
import tempfile
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import aiohttp
import yarl
from lightkube import KubeConfig

from controller.cluster.runtime import decoding

TOKEN_REREAD = 60.0  # seconds: projected ServiceAccount tokens are rotated on disk

# A path of only unreserved characters, no segment starting with a dot, is the
# same quoted and normalised or not (object names are DNS labels and subdomains):
# its URL is built pre-encoded (``_url``).
_PLAIN_PATH = re.compile(r"(?:/[A-Za-z0-9_~-][A-Za-z0-9._~-]*)+\Z")
# Request bodies: compact, one encoder for every request (``json.dumps`` with
# ``separators`` builds a new one per call), sent as bytes (a str is encoded again
# by aiohttp's StringPayload).
_ENCODER = json.JSONEncoder(separators=(",", ":"))


class HttpError(Exception):
    """A response other than 2xx (``status``, ``reason`` from the API's Status), or none (0)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


class Session:
    """PATCH, POST, GET and watch JSON on one API server; the aiohttp session is made on first use."""

    def __init__(
        self,
        server: str,
        ssl_context: ssl.SSLContext | bool,
        token: str | None,
        token_file: str | None,
        basic: aiohttp.BasicAuth | None,
        timeout: float,
        exec_plugin: Any = None,
    ) -> None:
        self.server = server.rstrip("/")
        self._ssl = ssl_context
        self._token = token
        self._token_file = token_file
        self._token_read = time.monotonic()
        self._basic = basic
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._exec = exec_plugin  # lightkube's UserExec: command, args, env, apiVersion
        self._exec_expires: float | None = None  # monotonic; None: until a 401
        self.host = urllib.parse.urlsplit(self.server).netloc
        # Per content type, the headers for the current token (``_headers``), and per set
        # of query parameters its encoded query (``_url``): both the same for nearly
        # every request.
        self._prepared: dict[str, dict[str, str]] = {}
        self._prepared_token: str | None = None
        self._queries: dict[tuple[tuple[str, str], ...], str] = {}
        # The server's URL as given is the one yarl would make of it: paths are appended
        # to its path pre-encoded.
        base = yarl.URL(self.server)
        self._plain_server = (
            str(base) == self.server and not base.raw_query_string and not base.raw_fragment
        )
        self._scheme, self._authority = base.scheme, base.raw_authority
        self._prefix = "" if base.raw_path == "/" else base.raw_path
        # Told of every answer (status code, 0: none; method; host), as client-go's
        # rest_client_requests_total counts them (hosting.py points it at the metrics).
        self.on_response: Callable[[int, str, str], None] = lambda code, method, host: None

    @classmethod
    def from_config(cls, config: KubeConfig, timeout: float = 30.0) -> Session:
        conf = config.get()
        if conf is None or conf.cluster is None or conf.user is None:
            raise ValueError("the kubeconfig names no current cluster and user")
        cluster: Any = conf.cluster
        user: Any = conf.user
        if user.auth_provider:
            raise ValueError(
                "kubeconfig auth-provider entries are not supported (removed from kubectl "
                "in 1.26): use an exec plugin"
            )
        context: ssl.SSLContext | bool
        if cluster.insecure:
            context = False
        else:
            if cluster.certificate_auth_data:
                cadata = base64.b64decode(cluster.certificate_auth_data).decode()
                context = ssl.create_default_context(cadata=cadata)
            elif cluster.certificate_auth:
                cafile = str(conf.abs_file(cluster.certificate_auth))
                try:
                    context = ssl.create_default_context(cafile=cafile)
                except OSError as e:  # ssl names no file: say which one
                    e.filename = e.filename or cafile
                    raise
            else:
                context = ssl.create_default_context()
            _client_cert(context, conf)
        basic = (
            aiohttp.BasicAuth(user.username, user.password or "")
            if user.username and not user.token
            else None
        )
        token_file = str(conf.abs_file(user.token_file)) if user.token_file else None
        token = user.token
        if token is None and token_file:
            with open(token_file) as fh:
                token = fh.read().strip()
        return cls(cluster.server, context, token, token_file, basic, timeout, user.exec)

    async def _credentials(self, renew: bool = False) -> None:
        """Run the exec plugin when its credential is missing, expired or refused."""
        if self._exec is None:
            if renew and self._token_file:
                self._token_read = 0.0  # re-read at once
            return
        expired = self._exec_expires is not None and time.monotonic() > self._exec_expires
        if self._token and not (renew or expired):
            return
        plugin = self._exec
        info = {
            "apiVersion": plugin.apiVersion,
            "kind": "ExecCredential",
            "spec": {"interactive": False},
        }
        env = {**os.environ, **{e.name: e.value for e in plugin.env or ()}}
        env["KUBERNETES_EXEC_INFO"] = json.dumps(info)
        proc = await asyncio.create_subprocess_exec(
            plugin.command,
            *(plugin.args or ()),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise HttpError(0, f"exec plugin {plugin.command} exited {proc.returncode}")
        status = json.loads(out).get("status") or {}
        self._token = status.get("token")
        expires = status.get("expirationTimestamp")
        self._exec_expires = None
        if expires:
            left = datetime.datetime.fromisoformat(expires.replace("Z", "+00:00")) - (
                datetime.datetime.now(datetime.UTC)
            )
            self._exec_expires = time.monotonic() + left.total_seconds() - 10

    def _headers(self, content_type: str) -> dict[str, str]:
        if self._token_file and time.monotonic() - self._token_read > TOKEN_REREAD:
            try:
                with open(self._token_file) as fh:
                    self._token = fh.read().strip()
                self._token_read = time.monotonic()
            except OSError:
                pass  # keep the token we have; the API server says when it expires
        if self._token != self._prepared_token:
            self._prepared, self._prepared_token = {}, self._token
        headers = self._prepared.get(content_type)
        if headers is None:
            headers = {"Content-Type": content_type, "Accept": "application/json"}
            if self._token:
                headers["Authorization"] = f"Bearer {self._token}"
            self._prepared[content_type] = headers
        return headers

    def _url(self, path: str, params: Mapping[str, str] | None) -> yarl.URL:
        """``self.server + path`` with ``params`` as aiohttp would encode them.

        The query is encoded by yarl once per set of parameters, and a path that
        quoting leaves as it is is neither parsed nor quoted again: 0.5 us instead of
        3.6 us per request (each path is new to yarl's caches: a namespace's), for
        the same bytes sent. In a fan-out's profile URL building had been ~3 % of
        the operator's CPU (tests/bench --profile).
        """
        query = ""
        if params:
            key = tuple(params.items())
            query = self._queries.get(key, "")
            if not query:
                query = yarl.URL("http://h/").extend_query(params).raw_query_string
                if len(self._queries) >= 64:  # list continue tokens come and go
                    self._queries.clear()
                self._queries[key] = query
        if self._plain_server and _PLAIN_PATH.match(path):
            return yarl.URL.build(
                scheme=self._scheme,
                authority=self._authority,
                path=self._prefix + path,
                query_string=query,
                encoded=True,
            )
        return yarl.URL(self.server + path).extend_query(params or {})

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit=0),
                timeout=self._timeout,
                auth=self._basic,
            )
        return self._session

    async def request(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None,
        content_type: str,
        params: Mapping[str, str] | None = None,
    ) -> bytes:
        """The response's body; HttpError for anything but 2xx.

        A 401 renews the credential (token file, exec plugin) and tries once more.
        """
        for attempt in (1, 2):
            try:
                if self._exec is not None or attempt == 2:  # else nothing to do there
                    await self._credentials(renew=attempt == 2)
                async with self._open().request(
                    method,
                    self._url(path, params),
                    data=None if body is None else _ENCODER.encode(body).encode(),
                    headers=self._headers(content_type),
                ) as response:
                    self.on_response(response.status, method, self.host)
                    payload = await response.read()
                    if response.status == 401 and attempt == 1:
                        continue
                    if response.status >= 300:
                        raise HttpError(response.status, _reason(payload, response.reason))
                    return payload
            except (TimeoutError, aiohttp.ClientError) as e:
                self.on_response(0, method, self.host)
                raise HttpError(0, type(e).__name__) from e
        raise AssertionError("unreachable")

    async def get(self, path: str, params: Mapping[str, str]) -> Any:
        """GET a JSON document."""
        return decoding.loads(await self.request("GET", path, None, "application/json", params))

    async def watch(
        self, path: str, params: Mapping[str, str], timeout: float
    ) -> AsyncIterator[Any]:
        """A watch: one decoded JSON event per line until the server ends it or ``timeout`` passes.

        Read in chunks and split here: aiohttp's ``readline`` refuses a line
        longer than its buffer (64 KiB), and an object may be up to 1 MiB.
        """
        answered = False
        try:
            await self._credentials()
            async with self._open().get(
                self.server + path,
                params={**params, "watch": "1"},
                headers=self._headers("application/json"),
                timeout=aiohttp.ClientTimeout(total=timeout, sock_connect=self._timeout.total),
            ) as response:
                answered = True
                self.on_response(response.status, "GET", self.host)
                if response.status >= 300:
                    payload = await response.read()
                    raise HttpError(response.status, _reason(payload, response.reason))
                pending = b""
                async for chunk in response.content.iter_any():
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        if line.strip():
                            yield decoding.loads(line)
        except (TimeoutError, aiohttp.ClientError) as e:
            if not answered:  # a watch broken after its 200 was counted once already
                self.on_response(0, "GET", self.host)
            raise HttpError(0, type(e).__name__) from e

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def decode(payload: bytes) -> dict[str, Any]:
    document: dict[str, Any] = decoding.loads(payload)
    return document


def _reason(payload: bytes, fallback: str | None) -> str:
    try:
        status = json.loads(payload)
        return str(status.get("reason") or fallback or "")
    except ValueError:
        return fallback or ""


def _client_cert(context: ssl.SSLContext, conf: Any) -> None:
    user = conf.user
    if user.client_cert_data or user.client_key_data:
        # ssl loads a chain only from files: a private temporary directory, removed at once.
        with tempfile.TemporaryDirectory() as tmp:
            cert, key = os.path.join(tmp, "tls.crt"), os.path.join(tmp, "tls.key")
            for path, data, file in (
                (cert, user.client_cert_data, user.client_cert),
                (key, user.client_key_data, user.client_key),
            ):
                if data:
                    with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as fh:
                        fh.write(base64.b64decode(data))
                else:
                    with open(conf.abs_file(file), "rb") as src, open(path, "wb") as fh:
                        fh.write(src.read())
            context.load_cert_chain(cert, key)
    elif user.client_cert:
        context.load_cert_chain(
            str(conf.abs_file(user.client_cert)), str(conf.abs_file(user.client_key))
        )
