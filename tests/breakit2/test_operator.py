"""Breaks of the operator process's endpoints (deploy/README.md "Operations"), on a real
operator process whose API server does not answer (deploy/README.md:421: it is waited out
while /healthz answers and /metrics is served), so no control plane is needed."""

from __future__ import annotations

import pathlib
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

from tests.conftest import CLI
from tests.operator import support

TOKEN = "eyJSECRETscraperTOKENabcdefgh0123456789"


def _kubeconfig(tmp_path: pathlib.Path) -> pathlib.Path:
    with socket.socket() as s:  # a port nobody listens on: the API server never answers
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = tmp_path / "kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\n"
        f'clusters: [{{name: c, cluster: {{server: "https://127.0.0.1:{port}"}}}}]\n'
        "users: [{name: u, user: {token: operator-token-not-real}}]\n"
        "contexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n"
    )
    return path


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _send(port: int, request: bytes, tls: bool) -> bytes:
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    if tls:
        context = support.insecure()
        raw = context.wrap_socket(raw, server_hostname="localhost")
    with raw:
        raw.sendall(request)
        return raw.recv(200)


def test_a_malformed_request_never_puts_its_bearer_token_or_a_traceback_in_the_log(
    tmp_path: pathlib.Path,
) -> None:
    """deploy/README.md:417: "`/metrics` answers only a bearer token the API server
    authenticates ...: 401 without one or with a refused one" (the operator handles
    scrapers' tokens), README.md:20 and deploy/README.md:187 (logs name, "never values"),
    and COMMON's "no run of 8 or more characters of any key in a log line; bad input: never
    a traceback". Broke: any peer that reaches the metrics port (TLS) or the probe port
    (plain HTTP, no authentication) with a request aiohttp's parser refuses (a control
    character in a header value, a space before a header's colon, both Content-Length and
    Transfer-Encoding) gets ``400`` and the operator logs ``Error handling request from
    127.0.0.1`` with a full traceback whose ``BadHttpMessage`` quotes the offending header
    line: a scraper's ``Authorization: Bearer <token>`` written whole into the operator's
    log. Every such request adds one multi-line traceback (an unauthenticated log flood).
    Fault: controller/cluster/serving.py ``start`` runs ``aiohttp.web`` with its default
    access/error logging (``aiohttp.server`` logger at ERROR with exc_info); the operator's
    logging setup (controller/commands/operator.py) lets it through."""
    log_path = tmp_path / "operator.log"
    health, metrics = support.free_port(), support.free_port()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                str(CLI),
                "operator",
                f"--kubeconfig={_kubeconfig(tmp_path)}",
                f"--health-probe-bind-address=127.0.0.1:{health}",
                f"--metrics-bind-address=127.0.0.1:{metrics}",
                "--verify-interval=0",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while not _healthy(health):
            assert proc.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.25)
        bad = b"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode()
        assert _send(metrics, bad + b"\x01\r\n\r\n", tls=True).startswith(b"HTTP/1.0 400")
        bad = b"GET /healthz HTTP/1.1\r\nHost: x\r\nAuthorization : Bearer " + TOKEN.encode()
        assert _send(health, bad + b"\r\n\r\n", tls=False).startswith(b"HTTP/1.0 400")
        time.sleep(1)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    text = log_path.read_text()
    leaked = [TOKEN[i : i + 8] for i in range(len(TOKEN) - 7) if TOKEN[i : i + 8] in text]
    assert not leaked, text[-2000:]
    assert "Traceback" not in text, text[-2000:]
