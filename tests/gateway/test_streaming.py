"""``stream: true``: events pass through as they come, key fragments never, and a client that
goes away takes the upstream call with it."""

from __future__ import annotations

import time

import httpx2 as httpx
import openai
import pytest

from tests.gateway.conftest import KEY, KEYS, POLL, TOKEN, Gateway
from tests.harness.fixtures import until
from tests.providers import simulator

HELLO = [{"role": "user", "content": "say hello"}]


def test_events_arrive_as_the_provider_sends_them(
    gateway: Gateway, sim: simulator.Simulator
) -> None:
    sim.answer(KEY, simulator.Answer(stream_chunks=5, pause=0.3))
    before = _completion_tokens(gateway)
    started = time.monotonic()
    stream = gateway.client("acct-789").chat.completions.create(
        model="gpt-4o-mini", messages=HELLO, stream=True, stream_options={"include_usage": True}
    )
    arrivals, words = [], []
    for chunk in stream:
        arrivals.append(time.monotonic() - started)
        if chunk.choices and chunk.choices[0].delta.content:
            words.append(chunk.choices[0].delta.content)
    assert "".join(words) == "".join(f"word{i} " for i in range(5))
    # Unbuffered: the first event well before the last (0.3 s between events upstream).
    assert arrivals[-1] - arrivals[0] > 1.5, arrivals
    assert arrivals[0] < arrivals[-1] - 1.2, arrivals
    assert sim.bodies[-1][1]["max_tokens"] == 8192  # filled for streams too
    assert _completion_tokens(gateway) == before + 5  # the usage of the last event, counted


def _completion_tokens(gateway: Gateway) -> float:
    text = httpx.get(f"http://127.0.0.1:{gateway.metrics_port}/metrics").text
    for line in text.splitlines():
        if line.startswith('settings_gateway_tokens_total{kind="completion",plan="pro"}'):
            return float(line.split()[-1])
    return 0.0


def test_a_key_split_across_two_reads_is_scrubbed(
    gateway: Gateway, sim: simulator.Simulator
) -> None:
    sim.answer(KEY, simulator.Answer(stream_echo=True, pause=0.05))
    with httpx.stream(
        "POST",
        f"{gateway.base}/chat/completions",
        json={"messages": HELLO, "stream": True},
        headers={"Authorization": f"Bearer {TOKEN['acct-789']}"},
        timeout=20,
    ) as answer:
        assert answer.status_code == 200
        body = b"".join(answer.iter_raw()).decode()
    assert "your key is" in body and "[DONE]" in body
    assert simulator.leaked(body, KEYS) == []


def test_a_client_that_goes_away_cancels_the_upstream_call(
    gateway: Gateway, sim: simulator.Simulator
) -> None:
    sim.answer(KEY, simulator.Answer(stream_chunks=400, pause=0.05))  # 20 s of events
    cut = sim.streams["cut"]
    with httpx.stream(
        "POST",
        f"{gateway.base}/chat/completions",
        json={"messages": HELLO, "stream": True},
        headers={"Authorization": f"Bearer {TOKEN['acct-789']}"},
        timeout=20,
    ) as answer:
        first = next(answer.iter_raw())
        assert first.startswith(b"data: ")
        assert sim.streams["open"] >= 1
    # Closed by the client after one read: the provider's stream is cut within a second.
    took = until(
        lambda: sim.streams["cut"] > cut and sim.streams["open"] == 0,
        "the provider's stream cut",
        2.0,
        POLL,
    )
    print(f"upstream stream cut {took * 1000:.0f} ms after the client went away")


def test_a_stream_that_stalls_ends_with_an_error_event_within_the_timeout(
    gateway: Gateway, sim: simulator.Simulator
) -> None:
    sim.answer(KEY, simulator.Answer(stream_chunks=3, pause=6.0))  # --timeout 2
    started = time.monotonic()
    stream = gateway.client("acct-789").chat.completions.create(
        model="gpt-4o-mini", messages=HELLO, stream=True
    )
    got = []
    with pytest.raises(openai.APIError, match="broke off"):
        for chunk in stream:
            got.append(chunk)
    assert got  # what came before the stall was passed on
    assert time.monotonic() - started < 2 + 1.5
