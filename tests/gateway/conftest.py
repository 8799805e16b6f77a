"""Fixtures for the gateway: the examples pointed at the provider simulator, a token file, a
keys directory, and the gateway run as a user runs it (``settings-controller gateway``)."""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator

import openai
import pytest
import yaml

from tests.conftest import CLI, EXAMPLES
from tests.connections import conftest as connections_conftest
from tests.providers import simulator

KEY = "sk-proj-gatewayPlatformKey0123456789AbCdEfGhIjKlMnOpQr"
DALLE_KEY = "sk-proj-gatewayDalleKey9876543210ZyXwVuTsRqPoNmLk"
RUNWARE_KEY = "rwGatewayRunwareKey5550123AbCdEfGhIjKl"
KEYS = (KEY, DALLE_KEY, RUNWARE_KEY)
TOKENS = {
    "tok-123-Qm9zYXJpbw": "acct-123",
    "tok-456-UGVyc2V1cw": "acct-456",
    "tok-789-QW5kcm9tZWRh": "acct-789",
    "tok-free-Q2Fzc2lvcGVpYQ": "acct-free",
    "tok-paused-Q2VwaGV1cw": "acct-paused",
    "tok-orphan-Q2V0dXM": "acct-nobody",
}
TOKEN = {namespace: token for token, namespace in TOKENS.items()}
SECRETS = (*KEYS, *TOKENS)
# Seconds between two looks of until(): the freshness bounds are measured to 10 ms.
POLL = 0.01
CLIENTS: list[openai.OpenAI] = []


@dataclasses.dataclass
class World:
    root: pathlib.Path
    declarations: pathlib.Path
    tokens: pathlib.Path
    keys: pathlib.Path

    def write_key(self, name: str, value: str) -> None:
        path = self.keys / "platform-api-keys" / name
        tmp = path.with_name("." + name + ".tmp")
        tmp.write_text(value)
        os.replace(tmp, path)


def make_world(root: pathlib.Path, sim: simulator.Simulator) -> World:
    declarations = root / "declarations"
    shutil.copytree(EXAMPLES, declarations)
    body = connections_conftest.global_body(connections_conftest.local_endpoints(sim))
    (declarations / "global.yaml").write_text(yaml.safe_dump(body, sort_keys=False))
    tokens = root / "tokens.yaml"
    tokens.write_text(yaml.safe_dump(TOKENS))
    keys = root / "keys"
    (keys / "platform-api-keys").mkdir(parents=True)
    for name, value in (("openai", KEY), ("dalle", DALLE_KEY), ("runware", RUNWARE_KEY)):
        (keys / "platform-api-keys" / name).write_text(value)
    return World(root, declarations, tokens, keys)


class Gateway:
    """``settings-controller gateway`` in a subprocess; its log collected."""

    def __init__(
        self,
        world: World | None,
        sim: simulator.Simulator,
        *extra: str,
        env: dict[str, str] | None = None,
        keys_from_env: bool = False,
        ready_timeout: float = 30.0,
    ) -> None:
        mode: list[str] = []  # no world: cluster mode, ``extra`` says where
        if world is not None:
            keys = ["--keys-from-env"] if keys_from_env else ["--keys-dir", str(world.keys)]
            mode = ["--declarations", str(world.declarations), "--tokens", str(world.tokens), *keys]
        args = [
            str(CLI),
            "gateway",
            *mode,
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            *extra,
        ]
        self.proc = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **sim.env(), **(env or {})},
        )
        self.lines: list[str] = []
        self.port = 0
        self.metrics_port = 0
        ready = threading.Event()

        def read() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                self.lines.append(line)
                if m := re.search(r"serving http://127\.0\.0\.1:(\d+)/v1", line):
                    self.port = int(m.group(1))
                if m := re.search(r"metrics at http://127\.0\.0\.1:(\d+)/metrics", line):
                    self.metrics_port = int(m.group(1))
                    ready.set()
            ready.set()

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()
        if not ready.wait(ready_timeout) or not self.port:
            self.stop()
            raise RuntimeError("the gateway did not start:\n" + "".join(self.lines))

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def client(self, namespace: str | None = None, token: str | None = None) -> openai.OpenAI:
        """The SDK's client for one account (closed at the end of the test)."""
        made = openai.OpenAI(
            api_key=token if token is not None else TOKEN[namespace or "acct-789"],
            base_url=self.base,
            max_retries=0,
            timeout=20,
        )
        CLIENTS.append(made)
        return made

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._reader.join(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode


@pytest.fixture(scope="module")
def sim() -> Iterator[simulator.Simulator]:
    with simulator.Simulator(hang=10.0) as server:
        yield server


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, sim: simulator.Simulator) -> World:
    return make_world(tmp_path_factory.mktemp("gateway"), sim)


@pytest.fixture(scope="module")
def gateway(world: World, sim: simulator.Simulator) -> Iterator[Gateway]:
    running = Gateway(world, sim, "--timeout", "2", "--max-body", "65536")
    yield running
    running.stop()


@pytest.fixture(autouse=True)
def polite(sim: simulator.Simulator) -> Iterator[None]:
    """Each test starts and ends with the simulator answering every key politely."""
    sim.answers.clear()
    yield
    sim.answers.clear()
    while CLIENTS:
        CLIENTS.pop().close()
