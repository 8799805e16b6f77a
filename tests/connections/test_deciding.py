"""The pure decisions: targets from a global, HTTP outcome -> reason, scrubbing, the verdict,
and which key each account's effective settings depend on."""

from __future__ import annotations

import pytest

from controller.core import catalog as catalog_
from controller.core import connections, declarations, merging
from tests.connections import conftest

Reason = connections.Reason


def _global(
    cat: catalog_.Catalog, endpoints: dict[str, str] | None = None
) -> declarations.GlobalSettings:
    decl, problems = declarations.parse(cat, conftest.global_body(endpoints or {}))
    assert not problems and isinstance(decl, declarations.GlobalSettings)
    return decl


def test_targets_default_to_the_public_endpoints_and_take_the_declared_one(
    catalog: catalog_.Catalog,
) -> None:
    public = {
        t.name: (t.provider, t.endpoint) for t in connections.targets(catalog, _global(catalog))
    }
    assert public == {
        "openai.apiKey": ("openai", "https://api.openai.com/v1"),
        "image_generation.dalle": ("openai", "https://api.openai.com/v1"),
        "image_generation.runware": ("runware", "https://api.runware.ai/v1"),
    }
    local = connections.targets(catalog, _global(catalog, {"runware": "http://127.0.0.1:9/rw/"}))
    assert {t.name: t.endpoint for t in local}[
        "image_generation.runware"
    ] == "http://127.0.0.1:9/rw"


def test_disabled_integrations_are_not_checked(catalog: catalog_.Catalog) -> None:
    body = conftest.global_body({})
    body["spec"]["integrations"]["image_generation"]["enabled"] = False
    decl, _ = declarations.parse(catalog, body)
    assert isinstance(decl, declarations.GlobalSettings)
    assert [t.name for t in connections.targets(catalog, decl)] == ["openai.apiKey"]


def test_an_endpoint_with_userinfo_is_refused_by_the_schema(catalog: catalog_.Catalog) -> None:
    body = conftest.global_body({"apiKey": "https://user:sk-secret@proxy.example/v1"})
    decl, problems = declarations.parse(catalog, body)
    assert decl is None and problems


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        pytest.param(200, Reason.VERIFIED, id="200"),
        pytest.param(401, Reason.INVALID_KEY, id="401"),
        pytest.param(403, Reason.FORBIDDEN, id="403"),
        pytest.param(429, Reason.RATE_LIMITED, id="429"),
        pytest.param(500, Reason.PROVIDER_ERROR, id="500"),
        pytest.param(503, Reason.PROVIDER_ERROR, id="503"),
        pytest.param(404, Reason.UNEXPECTED_RESPONSE, id="404"),
    ],
)
def test_http_status_to_reason(status: int, reason: Reason) -> None:
    assert connections.reason_for_status(status) is reason


def test_scrub_removes_keys_fragments_and_masked_quotes() -> None:
    key = "sk-proj-AbCdEf0123456789XyZw"
    text = (
        "Incorrect API key provided: sk-pro***XyZw. Also sk-proj-AbCdEf0123456789XyZw "
        "and a prefix sk-proj-AbC and a tail 6789XyZw."
    )
    scrubbed = connections.scrub(text, [key])
    for fragment in ("sk-pro", "XyZw", "AbCdEf", "***"):
        assert fragment not in scrubbed
    assert scrubbed.startswith("Incorrect API key provided:")


def test_outcome_messages_show_the_endpoint_by_origin_only() -> None:
    # Break 4 of issue 20: the path was shown, and a key in it with it. Userinfo, path, query
    # and fragment can each carry a secret: only scheme://host[:port] is shown.
    key = "sk-proj-AbCdEfGhIjKlMnOpQrStUvWx0123"
    target = connections.Target(
        "openai", "apiKey", "openai", f"https://u:p@gw.local:8443/v1/{key}?k=sk-1#f", "s", "k"
    )
    outcome = connections.Outcome(
        target, Reason.INVALID_KEY, 0.1, "2026-01-01T00:00:00Z", status=401
    )
    assert outcome.message == (
        "HTTP 401 from https://gw.local:8443: the provider refused the key (revoked, "
        "mistyped or expired)"
    )
    assert outcome.entry()["endpoint"] == "https://gw.local:8443"
    assert connections.printable_endpoint("http://[::1]/v1") == "http://[::1]"
    assert connections.printable_endpoint("https://h:99999/v1") == "<endpoint that is not a URL>"
    assert connections.printable_endpoint("https://127.0.0.1:0/v1") == "https://127.0.0.1:0"
    assert connections.printable_endpoint(f"https://{key}.gw.local/v1") == (
        "<endpoint that looks like a key>"
    )


def _outcome(name: str, reason: Reason) -> connections.Outcome:
    integration, slot = name.split(".")
    target = connections.Target(integration, slot, "openai", "https://x/v1", "s", slot)
    return connections.Outcome(target, reason, 0.0, "t")


def test_verdict_is_true_only_when_every_key_is_verified() -> None:
    good = [
        _outcome("openai.apiKey", Reason.VERIFIED),
        _outcome("image_generation.dalle", Reason.VERIFIED),
    ]
    assert connections.verdict(good).status == "True"
    limited = [*good[:1], _outcome("image_generation.dalle", Reason.RATE_LIMITED)]
    v = connections.verdict(limited)
    assert (v.status, v.reason) == ("False", "RateLimited")
    assert "image_generation.dalle" in v.message
    both = [
        _outcome("openai.apiKey", Reason.TIMEOUT),
        _outcome("image_generation.dalle", Reason.INVALID_KEY),
    ]
    assert connections.verdict(both).reason == "InvalidKey"  # the one to act on first
    pending = [*good[:1], _outcome("image_generation.dalle", Reason.CHECKING)]
    assert connections.verdict(pending).status == "Unknown"


def test_backoff_for_transient_outcomes_honours_retry_after() -> None:
    t = connections.Target("openai", "apiKey", "openai", "https://x/v1", "s", "k")
    limited = connections.Outcome(t, Reason.RATE_LIMITED, 0, "t", status=429, retry_after=40)
    assert connections.next_delay(limited, 1, 300) == 40
    timeout = connections.Outcome(t, Reason.TIMEOUT, 0, "t")
    assert [connections.next_delay(timeout, n, 300) for n in (1, 2, 3, 10)] == [5, 10, 20, 300]
    bad = connections.Outcome(t, Reason.INVALID_KEY, 0, "t", status=401)
    assert connections.next_delay(bad, 1, 300) == 300


def test_an_account_overriding_the_service_depends_on_that_services_key(
    catalog: catalog_.Catalog,
) -> None:
    global_ = _global(catalog)
    account = declarations.Account("acct", "pro", "acct")
    runware = declarations.IntegrationSettings(
        "acct", "image_generation", True, {"service": "runware"}
    )
    outcomes = {
        "openai.apiKey": _outcome("openai.apiKey", Reason.VERIFIED),
        "image_generation.dalle": _outcome("image_generation.dalle", Reason.INVALID_KEY),
        "image_generation.runware": _outcome("image_generation.runware", Reason.VERIFIED),
    }
    on_defaults = merging.merge_account(catalog, global_, account, {})
    assert connections.services_connected(catalog, on_defaults, outcomes) == {
        "openai": True,
        "image_generation": False,  # the default service is openai: DALL-E's key is bad
    }
    on_runware = merging.merge_account(catalog, global_, account, {"image_generation": runware})
    assert connections.services_connected(catalog, on_runware, outcomes) == {
        "openai": True,
        "image_generation": True,
    }


def test_only_a_short_provider_code_with_nothing_of_the_key_is_kept() -> None:
    key = "sk-proj-AbCdEf0123456789XyZw"
    assert connections.provider_code("invalid_api_key", [key]) == "invalid_api_key"
    assert connections.provider_code("Incorrect API key provided: sk-pro***XyZw", [key]) == ""
    assert connections.provider_code("AbCdEf0123", [key]) == ""  # a fragment of the key
    assert connections.provider_code(key, [key]) == ""
    assert connections.provider_code({"code": 1}, [key]) == ""


def test_a_provider_code_carrying_a_key_folded_or_in_pieces_is_dropped() -> None:
    # Breakit2: the key upper-cased, or cut every 7 characters by a separator, passed the
    # literal 8-run test. Codes are letters and separators only, compared case-folded
    # without separators.
    key = "sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz"
    letters = key[8:]
    assert connections.provider_code("E" + letters.upper(), [key]) == ""
    pieces = "_".join(letters[i : i + 7] for i in range(0, 21, 7))
    assert connections.provider_code("e_" + pieces, [key]) == ""
    assert (
        connections.provider_code("e." + "-".join(letters[i : i + 4] for i in (0, 4)), [key]) == ""
    )
    assert connections.provider_code("e_Abc123D_ef456Gh", [key]) == ""  # digits: never a code
    assert connections.provider_code("x" * 49, [key]) == ""  # over 48 characters
    for code in ("invalid_api_key", "insufficient_quota", "rate_limit_exceeded", "invalidApiKey"):
        assert connections.provider_code(code, [key]) == code
    assert connections.provider_code("model_not_found", [key]) == "model_not_found"


def test_no_8_character_run_of_a_key_survives_scrub_or_provider_code() -> None:
    # Break 3 of issue 20: a middle fragment (neither prefix nor suffix) went through.
    key = "sk-proj-AbCdEfGhIjKlMnOpQrStUvWx0123456789"
    fragment = key[10:34]
    assert connections.provider_code(f"key_{fragment}", [key]) == ""
    assert connections.provider_code(f"err.{key[12:20]}.x", [key]) == ""  # exactly 8
    assert connections.provider_code("invalid_api_key", [key]) == "invalid_api_key"
    text = f"a {fragment} b {key[5:13]}{key[20:30]} c"
    scrubbed = connections.scrub(text, [key])
    assert not connections.leaks(scrubbed, [key])
    assert scrubbed.startswith("a <redacted> b <redacted>") and scrubbed.endswith(" c")
    assert connections.leaks(f"x{key[3:11]}y", [key]) and not connections.leaks(key[3:10], [key])
