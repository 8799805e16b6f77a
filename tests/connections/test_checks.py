"""The provider calls against local servers speaking each provider's wire format."""

from __future__ import annotations

import asyncio
import json

import pytest

from controller.core import connections
from controller.providers import checks
from tests.connections import providers

Reason = connections.Reason


def _target(provider: str, endpoint: str) -> connections.Target:
    slot = "apiKey" if provider == "openai" else "runware"
    return connections.Target("x", slot, provider, endpoint, "platform-api-keys", slot)


def _check(
    target: connections.Target, key: str | None, timeout: float = 3.0
) -> connections.Outcome:
    return asyncio.run(checks.check_all([target], lambda _: key, timeout=timeout))[0]


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
    fake: providers.Providers, provider: str, word: str, reason: Reason, status: int
) -> None:
    key = f"sk-{provider}-{word}-K3yMaterial0123456789"
    outcome = _check(_target(provider, getattr(fake, provider)), key)
    assert (outcome.reason, outcome.status) == (reason, status)
    assert (provider, key) in fake.requests
    if reason is Reason.INVALID_KEY:  # the provider's code is kept, its message is not
        code = "invalid_api_key" if provider == "openai" else "invalidApiKey"
        assert outcome.message.endswith(f"(provider code {code})")
    if reason is Reason.RATE_LIMITED:
        assert outcome.retry_after == float(providers.RETRY_AFTER)
    shown = json.dumps(outcome.entry()) + outcome.message
    for fragment in (key, providers.quoted(key), key[:6], key[-4:], "***"):
        assert fragment not in shown


def test_a_hang_past_the_timeout_is_a_timeout(fake: providers.Providers) -> None:
    outcome = _check(_target("openai", fake.openai), "sk-hang-1234567890", timeout=0.5)
    assert outcome.reason is Reason.TIMEOUT
    assert 0.4 < outcome.latency < 2.0


@pytest.mark.parametrize("provider", ["openai", "runware"])
def test_connection_refused_is_unreachable(provider: str) -> None:
    outcome = _check(_target(provider, providers.refused_endpoint()), "sk-good-0000")
    assert outcome.reason is Reason.UNREACHABLE
    assert outcome.detail  # the exception's class, not its text


def test_a_missing_key_makes_no_request(fake: providers.Providers) -> None:
    before = len(fake.requests)
    outcome = _check(_target("openai", fake.openai), None)
    assert outcome.reason is Reason.MISSING_KEY
    assert len(fake.requests) == before


def test_a_success_of_the_wrong_shape_is_not_verified(fake: providers.Providers) -> None:
    # An endpoint that answers 200 to anything (a captive portal, a wrong gateway) is not a
    # verified key: the OpenAI check wants a models list. The Runware server's 404 here is
    # the fake's; the point is that the status alone does not verify.
    outcome = _check(_target("runware", fake.openai), "sk-good-0000")
    assert outcome.reason is not Reason.VERIFIED


def test_checks_honour_http_proxy_and_no_proxy(
    fake: providers.Providers, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The endpoint names a host that does not resolve; only the proxy can answer it.
    monkeypatch.setenv("HTTP_PROXY", fake.base)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    target = _target("openai", "http://openai.invalid/openai/v1")
    assert _check(target, "sk-good-proxy-1234").reason is Reason.VERIFIED
    assert "http://openai.invalid/openai/v1/models" in fake.proxied
    # NO_PROXY names the host: the check goes direct (no name lookup leaves this machine:
    # the host is a loopback address, and the proxy is one where nothing listens).
    monkeypatch.setenv("HTTP_PROXY", providers.refused_endpoint())
    direct = _target("openai", fake.openai)
    assert _check(direct, "sk-good-proxy-1234").reason is Reason.UNREACHABLE
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert _check(direct, "sk-good-proxy-1234").reason is Reason.VERIFIED
