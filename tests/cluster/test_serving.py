"""controller/cluster/serving.py without a cluster: the /metrics filter's answers, its cache
and its bounds, TLS with a made or mounted certificate (reloaded), the probes, and what a
hostile client can send (no token, garbage, a huge header, a flood of distinct tokens)."""

from __future__ import annotations

import asyncio
import logging
import pathlib
import socket
import ssl
from collections.abc import Mapping
from typing import Any

import aiohttp
import prometheus_client as prom
import pytest

from controller.cluster import serving
from controller.cluster.runtime import clients
from tests.operator import support


class Reviewer:
    """A fake API server: tokens "reader" (allowed), "nobody" (authenticated, no RBAC);
    anything else is not authenticated. Counts calls and their concurrency."""

    def __init__(self, delay: float = 0.0, down: bool = False) -> None:
        self.delay, self.down = delay, down
        self.token_calls = self.access_calls = 0
        self.running = self.most = 0

    async def review_token(self, token: str) -> dict[str, Any]:
        self.token_calls += 1
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await asyncio.sleep(self.delay)
            if self.down:
                raise clients.WriteError("token review: 0 ClientConnectorError", 0)
        finally:
            self.running -= 1
        if token in ("reader", "nobody"):
            return {"authenticated": True, "user": {"username": token, "groups": ["g"]}}
        return {"authenticated": False}

    async def review_access(self, user: Mapping[str, Any], path: str, verb: str) -> bool:
        self.access_calls += 1
        assert (path, verb) == ("/metrics", "get")
        return bool(user["username"] == "reader")


def test_answers_401_403_200() -> None:
    async def main() -> None:
        reviewer = Reviewer()
        gate = serving.Gate(reviewer)
        assert (await gate.status(None))[0] == 401
        assert (await gate.status("Basic dXNlcjpwYXNz"))[0] == 401
        assert (await gate.status("Bearer "))[0] == 401
        assert (await gate.status("Bearer forged"))[0] == 401
        assert (await gate.status("Bearer nobody"))[0] == 403
        assert (await gate.status("bearer reader"))[0] == 200
        assert (reviewer.token_calls, reviewer.access_calls) == (3, 2)

    asyncio.run(main())


def test_decisions_are_cached_briefly_and_the_cache_is_bounded() -> None:
    async def main() -> None:
        reviewer = Reviewer()
        gate = serving.Gate(reviewer, ttl=0.3, size=3)
        for _ in range(20):
            assert (await gate.status("Bearer reader"))[0] == 200
            assert (await gate.status("Bearer forged"))[0] == 401
        assert reviewer.token_calls == 2  # one each: every later scrape from the cache
        await asyncio.sleep(0.35)
        assert (await gate.status("Bearer reader"))[0] == 200
        assert reviewer.token_calls == 3  # expired: asked again
        for i in range(50):
            await gate.status(f"Bearer garbage-{i}")
        assert len(gate._cache) == 3

    asyncio.run(main())


def test_a_flood_of_distinct_tokens_runs_few_reviews_at_once() -> None:
    async def main() -> None:
        reviewer = Reviewer(delay=0.01)
        gate = serving.Gate(reviewer)
        answers = await asyncio.gather(*(gate.status(f"Bearer t{i}") for i in range(100)))
        assert {code for code, _ in answers} == {401}
        assert reviewer.most <= serving.REVIEWS

    asyncio.run(main())


@pytest.mark.parametrize(
    "header",
    [
        pytest.param("Bearer " + "x" * (serving.MAX_TOKEN + 1), id="too-long"),
        pytest.param("Bearer tok\u00e9n", id="not-ascii"),
        pytest.param("Bearer tok\x00en", id="control-character"),
        pytest.param("Bearer a b", id="space-inside"),
    ],
)
def test_garbage_tokens_are_refused_without_an_api_call(header: str) -> None:
    async def main() -> None:
        reviewer = Reviewer()
        code, _ = await serving.Gate(reviewer).status(header)
        assert code == 401 and reviewer.token_calls == 0

    asyncio.run(main())


def test_an_unreachable_api_server_is_503_and_not_cached() -> None:
    async def main() -> None:
        reviewer = Reviewer(down=True)
        gate = serving.Gate(reviewer)
        assert (await gate.status("Bearer reader"))[0] == 503
        reviewer.down = False
        assert (await gate.status("Bearer reader"))[0] == 200

    asyncio.run(main())


async def _get(url: str, headers: Mapping[str, str] | None = None) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, headers=dict(headers or {}), ssl=False) as response,
    ):
        return response.status, await response.text()


def test_https_metrics_with_a_self_signed_certificate() -> None:
    async def main() -> None:
        registry = prom.CollectorRegistry()
        prom.Counter("demo_total", "A demo counter.", registry=registry).inc()
        reviewer = Reviewer()
        port = support.free_port()
        runner = await serving.start(
            serving.metrics(registry, serving.Gate(reviewer)),
            "127.0.0.1",
            port,
            serving.tls_context(None),
        )
        url = f"https://127.0.0.1:{port}/metrics"
        try:
            code, body = await _get(url)
            assert code == 401 and "bearer token" in body
            assert (await _get(url, {"Authorization": "Bearer nobody"}))[0] == 403
            code, body = await _get(url, {"Authorization": "Bearer reader"})
            assert code == 200 and "demo_total 1.0" in body
            # A header of 100 KiB: refused by the HTTP parser, no review asked, still serving.
            calls = reviewer.token_calls
            code, _ = await _get(url, {"Authorization": "Bearer " + "y" * 100_000})
            assert code in (400, 431)
            assert reviewer.token_calls == calls
            assert (await _get(url, {"Authorization": "Bearer reader"}))[0] == 200
            # Plain HTTP to the HTTPS port gets nothing.
            with pytest.raises(aiohttp.ClientError):
                await _get(url.replace("https:", "http:"))
        finally:
            await runner.cleanup()

    asyncio.run(main())


def _peer_certificate(port: int) -> bytes:
    context = support.insecure()
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw) as tls,
    ):
        cert = tls.getpeercert(binary_form=True)
    assert cert is not None
    return cert


def _write_pair(directory: pathlib.Path) -> bytes:
    crt, key = serving.self_signed()
    (directory / "tls.key.new").write_bytes(key)
    (directory / "tls.crt.new").write_bytes(crt)
    (directory / "tls.key.new").rename(directory / "tls.key")
    (directory / "tls.crt.new").rename(directory / "tls.crt")
    return ssl.PEM_cert_to_DER_cert(crt.decode())


def test_a_mounted_certificate_is_served_and_reloaded_when_it_changes(
    tmp_path: pathlib.Path,
) -> None:
    first = _write_pair(tmp_path)

    async def main() -> None:
        context = serving.tls_context(tmp_path)
        port = support.free_port()
        runner = await serving.start(
            serving.metrics(prom.CollectorRegistry(), None), "127.0.0.1", port, context
        )
        reload = asyncio.create_task(
            serving.reload_certificate(serving.Certificate(tmp_path), context, every=0.05)
        )
        try:
            assert await asyncio.to_thread(_peer_certificate, port) == first
            (tmp_path / "tls.crt").write_text("not a certificate")  # a broken pair: kept
            await asyncio.sleep(0.2)
            assert await asyncio.to_thread(_peer_certificate, port) == first
            second = _write_pair(tmp_path)
            for _ in range(40):
                await asyncio.sleep(0.05)
                if await asyncio.to_thread(_peer_certificate, port) == second:
                    break
            assert await asyncio.to_thread(_peer_certificate, port) == second
        finally:
            reload.cancel()
            await runner.cleanup()

    asyncio.run(main())


def test_probes_and_every_interface() -> None:
    async def main() -> None:
        state = {"ready": False}
        port = support.free_port()
        runner = await serving.start(
            serving.probes(lambda: (state["ready"], "ok" if state["ready"] else "not yet")),
            "",
            port,
        )
        try:
            for host in ("127.0.0.1", "[::1]"):
                assert (await _get(f"http://{host}:{port}/healthz"))[0] == 200
                assert await _get(f"http://{host}:{port}/readyz") == (503, "not yet")
            state["ready"] = True
            assert await _get(f"http://127.0.0.1:{port}/readyz") == (200, "ok")
            assert (await _get(f"http://127.0.0.1:{port}/metrics"))[0] == 404
        finally:
            await runner.cleanup()

    asyncio.run(main())


@pytest.mark.parametrize(
    "request_",
    [
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\x01\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nAuthorization : Bearer %s\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n"
        b"Authorization: Bearer %s\r\n\r\n",
        b"G\x00T /%s HTTP/1.1\r\n\r\n",
    ],
    ids=["control-character", "space-before-colon", "length-and-chunked", "bad-method"],
)
def test_a_request_the_parser_refuses_is_one_line_without_its_content(
    request_: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    # Breakit2: aiohttp logged "Error handling request" with a traceback whose message
    # quoted the header line, a scraper's bearer token included; at any log level.
    token = "eyJhbGciOiJSUzI1NiJ9.c2NyYXBlci10b2tlbi1ub3QtYS1rZXk"
    caplog.set_level(logging.DEBUG)

    async def main() -> None:
        port = support.free_port()
        runner = await serving.start(serving.probes(lambda: (True, "ok")), "127.0.0.1", port)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request_ % token.encode())
            await writer.drain()
            assert (await reader.read(1024)).startswith(b"HTTP/1.")
            writer.close()
            await asyncio.sleep(0.1)
        finally:
            await runner.cleanup()

    asyncio.run(main())
    text = caplog.text + "".join(str(r.exc_info) + str(r.exc_text) for r in caplog.records)
    assert not [token[i : i + 8] for i in range(len(token) - 7) if token[i : i + 8] in text]
    assert "Traceback" not in text and all(r.exc_info is None for r in caplog.records)
    refused = [r for r in caplog.records if "request not logged" in r.getMessage()]
    assert refused and all(r.levelno <= logging.WARNING for r in refused)
    assert all("\n" not in r.getMessage() for r in caplog.records)
