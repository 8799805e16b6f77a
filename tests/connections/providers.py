"""Local stand-ins for the providers, on 127.0.0.1, speaking the wire format of the calls made.

* OpenAI: ``GET /openai/v1/models`` with ``Authorization: Bearer KEY``; 200 is a
  models list, 401 quotes the key the way OpenAI does ("sk-abc***wxyz").
* Runware: ``POST /runware/v1`` with ``[{"taskType": "authentication", "apiKey": KEY}]``;
  200 is ``{"data": [{"taskType": "authentication", ...}]}``, failures an ``errors`` array.

What a key gets is written in the key itself, so a test picks an answer by
picking a key: ``good``, ``bad`` (401), ``forbidden`` (403), ``limited`` (429,
``Retry-After: 7``), ``broken`` (500), ``hang`` (answers after ``hang`` seconds).
A request line in absolute form (``GET http://host/...``) is a proxied request:
it is recorded in ``proxied`` and answered the same way.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from typing import Any

RETRY_AFTER = "7"


def quoted(key: str) -> str:
    """How OpenAI's 401 quotes a key."""
    return f"{key[:6]}***{key[-4:]}"


class Providers:
    def __init__(self, hang: float = 30.0, refuse: frozenset[str] = frozenset()) -> None:
        self.hang = hang
        self.refuse = refuse  # keys answered with 401, whatever they say
        self.requests: list[tuple[str, str]] = []  # (provider, key)
        self.proxied: list[str] = []
        self._lock = threading.Lock()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                path = self._path()
                if not path.startswith("/openai/") or not path.endswith("/models"):
                    return self._send(404, {"error": {"message": "not found"}})
                auth = self.headers.get("Authorization", "")
                key = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else ""
                owner._record("openai", key)
                self._answer(key, "openai")

            def do_POST(self) -> None:
                path = self._path()
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if not path.startswith("/runware/"):
                    return self._send(404, {"errors": [{"code": "notFound"}]})
                try:
                    tasks = json.loads(raw)
                    key = next(t["apiKey"] for t in tasks if t.get("taskType") == "authentication")
                except (ValueError, StopIteration, TypeError, KeyError):
                    return self._send(400, {"errors": [{"code": "invalidPayload"}]})
                owner._record("runware", key)
                self._answer(key, "runware")

            def _path(self) -> str:
                if self.path.startswith("http://"):
                    with owner._lock:
                        owner.proxied.append(self.path)
                    return "/" + self.path.split("/", 3)[3]
                return self.path

            def _answer(self, key: str, provider: str) -> None:
                if "hang" in key:
                    time.sleep(owner.hang)
                    return self._ok(provider)
                if "bad" in key or not key or key in owner.refuse:
                    if provider == "openai":
                        message = (
                            f"Incorrect API key provided: {quoted(key)}. You can find your "
                            "API key at https://platform.openai.com/account/api-keys."
                        )
                        body: Any = {
                            "error": {
                                "message": message,
                                "type": "invalid_request_error",
                                "param": None,
                                "code": "invalid_api_key",
                            }
                        }
                    else:
                        body = {
                            "errors": [
                                {
                                    "code": "invalidApiKey",
                                    "message": f"Invalid API key {quoted(key)}.",
                                    "parameter": "apiKey",
                                    "taskType": "authentication",
                                }
                            ]
                        }
                    return self._send(401, body)
                if "forbidden" in key:
                    return self._send(403, {"error": {"message": f"key {quoted(key)} forbidden"}})
                if "limited" in key:
                    return self._send(
                        429,
                        {"error": {"message": f"Rate limit reached for {quoted(key)}"}},
                        {"Retry-After": RETRY_AFTER},
                    )
                if "broken" in key:
                    return self._send(500, {"error": {"message": "The server had an error"}})
                return self._ok(provider)

            def _ok(self, provider: str) -> None:
                if provider == "openai":
                    body: Any = {
                        "object": "list",
                        "data": [
                            {"id": "gpt-4o-mini", "object": "model", "owned_by": "system"},
                            {"id": "dall-e-3", "object": "model", "owned_by": "system"},
                        ],
                    }
                else:
                    body = {
                        "data": [
                            {
                                "taskType": "authentication",
                                "connectionSessionUUID": "f40c2aeb-f8a7-4af7-a1ab-7e8a5ad4d4a1",
                            }
                        ]
                    }
                self._send(200, body)

            def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in (headers or {}).items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a hang past its timeout)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _record(self, provider: str, key: str) -> None:
        with self._lock:
            self.requests.append((provider, key))

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai(self) -> str:
        return f"{self.base}/openai/v1"

    @property
    def runware(self) -> str:
        return f"{self.base}/runware/v1"

    def __enter__(self) -> Providers:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


def refused_endpoint() -> str:
    """A loopback URL where nothing listens: connection refused."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"
