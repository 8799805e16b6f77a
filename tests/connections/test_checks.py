"""The provider calls against the provider simulator (tests/providers/simulator.py): TLS from a
CA made in the test, chunked gzip answers in many writes, and every hostile answer it has."""

from __future__ import annotations

import asyncio
import json
import time
import tracemalloc

import aiohttp
import pytest

from controller.core import connections
from controller.providers import connections as provider_connections
from tests.providers import simulator

Reason = connections.Reason
Simulator = simulator.Simulator
Answer = simulator.Answer
SLACK = 0.5  # seconds a check may take past its timeout (the loop's and the OS's share)


def _target(provider: str, endpoint: str) -> connections.Target:
    slot = "apiKey" if provider == "openai" else "runware"
    return connections.Target("x", slot, provider, endpoint, "platform-api-keys", slot)


def _check(
    target: connections.Target, key: str | None, timeout: float = 3.0
) -> connections.Outcome:
    return asyncio.run(provider_connections.check_all([target], lambda _: key, timeout=timeout))[0]


def _shown(outcome: connections.Outcome) -> str:
    return json.dumps(outcome.entry()) + outcome.message + outcome.detail


@pytest.mark.parametrize("provider", ["openai", "runware"])
@pytest.mark.parametrize(
    ("word", "reason", "status"),
    [
        pytest.param("good", Reason.VERIFIED, 200, id="success"),
        pytest.param("bad", Reason.INVALID_KEY, 401, id="401"),
        pytest.param("forbidden", Reason.FORBIDDEN, 403, id="403"),
        pytest.param("limited", Reason.RATE_LIMITED, 429, id="429"),
        pytest.param("broken", Reason.PROVIDER_ERROR, 500, id="500"),
    ],
)
def test_each_answer_maps_to_its_reason_and_no_key_fragment_is_kept(
    trusted: Simulator, provider: str, word: str, reason: Reason, status: int
) -> None:
    key = f"sk-{provider}-{word}-K3yMaterial0123456789"
    outcome = _check(_target(provider, getattr(trusted, provider)), key)
    assert (outcome.reason, outcome.status) == (reason, status)
    assert (provider, key) in trusted.received
    if reason is Reason.INVALID_KEY:  # the provider's code is kept, its message is not
        code = "invalid_api_key" if provider == "openai" else "invalidApiKey"
        assert outcome.message.endswith(f"(provider code {code})")
    if reason is Reason.RATE_LIMITED:
        assert outcome.retry_after == float(simulator.RETRY_AFTER)
    for fragment in (key, simulator.quoted(key), key[:6], key[-4:], "***"):
        assert fragment not in _shown(outcome)


@pytest.mark.parametrize("provider", ["openai", "runware"])
def test_a_valid_key_answered_in_many_slow_writes_is_verified(
    trusted: Simulator, provider: str
) -> None:
    # Break 1 of issue 20: the body was read with one read(), which returns what has arrived;
    # a models list in several writes was "UnexpectedResponse". Here: chunked, gzip, 1 KiB
    # chunks 0.1 s apart (the real list is tens of KiB over TLS).
    key = f"sk-{provider}-slow-writes-K3yMaterial0123"
    trusted.answer(key, Answer(chunk_size=1024, pause=0.1))
    outcome = _check(_target(provider, getattr(trusted, provider)), key, timeout=5.0)
    assert (outcome.reason, outcome.status) == (Reason.VERIFIED, 200)
    if provider == "openai":
        assert outcome.latency > 0.1  # the gzip'd list came in more than one chunk


def test_the_realistic_models_list_is_verified_fast_and_its_connection_kept(
    trusted: Simulator,
) -> None:
    key = "sk-proj-realistic-K3yMaterial0123456789"
    target = _target("openai", trusted.openai)

    async def twice() -> list[connections.Outcome]:
        async with provider_connections.session() as http:
            first = await provider_connections.check(http, target, key, 5.0)
            second = await provider_connections.check(http, target, key, 5.0)
            return [first, second]

    before = trusted.connections
    started = time.perf_counter()
    outcomes = asyncio.run(twice())
    elapsed = time.perf_counter() - started
    assert [o.reason for o in outcomes] == [Reason.VERIFIED] * 2
    assert trusted.connections == before + 1  # keep-alive: one TLS connection, two checks
    assert len(simulator.MODELS) >= 50 * 1024
    print(
        f"models list {len(simulator.MODELS)} bytes; two checks {elapsed * 1000:.0f} ms, "
        f"first {outcomes[0].latency * 1000:.0f} ms, second {outcomes[1].latency * 1000:.0f} ms"
    )


def test_tls_trusts_the_ca_that_ssl_cert_file_names_and_no_other(
    sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The operator's way to trust a private CA (a gateway's): SSL_CERT_FILE, read when the
    # check session is made. Without it the simulator's certificate is refused.
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.setenv("SSL_CERT_DIR", "/nonexistent")  # no system store to fall back on
    key = "sk-proj-tls-K3yMaterial0123456789"
    refused = _check(_target("openai", sim.openai), key)
    assert (refused.reason, refused.detail) == (
        Reason.UNREACHABLE,
        "ClientConnectorCertificateError",
    )
    monkeypatch.setenv("SSL_CERT_FILE", str(sim.ca_file))
    assert _check(_target("openai", sim.openai), key).reason is Reason.VERIFIED


# What each hostile answer must come to, within the timeout (TIMEOUT below).
HOSTILE: dict[str, Reason | frozenset[Reason]] = {
    "deep_json": Reason.UNEXPECTED_RESPONSE,
    "huge_json": Reason.UNEXPECTED_RESPONSE,
    "endless": Reason.UNEXPECTED_RESPONSE,  # past 1 MiB before the timeout
    "stall": Reason.TIMEOUT,
    "slow_headers": Reason.TIMEOUT,
    "bomb": Reason.UNEXPECTED_RESPONSE,
    "redirect": Reason.UNEXPECTED_RESPONSE,
    "garbage_status": Reason.UNEXPECTED_RESPONSE,
    # aiohttp's C parser does not report a bad chunk size that arrives after the headers
    # (a read of its own): the read waits, and the timeout ends it.
    "bad_chunk": frozenset({Reason.UNEXPECTED_RESPONSE, Reason.TIMEOUT}),
    "truncated": Reason.UNEXPECTED_RESPONSE,
    "huge_header": Reason.UNEXPECTED_RESPONSE,
    "close": Reason.UNREACHABLE,
    "wrong_shape": Reason.UNEXPECTED_RESPONSE,
    "not_json": Reason.UNEXPECTED_RESPONSE,
    "not_found": Reason.UNEXPECTED_RESPONSE,
}
TIMEOUT = 1.5


@pytest.mark.parametrize("provider", ["openai", "runware"])
@pytest.mark.parametrize("behaviour", sorted(HOSTILE))
def test_a_hostile_answer_costs_its_own_row_only(
    trusted: Simulator, provider: str, behaviour: str
) -> None:
    # Break 2 of issue 20 (deep_json): json.loads raised RecursionError out of check_all, and
    # every key of the round went unreported. Each hostile answer here goes to one key of
    # three; the two others still verify.
    hostile = f"sk-{provider}-{behaviour}-K3yMaterial0123456789"
    trusted.answer(hostile, Answer(behaviour, hang=TIMEOUT + 3, pause=0.0, chunk_size=1 << 16))
    good = "sk-proj-good-neighbour-K3yMaterial0123"
    targets = [
        _target("openai", trusted.openai),
        _target(provider, getattr(trusted, provider)),
        _target("runware", trusted.runware),
    ]
    keys = {id(targets[0]): good, id(targets[1]): hostile, id(targets[2]): good}
    started = time.perf_counter()
    outcomes = asyncio.run(
        provider_connections.check_all(targets, lambda t: keys[id(t)], timeout=TIMEOUT)
    )
    elapsed = time.perf_counter() - started
    expected = HOSTILE[behaviour]
    allowed = expected if isinstance(expected, frozenset) else {expected}
    assert [outcomes[0].reason, outcomes[2].reason] == [Reason.VERIFIED, Reason.VERIFIED]
    assert outcomes[1].reason in allowed, outcomes[1]
    assert not outcomes[1].detail.startswith("check failed")  # the check itself caught it
    assert elapsed < TIMEOUT + SLACK
    assert not simulator.leaked(_shown(outcomes[1]), [hostile])


def test_a_compression_bomb_is_bounded_by_its_decoded_size(trusted: Simulator) -> None:
    key = "sk-proj-bomb-K3yMaterial0123456789"
    trusted.answer(key, Answer("bomb"))
    simulator.bomb()  # made before measuring: it is the simulator's memory, not the check's
    tracemalloc.start()
    try:
        outcome = _check(_target("openai", trusted.openai), key, timeout=5.0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (outcome.reason, outcome.detail) == (
        Reason.UNEXPECTED_RESPONSE,
        f"body larger than {provider_connections.MAX_BODY // 1024} KiB",
    )
    print(f"bomb of {simulator.BOMB_SIZE >> 20} MiB decoded: peak {peak / 2**20:.1f} MiB")
    assert (
        peak < 8 * provider_connections.MAX_BODY
    )  # the check's copies plus the simulator's chunks


@pytest.mark.parametrize("echo", simulator.ECHOES)
@pytest.mark.parametrize("behaviour", ["echo_body", "echo_header", "echo_reason", "echo_code"])
@pytest.mark.parametrize("provider", ["openai", "runware"])
def test_a_provider_echoing_the_key_gets_no_8_character_run_of_it_out(
    trusted: Simulator, provider: str, behaviour: str, echo: str
) -> None:
    # Break 3 of issue 20: an error code holding a middle fragment of the key (24 characters,
    # not its prefix or suffix) was shown as "provider code ...".
    key = f"sk-proj-{provider}-{behaviour}-{echo}-AbCdEfGhIjKlMnOpQrStUvWx0123456789"
    trusted.answer(key, Answer(behaviour, echo=echo))
    outcome = _check(_target(provider, getattr(trusted, provider)), key)
    assert outcome.reason is Reason.INVALID_KEY
    assert not simulator.leaked(_shown(outcome), [key]), _shown(outcome)


def test_a_redirect_is_not_followed(trusted: Simulator) -> None:
    key = "sk-proj-redirect-K3yMaterial0123456789"
    trusted.answer(key, Answer("redirect"))
    before = trusted.requests
    outcome = _check(_target("openai", trusted.openai), key)
    assert (outcome.reason, outcome.status) == (Reason.UNEXPECTED_RESPONSE, 302)
    assert trusted.requests == before + 1  # the Location (which holds the key) never asked


def test_a_hang_past_the_timeout_is_a_timeout(trusted: Simulator) -> None:
    outcome = _check(_target("openai", trusted.openai), "sk-hang-1234567890", timeout=0.5)
    assert outcome.reason is Reason.TIMEOUT
    assert 0.4 < outcome.latency < 0.5 + SLACK


@pytest.mark.parametrize("provider", ["openai", "runware"])
def test_connection_refused_is_unreachable(provider: str) -> None:
    outcome = _check(_target(provider, simulator.refused_endpoint()), "sk-good-0000")
    assert outcome.reason is Reason.UNREACHABLE
    assert outcome.detail  # the exception's class, not its text


def test_a_missing_key_makes_no_request(trusted: Simulator) -> None:
    before = len(trusted.received)
    outcome = _check(_target("openai", trusted.openai), None)
    assert outcome.reason is Reason.MISSING_KEY
    assert len(trusted.received) == before


def test_a_success_of_the_wrong_shape_is_not_verified(trusted: Simulator) -> None:
    # An endpoint that answers 200 to anything (a captive portal, a wrong gateway) is not a
    # verified key: the Runware check wants an authentication task back.
    outcome = _check(_target("runware", trusted.openai), "sk-good-0000")
    assert outcome.reason is not Reason.VERIFIED


def test_a_check_that_raises_costs_its_own_row_only(
    trusted: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Defence in depth: whatever escapes one check (a bug, not the provider) is that key's
    # UnexpectedResponse; the others are still checked.
    real = provider_connections.check

    async def flaky(
        http: aiohttp.ClientSession, target: connections.Target, key: str | None, timeout: float
    ) -> connections.Outcome:
        if target.slot == "runware":
            raise RecursionError("sk-proj-K3yMaterial0123456789")
        return await real(http, target, key, timeout)

    monkeypatch.setattr(provider_connections, "check", flaky)
    targets = [_target("openai", trusted.openai), _target("runware", trusted.runware)]
    outcomes = asyncio.run(
        provider_connections.check_all(targets, lambda _: "sk-proj-good-K3y0123456789")
    )
    assert [(o.reason, o.detail) for o in outcomes] == [
        (Reason.VERIFIED, ""),
        (Reason.UNEXPECTED_RESPONSE, "check failed: RecursionError"),
    ]


def test_checks_honour_http_proxy_and_no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # A plain-HTTP simulator stands for the proxy (absolute-form request lines).
    with Simulator(tls=False) as proxy:
        # The endpoint names a host that does not resolve; only the proxy can answer it.
        monkeypatch.setenv("HTTP_PROXY", proxy.base)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        target = _target("openai", "http://openai.invalid/openai/v1")
        assert _check(target, "sk-good-proxy-1234").reason is Reason.VERIFIED
        assert "http://openai.invalid/openai/v1/models" in proxy.proxied
        # NO_PROXY names the host: the check goes direct (no name lookup leaves this machine:
        # the host is a loopback address, and the proxy is one where nothing listens).
        monkeypatch.setenv("HTTP_PROXY", simulator.refused_endpoint())
        direct = _target("openai", proxy.openai)
        assert _check(direct, "sk-good-proxy-1234").reason is Reason.UNREACHABLE
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        assert _check(direct, "sk-good-proxy-1234").reason is Reason.VERIFIED
