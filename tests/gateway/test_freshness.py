"""Local mode follows its files: a change is enforced within a second (measured), and a file
caught mid-write (truncated, half written, invalid) never replaces the last good state."""

from __future__ import annotations

import os
import pathlib
import time
from collections.abc import Iterator
from typing import Any

import httpx2 as httpx
import pytest
import yaml

from tests.gateway import conftest
from tests.gateway.conftest import POLL, TOKEN, Gateway, World
from tests.harness.fixtures import until
from tests.providers import simulator

HELLO = [{"role": "user", "content": "hi"}]
BOUND = 1.0  # seconds: the promise


@pytest.fixture
def fresh(tmp_path: pathlib.Path, sim: simulator.Simulator) -> Iterator[tuple[World, Gateway]]:
    world = conftest.make_world(tmp_path, sim)
    running = Gateway(world, sim, "--timeout", "5")
    yield world, running
    running.stop()
    assert simulator.leaked(running.log, conftest.SECRETS) == []


def _ask(gateway: Gateway, namespace: str, **fields: Any) -> httpx.Response:
    return httpx.post(
        f"{gateway.base}/chat/completions",
        json={"messages": HELLO, **fields},
        headers={"Authorization": f"Bearer {TOKEN.get(namespace, namespace)}"},
        timeout=10,
    )


def _sent(sim: simulator.Simulator) -> dict[str, Any]:
    return sim.bodies[-1][1]


def _replace(path: pathlib.Path, text: str) -> None:
    """An editor's save through a rename."""
    tmp = path.with_name(f".{path.name}.swp")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_a_global_change_by_rename_is_enforced_within_a_second(
    fresh: tuple[World, Gateway],
) -> None:
    world, gateway = fresh
    assert _ask(gateway, "acct-789", model="gpt-4.1").status_code == 200
    path = world.declarations / "global.yaml"
    body = yaml.safe_load(path.read_text())
    body["spec"]["integrations"]["openai"]["allowedValues"]["model"] = ["gpt-4o-mini", "gpt-4o"]
    started = time.monotonic()
    _replace(path, yaml.safe_dump(body, sort_keys=False))
    took = until(
        lambda: _ask(gateway, "acct-789", model="gpt-4.1").status_code == 403,
        "gpt-4.1 refused",
        BOUND,
        POLL,
    )
    print(f"global change (rename) enforced after {took * 1000:.0f} ms")
    assert time.monotonic() - started < BOUND + 0.5


def test_an_in_place_rewrite_keeps_the_last_good_state_until_it_parses(
    fresh: tuple[World, Gateway], sim: simulator.Simulator
) -> None:
    world, gateway = fresh
    path = world.declarations / "accounts" / "acct-456.yaml"
    old = path.read_text()
    new = old.replace("max_tokens: 4000", "max_tokens: 2000")
    assert new != old
    assert _ask(gateway, "acct-456").status_code == 200
    assert _sent(sim)["max_tokens"] == 4000
    with open(path, "r+") as f:
        f.truncate(0)  # in place: the same inode, read empty for a while
        f.flush()
        os.fsync(f.fileno())
        deadline = time.monotonic() + 1.5  # longer than a scan period
        while time.monotonic() < deadline:
            assert _ask(gateway, "acct-456").status_code == 200
            assert _sent(sim)["max_tokens"] == 4000
            time.sleep(0.05)
        half = new[: len(new) // 2]
        f.write(half)  # then half written: not valid
        f.flush()
        os.fsync(f.fileno())
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            assert _ask(gateway, "acct-456").status_code == 200
            assert _sent(sim)["max_tokens"] == 4000
            time.sleep(0.05)
        started = time.monotonic()
        f.write(new[len(half) :])
    took = time.monotonic() - started

    def enforced() -> bool:
        return _ask(gateway, "acct-456").status_code == 200 and _sent(sim)["max_tokens"] == 2000

    took += until(enforced, "the new max_tokens enforced", BOUND, POLL)
    print(f"in-place rewrite enforced after {took * 1000:.0f} ms")
    assert took < BOUND
    assert "its last good state is kept" in gateway.log


def test_a_deleted_account_is_refused_within_a_second(fresh: tuple[World, Gateway]) -> None:
    world, gateway = fresh
    assert _ask(gateway, "acct-456").status_code == 200
    (world.declarations / "accounts" / "acct-456.yaml").unlink()
    took = until(
        lambda: _ask(gateway, "acct-456").status_code == 403, "acct-456 refused", BOUND, POLL
    )
    print(f"deleted account refused after {took * 1000:.0f} ms")
    assert _ask(gateway, "acct-456").json()["error"]["code"] == "no_account"


def test_tokens_and_keys_are_followed(
    fresh: tuple[World, Gateway], sim: simulator.Simulator
) -> None:
    world, gateway = fresh
    tokens = yaml.safe_load(world.tokens.read_text())
    _replace(world.tokens, yaml.safe_dump({**tokens, "tok-new-Tm92YQ": "acct-123"}))
    took = until(
        lambda: _ask(gateway, "tok-new-Tm92YQ").status_code == 200, "the new token", BOUND, POLL
    )
    print(f"new token accepted after {took * 1000:.0f} ms")
    world.tokens.write_text("")  # read empty: the last good tokens stay
    time.sleep(1.5)
    assert _ask(gateway, "tok-new-Tm92YQ").status_code == 200
    rotated = "sk-proj-rotatedPlatformKey0123456789ZzYyXxWwVv"
    world.write_key("openai", rotated)

    def used() -> bool:
        return _ask(gateway, "acct-789").status_code == 200 and (
            sim.received_keys("openai")[-1] == rotated
        )

    took = until(used, "the rotated key used", BOUND, POLL)
    print(f"rotated key used after {took * 1000:.0f} ms, no restart")
    (world.keys / "platform-api-keys" / "openai").unlink()
    until(lambda: _ask(gateway, "acct-789").status_code == 503, "503 without the key", BOUND, POLL)
    error = _ask(gateway, "acct-789").json()["error"]
    assert error["code"] == "key_missing"
    assert simulator.leaked(gateway.log, [rotated]) == []
