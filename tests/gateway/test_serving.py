"""The gateway as a workload meets it, through the official ``openai`` package: settings
filled and enforced, the key injected and never shown, errors in OpenAI's shape."""

from __future__ import annotations

import socket
import time
from typing import Any

import httpx2 as httpx
import openai
import pytest

from tests.gateway import conftest
from tests.gateway.conftest import KEY, KEYS, SECRETS, TOKEN, Gateway
from tests.providers import simulator

HELLO = [{"role": "user", "content": "say hello"}]


def _last(sim: simulator.Simulator, route: str = "/chat/completions") -> dict[str, Any]:
    return next(body for path, body in reversed(sim.bodies) if path.endswith(route))


def _raw(gateway: Gateway, namespace: str, body: dict[str, Any], route: str = "chat/completions"):  # type: ignore[no-untyped-def]
    return httpx.post(
        f"{gateway.base}/{route}",
        json=body,
        headers={"Authorization": f"Bearer {TOKEN[namespace]}"},
        timeout=20,
    )


def test_left_out_fields_get_the_effective_values(
    gateway: Gateway, sim: simulator.Simulator
) -> None:
    answer = _raw(gateway, "acct-456", {"messages": HELLO})
    assert answer.status_code == 200, answer.text
    sent = _last(sim)
    assert (sent["model"], sent["temperature"], sent["max_tokens"]) == ("gpt-4.1", 0.7, 4000)
    assert sim.received_keys("openai")[-1] == KEY


def test_the_sdk_gets_an_answer_and_the_provider_the_platform_key(
    gateway: Gateway, sim: simulator.Simulator
) -> None:
    done = gateway.client("acct-123").chat.completions.create(model="gpt-4o", messages=HELLO)
    assert done.choices[0].message.content == "Hello from the simulator."
    assert done.usage is not None and done.usage.completion_tokens == 5
    sent = _last(sim)
    assert (sent["model"], sent["temperature"], sent["max_tokens"]) == ("gpt-4o", 0.8, 8192)
    assert sim.received_keys("openai")[-1] == KEY


@pytest.mark.parametrize(
    ("namespace", "fields", "status", "param"),
    [
        pytest.param("acct-123", {"model": "gpt-4.1"}, 200, None, id="pro-allowed-value"),
        pytest.param("acct-123", {"model": "gpt-3.5-turbo"}, 403, "model", id="pro-not-allowed"),
        pytest.param("acct-123", {"temperature": 1.5}, 200, None, id="pro-temperature-in-range"),
        pytest.param("acct-123", {"temperature": 5}, 400, "temperature", id="out-of-range"),
        pytest.param("acct-123", {"temperature": "hot"}, 400, "temperature", id="wrong-type"),
        pytest.param("acct-free", {"model": "gpt-4o-mini"}, 200, None, id="free-default"),
        pytest.param("acct-free", {"model": "gpt-4o"}, 403, "model", id="free-other-model"),
        pytest.param("acct-free", {"temperature": 0.9}, 403, "temperature", id="free-other-temp"),
        pytest.param("acct-456", {"max_tokens": 100}, 200, None, id="below-the-ceiling"),
        pytest.param("acct-456", {"max_tokens": 4001}, 403, "max_tokens", id="above-refused"),
        pytest.param(
            "acct-456", {"max_completion_tokens": 9000}, 403, "max_completion_tokens", id="new-name"
        ),
        pytest.param("acct-456", {"max_tokens": 0}, 400, "max_tokens", id="not-positive"),
    ],
)
def test_a_field_set_must_be_one_the_account_could_choose(
    gateway: Gateway,
    sim: simulator.Simulator,
    namespace: str,
    fields: dict[str, Any],
    status: int,
    param: str | None,
) -> None:
    before = len(sim.bodies)
    answer = _raw(gateway, namespace, {"messages": HELLO, **fields})
    assert answer.status_code == status, answer.text
    if status == 200:
        sent = _last(sim)
        assert all(sent[k] == v for k, v in fields.items())
        return
    assert len(sim.bodies) == before  # nothing went upstream
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param
    assert error["code"] == ("not_allowed" if status == 403 else "invalid_value")
    assert error["message"].startswith(f"{param}:")
    if status == 403:
        assert "allowed:" in error["message"]


def test_the_sdk_raises_its_usual_exceptions(gateway: Gateway) -> None:
    with pytest.raises(openai.PermissionDeniedError) as refused:
        gateway.client("acct-free").chat.completions.create(model="gpt-4o", messages=HELLO)
    assert refused.value.code == "not_allowed"
    assert "allowed: gpt-4o-mini" in refused.value.message
    with pytest.raises(openai.PermissionDeniedError, match="allowed: 1 to 4000"):
        gateway.client("acct-456").chat.completions.create(
            model="gpt-4.1", messages=HELLO, max_tokens=5000
        )


def test_inactive_overrides_mean_the_defaults(gateway: Gateway, sim: simulator.Simulator) -> None:
    assert _raw(gateway, "acct-paused", {"messages": HELLO}).status_code == 200
    sent = _last(sim)
    assert (sent["model"], sent["temperature"]) == ("gpt-4o-mini", 0.7)


def test_images_filled_and_runware_refused_with_501(
    gateway: Gateway, sim: simulator.Simulator
) -> None:
    done = gateway.client("acct-789").images.generate(prompt="a lighthouse")
    assert done.data is not None and done.data[0].url
    sent = _last(sim, "/images/generations")
    assert (sent["model"], sent["size"], sent["quality"], sent["style"]) == (
        "dall-e-3",
        "1024x1024",
        "standard",
        "vivid",
    )
    assert sim.received_keys("openai")[-1] == conftest.DALLE_KEY
    refused = _raw(gateway, "acct-789", {"prompt": "x", "size": "512x512"}, "images/generations")
    assert refused.status_code == 200  # a pro plan may ask any size the schema admits
    refused = _raw(gateway, "acct-free", {"prompt": "x", "size": "512x512"}, "images/generations")
    assert (refused.status_code, refused.json()["error"]["param"]) == (403, "size")
    with pytest.raises(openai.InternalServerError) as runware:
        gateway.client("acct-123").images.generate(prompt="a lighthouse")
    assert runware.value.status_code == 501
    assert runware.value.code == "not_implemented"
    assert "Runware route" in runware.value.message


def test_models_are_those_the_account_may_use(gateway: Gateway) -> None:
    pro = [m.id for m in gateway.client("acct-789").models.list()]
    assert pro == ["gpt-4o-mini", "gpt-4o", "gpt-4.1", "dall-e-3"]
    free = [m.id for m in gateway.client("acct-free").models.list()]
    assert free == ["gpt-4o-mini", "dall-e-3"]


@pytest.mark.parametrize(
    ("token", "status", "code"),
    [
        pytest.param("", 401, "invalid_token", id="missing"),
        pytest.param("not-a-token-we-know", 401, "invalid_token", id="unknown"),
        pytest.param(TOKEN["acct-nobody"], 403, "no_account", id="unclaimed-namespace"),
    ],
)
def test_who_is_refused(gateway: Gateway, token: str, status: int, code: str) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    answer = httpx.post(f"{gateway.base}/chat/completions", json={}, headers=headers)
    assert answer.status_code == status
    error = answer.json()["error"]
    assert error["code"] == code
    if token:
        assert token not in answer.text
    with pytest.raises(openai.APIStatusError) as raised:
        gateway.client(token=token or "x").models.list()
    assert raised.value.status_code == (status if token else 401)


def test_a_token_acts_only_for_its_own_account(gateway: Gateway, sim: simulator.Simulator) -> None:
    # Whatever else the request says, the free account's token gets the free account's settings.
    answer = httpx.post(
        f"{gateway.base}/chat/completions",
        json={"messages": HELLO, "user": "acct-123", "namespace": "acct-123"},
        headers={
            "Authorization": f"Bearer {TOKEN['acct-free']}",
            "OpenAI-Organization": "acct-123",
            "OpenAI-Project": "acct-123",
        },
    )
    assert answer.status_code == 200
    assert _last(sim)["model"] == "gpt-4o-mini"
    refused = _raw(gateway, "acct-free", {"messages": HELLO, "model": "gpt-4o"})
    assert refused.status_code == 403


def test_an_oversize_body_is_refused_with_413(gateway: Gateway, sim: simulator.Simulator) -> None:
    before = len(sim.bodies)
    big = [{"role": "user", "content": "x" * 70_000}]
    with pytest.raises(openai.APIStatusError) as raised:
        gateway.client("acct-789").chat.completions.create(model="gpt-4o-mini", messages=big)
    assert raised.value.status_code == 413
    assert len(sim.bodies) == before


def test_a_hanging_provider_is_504_within_the_timeout(
    gateway: Gateway, sim: simulator.Simulator
) -> None:
    for behaviour in ("slow_headers", "stall"):
        sim.answer(KEY, simulator.Answer(behaviour, hang=10))
        started = time.monotonic()
        with pytest.raises(openai.APIStatusError) as raised:
            gateway.client("acct-789").chat.completions.create(model="gpt-4o-mini", messages=HELLO)
        elapsed = time.monotonic() - started
        assert raised.value.status_code == 504, behaviour
        assert raised.value.code == "provider_timeout"
        assert elapsed < 2 + 1.5, (behaviour, elapsed)  # --timeout 2, plus slack


@pytest.mark.parametrize("behaviour", ["echo_body", "echo_header", "echo_reason", "echo_code"])
@pytest.mark.parametrize("echo", simulator.ECHOES)
def test_an_echoing_provider_is_scrubbed(
    gateway: Gateway, sim: simulator.Simulator, behaviour: str, echo: str
) -> None:
    sim.answer(KEY, simulator.Answer(behaviour, echo=echo))
    answer = _raw(gateway, "acct-789", {"messages": HELLO})
    assert answer.status_code == 401
    shown = answer.text + "".join(f"{k}: {v}\n" for k, v in answer.headers.items())
    shown += answer.reason_phrase
    assert simulator.leaked(shown, KEYS) == []
    assert answer.json()["error"]  # still OpenAI's shape after scrubbing


def test_provider_errors_pass_through_scrubbed(gateway: Gateway, sim: simulator.Simulator) -> None:
    sim.answer(KEY, simulator.Answer("invalid"))
    with pytest.raises(openai.AuthenticationError) as raised:
        gateway.client("acct-789").chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert raised.value.code == "invalid_api_key"
    assert simulator.quoted(KEY) not in raised.value.message
    assert simulator.leaked(raised.value.message, KEYS) == []
    sim.answer(KEY, simulator.Answer("limited"))
    answer = _raw(gateway, "acct-789", {"messages": HELLO})
    assert (answer.status_code, answer.headers.get("Retry-After")) == (429, simulator.RETRY_AFTER)


@pytest.mark.parametrize(
    ("answer", "status"),
    [
        pytest.param(simulator.Answer(chunk_size=1, pause=0), 200, id="split-writes"),
        pytest.param(simulator.Answer("huge_json"), 200, id="huge"),
        pytest.param(simulator.Answer("deep_json"), 200, id="nested"),
        # A bad chunk size that arrives with the headers is sometimes dropped by aiohttp's
        # parser without an error: the gateway then sees silence, 504 after --timeout.
        pytest.param(simulator.Answer("bad_chunk"), (502, 504), id="bad-chunk"),
        pytest.param(simulator.Answer("truncated"), 502, id="truncated"),
        pytest.param(simulator.Answer("garbage_status"), 502, id="garbage-status"),
        pytest.param(simulator.Answer("bomb"), 502, id="compression-bomb"),
        pytest.param(simulator.Answer("close"), 502, id="closed"),
    ],
)
def test_hostile_answers_are_bounded(
    gateway: Gateway, sim: simulator.Simulator, answer: simulator.Answer, status: Any
) -> None:
    sim.answer(KEY, answer)
    started = time.monotonic()
    got = _raw(gateway, "acct-789", {"messages": HELLO})
    assert time.monotonic() - started < 2 + 1.5  # --timeout 2, plus slack
    assert got.status_code in (status if isinstance(status, tuple) else (status,)), got.text[:200]
    if status == 200 and answer.behaviour == "ok":
        assert got.json()["choices"][0]["message"]["content"] == "Hello from the simulator."
    elif answer.behaviour == "huge_json":
        assert got.content == simulator.HUGE
    elif answer.behaviour == "deep_json":
        assert got.content == b"[" * 5000
    else:
        assert got.json()["error"]["code"] in ("provider_unreachable", "provider_timeout")
    assert simulator.leaked(got.text, KEYS) == []
    # The gateway still serves.
    sim.answers.clear()
    assert _raw(gateway, "acct-789", {"messages": HELLO}).status_code == 200


def test_the_log_and_the_metrics_hold_no_key_and_no_token(gateway: Gateway) -> None:
    gateway.client("acct-123").chat.completions.create(model="gpt-4o", messages=HELLO)
    metrics = httpx.get(f"http://127.0.0.1:{gateway.metrics_port}/metrics").text
    assert 'settings_gateway_requests_total{outcome="ok",plan="pro",route="chat"}' in metrics
    assert 'settings_gateway_tokens_total{kind="completion",plan="pro"}' in metrics
    assert "settings_gateway_overhead_seconds_bucket" in metrics
    assert "account=" not in metrics.split("# HELP settings_gateway_account_requests")[1].split(
        "# HELP"
    )[0].replace("# TYPE", "")  # per-account series are opt-in
    assert simulator.leaked(gateway.log + metrics, SECRETS) == []


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(b"Authorization: Bearer " + b"tok-123-Qm9zYXJpbw" * 1000, id="too-long"),
        pytest.param(b"Authorization: Bearer tok-123-Qm9zYXJpbw\x00x", id="nul"),
    ],
)
def test_a_request_the_parser_refuses_quotes_nothing(gateway: Gateway, header: bytes) -> None:
    """aiohttp's own answer to a header it cannot parse (and its log line) quoted the bytes
    it refused: for an Authorization header, the token."""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as s:
        s.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n" + header + b"\r\n\r\n")
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    status = answer.split(b" ")[1]
    assert status in (b"400", b"431"), answer[:300]
    assert b'"code": "malformed_request"' in answer
    assert b"Qm9zYXJpbw" not in answer
    time.sleep(0.2)
    assert "Qm9zYXJpbw" not in gateway.log
    assert simulator.leaked(answer.decode("latin-1") + gateway.log, SECRETS) == []


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"[" * 60_000, id="nested"),
        pytest.param(b"not json", id="not-json"),
        pytest.param(b'["a list"]', id="not-an-object"),
        pytest.param(b"\xff\xfe", id="not-utf8"),
    ],
)
def test_a_malformed_body_is_400(gateway: Gateway, sim: simulator.Simulator, raw: bytes) -> None:
    before = len(sim.bodies)
    answer = httpx.post(
        f"{gateway.base}/chat/completions",
        content=raw,
        headers={"Authorization": f"Bearer {TOKEN['acct-789']}"},
    )
    assert (answer.status_code, answer.json()["error"]["code"]) == (400, "invalid_value")
    assert len(sim.bodies) == before


def test_another_route_is_an_openai_shaped_404(gateway: Gateway) -> None:
    answer = httpx.post(f"{gateway.base}/embeddings", json={}, headers={"Authorization": "x"})
    assert (answer.status_code, answer.json()["error"]["code"]) == (404, "unknown_route")
