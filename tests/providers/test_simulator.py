"""The simulator answers as the providers document, and as badly as asked: checked with the
standard library's own HTTP client and raw sockets, not with aiohttp (the client under test)."""

from __future__ import annotations

import contextlib
import gzip
import http.client
import json
import socket
import ssl
from collections.abc import Iterator

import pytest

from tests.providers import simulator


@pytest.fixture(scope="module")
def sim() -> Iterator[simulator.Simulator]:
    with simulator.Simulator() as server:
        yield server


@pytest.fixture
def stack() -> Iterator[contextlib.ExitStack]:
    with contextlib.ExitStack() as exits:
        yield exits


@contextlib.contextmanager
def _client(sim: simulator.Simulator) -> Iterator[http.client.HTTPSConnection]:
    context = ssl.create_default_context(cafile=str(sim.ca_file))
    conn = http.client.HTTPSConnection("127.0.0.1", sim.port, context=context, timeout=10)
    try:
        yield conn
    finally:
        conn.close()


def test_the_models_list_is_realistic_chunked_gzipped_and_kept_alive(
    sim: simulator.Simulator, stack: contextlib.ExitStack
) -> None:
    conn = stack.enter_context(_client(sim))
    key = "sk-proj-simulator-models-AbCd0123"
    before = sim.connections
    for _ in range(2):  # one connection, two answers
        conn.request(
            "GET",
            "/openai/v1/models",
            headers={"Authorization": f"Bearer {key}", "Accept-Encoding": "gzip"},
        )
        response = conn.getresponse()
        assert response.status == 200
        assert response.getheader("Transfer-Encoding") == "chunked"
        assert response.getheader("Content-Encoding") == "gzip"
        body = json.loads(gzip.decompress(response.read()))
    assert sim.connections == before + 1
    assert len(simulator.MODELS) >= 50 * 1024
    assert body["object"] == "list" and len(body["data"]) > 600
    for model in body["data"]:
        assert set(model) == {"id", "object", "created", "owned_by"}
        assert model["object"] == "model" and isinstance(model["created"], int)
    assert sim.received_keys("openai")[-2:] == [key, key]


def test_runware_answers_its_authentication_task(
    sim: simulator.Simulator, stack: contextlib.ExitStack
) -> None:
    conn = stack.enter_context(_client(sim))
    key = "rwSimulatorKeyAbCdEfGh0123"
    conn.request(
        "POST",
        "/runware/v1",
        body=json.dumps([{"taskType": "authentication", "apiKey": key}]),
        headers={"Content-Type": "application/json"},
    )
    body = json.loads(conn.getresponse().read())
    assert body["data"][0]["taskType"] == "authentication"
    assert ("runware", key) in sim.received


def test_429_carries_retry_after_and_401_quotes_the_key_as_openai_does(
    sim: simulator.Simulator, stack: contextlib.ExitStack
) -> None:
    conn = stack.enter_context(_client(sim))
    conn.request("GET", "/openai/v1/models", headers={"Authorization": "Bearer sk-limited-1234"})
    response = conn.getresponse()
    assert (response.status, response.getheader("Retry-After")) == (429, simulator.RETRY_AFTER)
    response.read()
    conn.request("GET", "/openai/v1/models", headers={"Authorization": "Bearer sk-bad-12345678"})
    response = conn.getresponse()
    assert response.status == 401
    assert simulator.quoted("sk-bad-12345678") in response.read().decode()


def _raw(sim: simulator.Simulator, key: str, size: int = 1 << 16) -> bytes:
    """What the simulator sends to a GET, as bytes off the TLS socket (until it closes)."""
    context = ssl.create_default_context(cafile=str(sim.ca_file))
    with (
        socket.create_connection(("127.0.0.1", sim.port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(
            f"GET /openai/v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
            "Accept-Encoding: gzip\r\nConnection: close\r\n\r\n".encode()
        )
        data = b""
        try:
            while len(data) < size:
                chunk = tls.recv(65536)
                if not chunk:
                    break
                data += chunk
        except (TimeoutError, ssl.SSLError, OSError):
            pass
        return data


@pytest.mark.parametrize(
    ("behaviour", "starts"),
    [
        ("garbage_status", b"HTPT/1.1 2OO"),
        ("bad_chunk", b"HTTP/1.1 200 OK"),
        ("redirect", b"HTTP/1.1 302 Found"),
        ("deep_json", b"HTTP/1.1 200 OK"),
    ],
)
def test_malformed_and_hostile_answers_are_sent_as_asked(
    sim: simulator.Simulator, behaviour: str, starts: bytes
) -> None:
    key = f"sk-proj-raw-{behaviour}-AbCdEfGh0123"
    sim.answer(key, simulator.Answer(behaviour, gzip=False))
    data = _raw(sim, key)
    assert data.startswith(starts), data[:80]
    if behaviour == "bad_chunk":
        assert b"\r\n\r\nzz\r\n" in data
    if behaviour == "redirect":
        assert f"Location: https://127.0.0.1:{sim.port}/elsewhere/v1?key={key}".encode() in data


def test_echoes_repeat_the_part_of_the_key_asked(sim: simulator.Simulator) -> None:
    key = "sk-proj-echo-AbCdEfGhIjKlMnOpQrStUvWx0123456789"
    fragment = simulator.middle(key)
    assert len(fragment) == 24 and not key.startswith(fragment) and not key.endswith(fragment)
    for behaviour in ("echo_reason", "echo_header", "echo_body", "echo_code"):
        sim.answer(key, simulator.Answer(behaviour, echo="middle", gzip=False, chunked=False))
        assert fragment.encode() in _raw(sim, key), behaviour
    sim.answer(key, simulator.Answer("echo_reason", echo="middle", gzip=False))
    assert _raw(sim, key).startswith(f"HTTP/1.1 401 {fragment}\r\n".encode())


def test_the_stall_sends_headers_then_nothing(sim: simulator.Simulator) -> None:
    key = "sk-proj-stall-AbCdEfGh0123"
    sim.answer(key, simulator.Answer("stall", hang=1.0))
    data = _raw(sim, key)
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"Content-Length: 4096" in head
    assert rest == b""


def test_the_bomb_decodes_far_past_any_bound(sim: simulator.Simulator) -> None:
    decoded = gzip.decompress(simulator.bomb())
    assert len(decoded) == simulator.BOMB_SIZE and len(simulator.bomb()) < 1 << 20


def test_another_host_address_is_served_with_a_certificate_naming_it() -> None:
    """What the node tests use: the bridge address pods reach (here another loopback one).
    Each call is recorded with its time, method and path; 127.0.0.1 is not listened on."""
    with simulator.Simulator(host="127.0.0.2") as other:
        assert other.openai.startswith(f"https://127.0.0.2:{other.port}/")
        context = ssl.create_default_context(cafile=str(other.ca_file))
        conn = http.client.HTTPSConnection("127.0.0.2", other.port, context=context, timeout=10)
        try:
            conn.request(
                "POST",
                "/openai/v1/chat/completions",
                body=b'{"model": "gpt-4o"}',
                headers={"Authorization": "Bearer sk-good-key"},
            )
            assert conn.getresponse().status == 200
        finally:
            conn.close()
        ((_, method, path, key),) = other.calls
        assert (method, path, key) == ("POST", "/openai/v1/chat/completions", "sk-good-key")
        with (
            pytest.raises(ConnectionRefusedError),
            socket.create_connection(("127.0.0.1", other.port), timeout=5),
        ):
            pass
