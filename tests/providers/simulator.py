"""The provider simulator: OpenAI and Runware as the connection checks meet them, polite or hostile.

Every provider test uses this one module (CLI, operator, property tests): it lives in
``tests/providers/`` because it stands for the other side of ``controller/providers``, the
trust boundary those checks cross, and its own tests (that it answers as documented, and
as badly as asked) sit beside it.

**Realistic by default.** TLS with a certificate from a CA made for the test (``trustme``),
trusted the way an operator trusts a private CA: ``SSL_CERT_FILE`` names ``ca_file``
(``env()``). HTTP/1.1 written by hand, so that every byte and every pause is the
simulator's, not a second copy of the client's HTTP library: keep-alive, chunked
transfer, gzip when the client accepts it, a pause between chunks.

* OpenAI: ``GET /openai/v1/models`` with ``Authorization: Bearer KEY``; 200 is a models
  list of realistic size (``MODELS``: more than 50 KiB, the fields the API documents:
  ``object: list``, ``data: [{id, object: model, created, owned_by}]``); 401 quotes the
  key the way OpenAI does (``sk-abc***wxyz``); 429 carries ``Retry-After``.
* OpenAI's generation routes, what the gateway (``controller/gateway``) proxies to:
  ``POST /openai/v1/chat/completions`` (a ``chat.completion`` with ``usage``, or with
  ``"stream": true`` server-sent ``chat.completion.chunk`` events ending in ``[DONE]``,
  ``Answer.stream_chunks`` of them, ``Answer.pause`` apart) and
  ``POST /openai/v1/images/generations``. Every body is recorded (``bodies``), and
  streams are counted as they open, finish or are cut by the client (``streams``).
* Runware: ``POST /runware/v1`` with ``[{"taskType": "authentication", "apiKey": KEY}]``;
  200 is ``{"data": [{"taskType": "authentication", "connectionSessionUUID": ...}]}``,
  failures an ``errors`` array (``invalidApiKey``).

**Hostile on request**, per key (``answer(key, Answer(...))``), by a word in the key
(``good``, ``bad``, ``forbidden``, ``limited``, ``broken``, ``hang``: what the older
tests used), or for every key (``Simulator(default=...)``). ``BEHAVIOURS`` lists them:
deep and huge JSON, endless and stalled bodies, a compression bomb, redirects,
malformed HTTP (a garbage status line, bad chunk sizes, a truncated body, headers past
any limit), and the key echoed in the body, a header, the reason phrase or the error
code (the whole key or a middle fragment).

Loopback (127.0.0.1) unless ``host`` names another address of this machine (the node
tests' bridge address, for pods: its certificate names it too). ``with Simulator() as
sim`` runs it in a thread with its own event loop (the CLI and the operator are
subprocesses; the property tests call ``providers.connections.check_all`` in their own loop). It records
every key it received (``received``; with the time, method and path: ``calls``) and every
proxied request (``proxied``). ``python -m
tests.providers.simulator`` runs one in the foreground.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gzip
import json
import os
import pathlib
import random
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

import trustme

RETRY_AFTER = "7"
# Every behaviour ``Answer`` knows; the property tests draw from this tuple.
BEHAVIOURS = (
    "ok",  # the documented success
    "invalid",  # 401 quoting the key as OpenAI does
    "forbidden",  # 403
    "limited",  # 429 with Retry-After
    "broken",  # 500
    "not_found",  # 404
    "deep_json",  # 200, "[" x 5000
    "huge_json",  # 200, a valid list of 3 MiB
    "endless",  # 200, chunks until the client gives up
    "stall",  # 200 headers, then nothing
    "slow_headers",  # nothing at all until the client gives up
    "bomb",  # 200, gzip of 256 MiB of zeros
    "redirect",  # 302 to another server that would say 200
    "garbage_status",  # a status line that is not HTTP
    "bad_chunk",  # a chunk size that is not hexadecimal
    "truncated",  # Content-Length promises more than is sent
    "huge_header",  # one header of 64 KiB
    "close",  # the connection closed after the request, no answer
    "echo_body",  # 401 whose message and code hold the key
    "echo_header",  # 401 with the key in headers
    "echo_reason",  # 401 whose reason phrase is the key
    "echo_code",  # 401 whose error code holds the key (or a fragment of it)
    "custom_code",  # 401 whose error code is exactly ``Answer.code`` (a disguised key, say)
    "wrong_shape",  # 200 with JSON the provider never sends
    "not_json",  # 200 with HTML (a captive portal)
)
ECHOES = ("full", "middle", "prefix", "suffix")


def quoted(key: str) -> str:
    """How OpenAI's 401 quotes a key."""
    return f"{key[:6]}***{key[-4:]}"


def leaked(text: str, keys: Iterable[str], run: int = 8) -> list[str]:
    """Every ``run``-character stretch of any key found in ``text`` (a whole key when it is
    shorter): the promise is that there is none. The tests' own oracle, not the product's."""
    found = []
    for key in keys:
        windows = [key] if len(key) < run else [key[i : i + run] for i in range(len(key) - run + 1)]
        found += [w for w in windows if w and w in text]
    return found


def middle(key: str, size: int = 24) -> str:
    """A fragment from the middle of ``key``: neither its prefix nor its suffix."""
    size = min(size, max(len(key) - 2, 1))
    start = max((len(key) - size) // 2, 1)
    return key[start : start + size]


@dataclasses.dataclass(frozen=True)
class Answer:
    """How the simulator answers one key."""

    behaviour: str = "ok"
    echo: str = "full"  # for echo_*: which part of the key (ECHOES)
    chunked: bool = True
    gzip: bool = True  # when the client accepts it
    chunk_size: int = 4096
    pause: float = 0.002  # seconds between chunks
    delay: float = 0.0  # seconds before the status line
    hang: float = 30.0  # for stall/slow_headers/endless: the longest it keeps at it
    code: str = "invalid_api_key"  # for custom_code: the error code, as given
    stream_chunks: int = 5  # content events of a streamed chat completion
    stream_echo: bool = False  # a streamed answer whose content holds the key, split mid-key


def _word_answer(key: str, hang: float) -> Answer:
    """The older tests' convention: what a key gets is written in it."""
    for word, behaviour in (
        ("hang", "slow_headers"),
        ("bad", "invalid"),
        ("forbidden", "forbidden"),
        ("limited", "limited"),
        ("broken", "broken"),
    ):
        if word in key:
            return Answer(behaviour, hang=hang)
    return Answer() if key else Answer("invalid")


def _models() -> bytes:
    """A models list as OpenAI sends it (pretty-printed), the size of an organisation's with
    fine-tuned models: the public models, then 600 fine-tunes."""
    rng = random.Random(20)
    base = [
        ("gpt-4o", "system"),
        ("gpt-4o-mini", "system"),
        ("gpt-4o-2024-08-06", "system"),
        ("gpt-4o-mini-2024-07-18", "system"),
        ("gpt-4.1", "system"),
        ("gpt-4.1-mini", "system"),
        ("gpt-4.1-nano", "system"),
        ("gpt-4-turbo", "system"),
        ("gpt-3.5-turbo", "openai"),
        ("gpt-3.5-turbo-instruct", "system"),
        ("o1", "system"),
        ("o3-mini", "system"),
        ("dall-e-2", "system"),
        ("dall-e-3", "system"),
        ("gpt-image-1", "system"),
        ("whisper-1", "openai-internal"),
        ("tts-1", "openai-internal"),
        ("tts-1-hd", "system"),
        ("text-embedding-3-small", "system"),
        ("text-embedding-3-large", "system"),
        ("text-embedding-ada-002", "openai-internal"),
        ("omni-moderation-latest", "system"),
        ("babbage-002", "system"),
        ("davinci-002", "system"),
    ]
    data = [
        {"id": name, "object": "model", "created": 1_698_000_000 + 86_400 * i, "owned_by": owner}
        for i, (name, owner) in enumerate(base)
    ]
    letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    for i in range(600):
        parent = rng.choice(["gpt-4o-mini-2024-07-18", "gpt-4o-2024-08-06", "gpt-3.5-turbo-0125"])
        suffix = "".join(rng.choice(letters) for _ in range(8))
        data.append(
            {
                "id": f"ft:{parent}:acme-corp:support-{i:03d}:{suffix}",
                "object": "model",
                "created": 1_720_000_000 + 3_600 * i,
                "owned_by": "user-" + "".join(rng.choice(letters[:36]) for _ in range(24)),
            }
        )
    return json.dumps({"object": "list", "data": data}, indent=2).encode()


MODELS = _models()
_SESSION = "f40c2aeb-f8a7-4af7-a1ab-7e8a5ad4d4a1"
RUNWARE_OK = json.dumps(
    {"data": [{"taskType": "authentication", "connectionSessionUUID": _SESSION}]}
).encode()
_ITEM = b'{"id":"gpt-4o","object":"model","created":1715367049,"owned_by":"system"}'
HUGE = b'{"object":"list","data":[' + b",".join([_ITEM] * 42_000) + b"]}"  # 3 MiB, valid
BOMB_SIZE = 256 << 20  # decoded bytes of the compression bomb
_BOMB: bytes | None = None
_GZIPPED: dict[bytes, bytes] = {}  # answers gzip'd once: the simulator's loop never waits on zlib


def bomb() -> bytes:
    """gzip of BOMB_SIZE zero bytes (about 250 KiB), made once (a second, before serving)."""
    global _BOMB
    if _BOMB is None:
        member = gzip.compress(b"\0" * (16 << 20), compresslevel=9)  # 16 MiB, repeated:
        _BOMB = member * (BOMB_SIZE // (16 << 20))  # concatenated gzip members decode as one
    return _BOMB


def _gzipped(body: bytes) -> bytes:
    if len(body) < 4096:
        return gzip.compress(body, compresslevel=6)
    if body not in _GZIPPED:
        _GZIPPED[body] = gzip.compress(body, compresslevel=6)
    return _GZIPPED[body]


class _Request:
    def __init__(self, method: str, target: str, headers: dict[str, str], body: bytes) -> None:
        self.method, self.target, self.headers, self.body = method, target, headers, body
        self.path = target


def _json_body(request: _Request) -> dict[str, Any]:
    try:
        value = json.loads(request.body or b"{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def chat_answer(model: Any, prompt_tokens: int) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-simulator",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Hello from the simulator."},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": 5,
                "total_tokens": prompt_tokens + 5,
            },
        }
    ).encode()


IMAGES_OK = json.dumps(
    {"created": 1_700_000_000, "data": [{"url": "https://images.invalid/simulated.png"}]}
).encode()


def _prompt_tokens(body: dict[str, Any]) -> int:
    messages = body.get("messages")
    if not isinstance(messages, list):
        return 1
    return max(
        1, sum(len(str(m.get("content", "")).split()) for m in messages if isinstance(m, dict))
    )


class Simulator:
    """OpenAI and Runware on 127.0.0.1, or on ``host`` (see the module docstring)."""

    def __init__(
        self,
        default: Answer | None = None,
        tls: bool = True,
        hang: float = 30.0,
        host: str = "127.0.0.1",
    ) -> None:
        self.default = default
        self.host = host  # another address only to be reached from pods (tests/node)
        self.tls = tls
        self.hang = hang
        self.answers: dict[str, Answer] = {}
        self.refuse: set[str] = set()  # keys answered 401 whatever their words say
        self.received: list[tuple[str, str]] = []  # (provider, key), in arrival order
        # (time.time(), method, path, key) of every provider request, in arrival order
        self.calls: list[tuple[float, str, str, str]] = []
        self.proxied: list[str] = []  # absolute-form request targets (a proxy's requests)
        self.connections = 0  # TCP connections accepted (keep-alive reuses them)
        self.bodies: list[tuple[str, dict[str, Any]]] = []  # (path, JSON body) of generations
        self.streams = {"open": 0, "finished": 0, "cut": 0}  # streamed answers
        self.requests = 0
        self._lock = threading.Lock()
        self._dir = tempfile.TemporaryDirectory(prefix="provider-sim-")
        self.ca_file = pathlib.Path(self._dir.name) / "ca.pem"
        self._ssl: ssl.SSLContext | None = None
        if tls:
            ca = trustme.CA()
            ca.cert_pem.write_to_path(str(self.ca_file))
            self._ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            names = dict.fromkeys((host, "127.0.0.1", "localhost"))
            ca.issue_cert(*names).configure_cert(self._ssl)
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # --- what tests use --------------------------------------------------------------

    def answer(self, key: str, answer: Answer) -> None:
        with self._lock:
            self.answers[key] = answer

    def received_keys(self, provider: str | None = None) -> list[str]:
        with self._lock:
            return [k for p, k in self.received if provider in (None, p)]

    @property
    def base(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    @property
    def openai(self) -> str:
        return f"{self.base}/openai/v1"

    @property
    def runware(self) -> str:
        return f"{self.base}/runware/v1"

    def env(self) -> dict[str, str]:
        """What a client process needs to trust the simulator: its CA as ``SSL_CERT_FILE``."""
        return {"SSL_CERT_FILE": str(self.ca_file)} if self.tls else {}

    # --- running -----------------------------------------------------------------------

    def __enter__(self) -> Simulator:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            loop.run_until_complete(self._start())
            ready.set()
            loop.run_forever()
            for task in list(self._tasks):
                task.cancel()
            loop.run_until_complete(asyncio.sleep(0))
            loop.close()

        self._thread = threading.Thread(target=run, name="provider-simulator", daemon=True)
        self._thread.start()
        if not ready.wait(30):
            raise RuntimeError("the provider simulator did not start")
        return self

    def __exit__(self, *exc: Any) -> None:
        loop = self._loop
        if loop is not None:
            asyncio.run_coroutine_threadsafe(self._stop(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._dir.cleanup()

    async def _start(self) -> None:
        # The costly answers are made before serving: zlib on the simulator's loop would
        # stall every other connection (a TLS handshake cut by the client's timeout).
        bomb()
        for body in (MODELS, HUGE):
            _gzipped(body)
        self._server = await asyncio.start_server(
            self._connection, self.host, 0, limit=1 << 16, ssl=self._ssl
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()

    # --- one connection -----------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        with self._lock:
            self.connections += 1
        try:
            while await self._one(reader, writer):
                pass
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ssl.SSLError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self._tasks.discard(task)
            writer.transport.abort()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; whether the connection may carry another."""
        request = await _read_request(reader)
        if request is None:
            return False
        with self._lock:
            self.requests += 1
        path = request.target
        if path.startswith(("http://", "https://")):
            with self._lock:
                self.proxied.append(path)
            path = "/" + path.split("/", 3)[3] if path.count("/") >= 3 else "/"
        request.path = path
        provider, key = _provider_and_key(request, path)
        if provider == "openai" and request.method == "POST":
            with self._lock:
                self.bodies.append((path.split("?", 1)[0], _json_body(request)))
        if provider is None:
            body = json.dumps({"error": {"message": "not found", "code": "not_found"}}).encode()
            return await self._send(writer, request, Answer(), 404, "Not Found", body)
        with self._lock:
            self.received.append((provider, key))
            self.calls.append((time.time(), request.method, path.split("?", 1)[0], key))
            answer = self.answers.get(key) or self.default or _word_answer(key, self.hang)
            if key in self.refuse:
                answer = Answer("invalid")
        if answer.delay:
            await asyncio.sleep(answer.delay)
        return await self._behave(reader, writer, request, provider, key, answer)

    async def _behave(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        request: _Request,
        provider: str,
        key: str,
        answer: Answer,
    ) -> bool:
        b = answer.behaviour
        ok = MODELS if provider == "openai" else RUNWARE_OK
        route = request.path.split("?", 1)[0]
        if provider == "openai" and route.endswith("/chat/completions"):
            body = _json_body(request)
            if b == "ok" and body.get("stream") is True:
                return await self._stream(writer, answer, body, key)
            ok = chat_answer(body.get("model"), _prompt_tokens(body))
        elif provider == "openai" and route.endswith("/images/generations"):
            ok = IMAGES_OK
        if b == "ok":
            return await self._send(writer, request, answer, 200, "OK", ok)
        if b in ("invalid", "forbidden", "limited", "broken", "not_found"):
            status, phrase = {
                "invalid": (401, "Unauthorized"),
                "forbidden": (403, "Forbidden"),
                "limited": (429, "Too Many Requests"),
                "broken": (500, "Internal Server Error"),
                "not_found": (404, "Not Found"),
            }[b]
            headers = {"Retry-After": RETRY_AFTER} if b == "limited" else {}
            body = _error_body(provider, status, key)
            return await self._send(writer, request, answer, status, phrase, body, headers)
        if b == "custom_code":
            body = _error_body(provider, 401, key, code=answer.code)
            return await self._send(writer, request, answer, 401, "Unauthorized", body)
        if b == "deep_json":
            return await self._send(writer, request, answer, 200, "OK", b"[" * 5000)
        if b == "huge_json":
            return await self._send(writer, request, answer, 200, "OK", HUGE)
        if b == "wrong_shape":
            return await self._send(writer, request, answer, 200, "OK", b'{"ok": true}')
        if b == "not_json":
            page = b"<html><body>Please sign in to the Wi-Fi</body></html>"
            return await self._send(
                writer, request, answer, 200, "OK", page, {"Content-Type": "text/html"}
            )
        if b == "redirect":
            target = f"https://127.0.0.1:{self.port}/elsewhere/v1?key={key}"
            body = b'{"redirect": true}'
            await self._send(writer, request, answer, 302, "Found", body, {"Location": target})
            return False
        if b == "bomb":
            await self._head(writer, 200, "OK", {"Content-Encoding": "gzip"}, len(bomb()))
            await self._write_slowly(writer, bomb(), Answer(chunk_size=1 << 16, pause=0.0))
            return False
        if b == "endless":
            await self._head(writer, 200, "OK", {"Transfer-Encoding": "chunked"})
            deadline = time.monotonic() + answer.hang
            item = b'{"id":"gpt-4o","object":"model"},' * 100
            start = b'{"object":"list","data":['
            writer.write(f"{len(start):x}\r\n".encode() + start + b"\r\n")
            while time.monotonic() < deadline:
                writer.write(f"{len(item):x}\r\n".encode() + item + b"\r\n")
                await writer.drain()
                await asyncio.sleep(answer.pause)
            return False
        if b == "stall":
            await self._head(writer, 200, "OK", {"Content-Length": "4096"})
            await _wait_closed(reader, answer.hang)
            return False
        if b == "slow_headers":
            await _wait_closed(reader, answer.hang)
            return False
        if b == "close":
            return False
        if b == "garbage_status":
            writer.write(b"HTPT/1.1 2OO Okay maybe\r\nContent-Length: 2\r\n\r\n{}")
            await writer.drain()
            return False
        if b == "bad_chunk":
            await self._head(writer, 200, "OK", {"Transfer-Encoding": "chunked"})
            writer.write(b'zz\r\n{"object":"list","data":[]}\r\n0\r\n\r\n')
            await writer.drain()
            return False
        if b == "truncated":
            await self._head(writer, 200, "OK", {"Content-Length": str(len(ok))})
            writer.write(ok[: len(ok) // 2])
            await writer.drain()
            return False
        if b == "huge_header":
            await self._send(
                writer, request, answer, 200, "OK", ok, {"X-Padding": "a" * (64 << 10)}
            )
            return False
        echoed = _echoed(key, answer.echo)
        if b == "echo_body":
            body = json.dumps(
                {
                    "error": {"message": f"Incorrect API key provided: {echoed}.", "code": echoed},
                    "errors": [{"code": echoed, "message": f"Invalid API key {echoed}"}],
                }
            ).encode()
            return await self._send(writer, request, answer, 401, "Unauthorized", body)
        if b == "echo_header":
            headers = {
                "WWW-Authenticate": f'Bearer error="invalid_token", key="{echoed}"',
                "X-Api-Key": echoed,
                "Retry-After": RETRY_AFTER,
            }
            body = _error_body(provider, 401, key)
            return await self._send(writer, request, answer, 401, "Unauthorized", body, headers)
        if b == "echo_reason":
            body = _error_body(provider, 401, key)
            return await self._send(writer, request, answer, 401, echoed, body)
        if b == "echo_code":
            code = f"key_{echoed}"  # a code that is not itself a substring of the key
            body = json.dumps(
                {"error": {"message": "refused", "code": code}, "errors": [{"code": code}]}
            ).encode()
            return await self._send(writer, request, answer, 401, "Unauthorized", body)
        raise ValueError(f"no such behaviour: {b}")

    async def _stream(
        self, writer: asyncio.StreamWriter, answer: Answer, body: dict[str, Any], key: str
    ) -> bool:
        """A streamed chat completion: one event per write (split into ``chunk_size`` pieces),
        ``pause`` apart; counted as cut when the client goes away before ``[DONE]``."""
        model = body.get("model")

        def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
            chunk = {
                "id": "chatcmpl-simulator",
                "object": "chat.completion.chunk",
                "created": 1_700_000_000,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            return b"data: " + json.dumps(chunk).encode() + b"\n\n"

        events = [event({"role": "assistant", "content": ""})]
        events += [event({"content": f"word{i} "}) for i in range(answer.stream_chunks)]
        if answer.stream_echo:
            # The key's halves in two writes: a fragment split across two reads.
            whole = event({"content": f"your key is {key}."})
            cut = whole.index(key.encode()) + len(key) // 2
            events += [whole[:cut], whole[cut:]]
        events.append(event({}, "stop"))
        options = body.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage"):
            usage = {
                "prompt_tokens": _prompt_tokens(body),
                "completion_tokens": answer.stream_chunks,
            }
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
            events.append(
                b"data: "
                + json.dumps(
                    {
                        "id": "chatcmpl-simulator",
                        "object": "chat.completion.chunk",
                        "created": 1_700_000_000,
                        "model": model,
                        "choices": [],
                        "usage": usage,
                    }
                ).encode()
                + b"\n\n"
            )
        events.append(b"data: [DONE]\n\n")
        head = (
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
            "Transfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n"
        )
        with self._lock:
            self.streams["open"] += 1
        finished = False
        try:
            writer.write(head.encode())
            await writer.drain()
            for data in events:
                for start in range(0, len(data), answer.chunk_size):
                    piece = data[start : start + answer.chunk_size]
                    if writer.transport.is_closing():
                        raise ConnectionResetError("the client went away")
                    writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                    await writer.drain()
                if answer.pause:
                    await asyncio.sleep(answer.pause)
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            finished = True
        finally:
            with self._lock:
                self.streams["open"] -= 1
                self.streams["finished" if finished else "cut"] += 1
        return True

    async def _head(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        phrase: str,
        headers: dict[str, str],
        length: int | None = None,
    ) -> None:
        lines = [f"HTTP/1.1 {status} {phrase}", "Content-Type: application/json"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        if length is not None:
            lines.append(f"Content-Length: {length}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace"))
        await writer.drain()

    async def _send(
        self,
        writer: asyncio.StreamWriter,
        request: _Request,
        answer: Answer,
        status: int,
        phrase: str,
        body: bytes,
        headers: dict[str, str] | None = None,
    ) -> bool:
        """A well-formed answer: gzip when accepted, chunked with pauses, kept alive."""
        headers = {"Content-Type": "application/json", **(headers or {})}
        if answer.gzip and "gzip" in request.headers.get("accept-encoding", ""):
            body = _gzipped(body)
            headers["Content-Encoding"] = "gzip"
        keep = request.headers.get("connection", "").lower() != "close"
        headers["Connection"] = "keep-alive" if keep else "close"
        if answer.chunked:
            headers["Transfer-Encoding"] = "chunked"
        else:
            headers["Content-Length"] = str(len(body))
        lines = [f"HTTP/1.1 {status} {phrase}"] + [f"{n}: {v}" for n, v in headers.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace"))
        await writer.drain()
        if answer.chunked:
            for start in range(0, len(body), answer.chunk_size):
                piece = body[start : start + answer.chunk_size]
                writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                await writer.drain()
                await asyncio.sleep(answer.pause)
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        else:
            await self._write_slowly(writer, body, answer)
        return keep

    async def _write_slowly(
        self, writer: asyncio.StreamWriter, body: bytes, answer: Answer
    ) -> None:
        for start in range(0, len(body), answer.chunk_size):
            writer.write(body[start : start + answer.chunk_size])
            await writer.drain()
            if answer.pause:
                await asyncio.sleep(answer.pause)


def _echoed(key: str, echo: str) -> str:
    if echo == "middle":
        return middle(key)
    if echo == "prefix":
        return key[: max(8, len(key) // 2)]
    if echo == "suffix":
        return key[-max(8, len(key) // 2) :]
    return key


def _error_body(provider: str, status: int, key: str, code: str | None = None) -> bytes:
    """The error bodies the providers send; OpenAI's 401 quotes part of the key. ``code``
    replaces the error code (``custom_code``)."""
    if provider == "runware":
        code = code or ("invalidApiKey" if status == 401 else f"error{status}")
        message = f"Invalid API key {quoted(key)}." if status == 401 else "Request failed."
        errors = [{"code": code, "message": message, "parameter": "apiKey"}]
        return json.dumps(
            {"errors": [{**e, "taskType": "authentication"} for e in errors]}
        ).encode()
    if status == 401:
        error: dict[str, Any] = {
            "message": f"Incorrect API key provided: {quoted(key)}. You can find your API key "
            "at https://platform.openai.com/account/api-keys.",
            "type": "invalid_request_error",
            "param": None,
            "code": code or "invalid_api_key",
        }
    elif status == 429:
        error = {
            "message": f"Rate limit reached for requests with key {quoted(key)}.",
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    else:
        error = {"message": "The server had an error.", "type": "server_error", "code": None}
    return json.dumps({"error": error}).encode()


async def _read_request(reader: asyncio.StreamReader) -> _Request | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    body = b""
    if "content-length" in headers:
        body = await reader.readexactly(min(int(headers["content-length"]), 1 << 20))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip() or b"0", 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            body += await reader.readexactly(size)
            await reader.readexactly(2)
    return _Request(parts[0], parts[1], headers, body)


def _provider_and_key(request: _Request, path: str) -> tuple[str | None, str]:
    path = path.split("?", 1)[0]
    if request.method == "GET" and path.startswith("/openai/") and path.endswith("/models"):
        auth = request.headers.get("authorization", "")
        return "openai", auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else ""
    if request.method == "POST" and path.startswith("/openai/"):
        auth = request.headers.get("authorization", "")
        return "openai", auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else ""
    if request.method == "POST" and path.startswith("/runware/"):
        try:
            tasks = json.loads(request.body)
            key = next(t["apiKey"] for t in tasks if t.get("taskType") == "authentication")
        except (ValueError, StopIteration, TypeError, KeyError, AttributeError):
            return "runware", ""
        return "runware", str(key)
    return None, ""


async def _wait_closed(reader: asyncio.StreamReader, limit: float) -> None:
    """Until the client closes the connection (or ``limit`` seconds)."""
    with contextlib.suppress(TimeoutError, OSError):
        async with asyncio.timeout(limit):
            while await reader.read(1024):
                pass


def refused_endpoint() -> str:
    """A loopback URL where nothing listens: connection refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


@contextlib.contextmanager
def trusted(sim: Simulator) -> Iterator[None]:
    """``SSL_CERT_FILE`` names the simulator's CA in this process while the block runs (the
    check session reads it when it is made)."""
    before = os.environ.get("SSL_CERT_FILE")
    os.environ.update(sim.env())
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("SSL_CERT_FILE", None)
        else:
            os.environ["SSL_CERT_FILE"] = before


def main() -> None:
    with Simulator() as sim:
        print(f"OpenAI:  {sim.openai}\nRunware: {sim.runware}\nCA:      {sim.ca_file}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
