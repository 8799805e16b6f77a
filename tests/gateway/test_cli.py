"""``settings-controller gateway`` on the command line: an unusable kubeconfig is one line and
exit 1, usage errors exit 2, per-account metrics stay within their bound."""

from __future__ import annotations

import concurrent.futures
import pathlib
import signal
import socket
import subprocess
import time

import httpx2 as httpx
import pytest
import yaml

from tests.conftest import CLI, RunCli
from tests.gateway import conftest
from tests.gateway.conftest import Gateway
from tests.providers import simulator


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(("--kubeconfig", "/nonexistent"), id="missing"),
        pytest.param(("--kubeconfig", "/", "--audience", "integrations.igny8.com"), id="dir"),
    ],
)
def test_cluster_mode_with_an_unusable_kubeconfig_exits_1_with_one_line(
    cli: RunCli, args: tuple[str, ...]
) -> None:
    done = cli("gateway", *args, "--listen", "127.0.0.1:0", timeout=30)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.splitlines() == [done.stderr.strip()]
    assert "kubeconfig" in done.stderr and "Traceback" not in done.stderr


def test_cluster_mode_waits_for_an_unreachable_api_server_and_stops_on_sigterm(
    tmp_path: pathlib.Path,
) -> None:
    """Nothing is served before the first listing; SIGTERM while waiting exits 0 at once."""
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    config = tmp_path / "kubeconfig"
    config.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": f"https://127.0.0.1:{port}"}}],
                "users": [{"name": "u", "user": {"token": "tok-Qm9zYXJpbwSecretish"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    proc = subprocess.Popen(
        [str(CLI), "gateway", "--kubeconfig", str(config), "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        time.sleep(3)
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        out, _ = proc.communicate(timeout=10)
        assert time.monotonic() - started < 5
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    assert "serving" not in out
    assert "following" in out and "failed" in out  # it says why it waits
    assert "Traceback" not in out and "Qm9zYXJpbw" not in out


def test_cluster_and_local_flags_do_not_mix(cli: RunCli, tmp_path: pathlib.Path) -> None:
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text("t: ns\n")
    local = ("--declarations", tmp_path, "--tokens", tokens, "--keys-dir", tmp_path)
    for extra in (("--audience", "x"), ("--namespace", "x"), ("--token-cache-seconds", "5")):
        done = cli("gateway", *local, *extra)
        assert done.returncode == 2, done.stderr
        assert "cluster mode" in done.stderr
    done = cli("gateway", "--keys-from-env")
    assert done.returncode == 2
    assert "local mode" in done.stderr


def test_local_mode_usage_errors_exit_2(cli: RunCli, tmp_path: pathlib.Path) -> None:
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text("t: ns\n")
    base = ("gateway", "--declarations", tmp_path, "--tokens", tokens)
    assert cli(*base).returncode == 2  # no keys
    assert cli(*base, "--keys-dir", tmp_path, "--keys-from-env").returncode == 2
    assert cli(*base, "--keys-dir", tmp_path, "--listen", "nope").returncode == 2
    missing = cli(
        "gateway", "--declarations", tmp_path, "--tokens", tmp_path / "no.yaml", "--keys-from-env"
    )
    assert missing.returncode == 2
    assert "no such file" in missing.stderr


def test_per_account_metrics_are_opt_in_and_bounded(
    tmp_path: pathlib.Path, sim: simulator.Simulator
) -> None:
    world = conftest.make_world(tmp_path, sim)
    running = Gateway(world, sim, "--metrics-accounts", "1")
    try:
        for namespace in ("acct-789", "acct-456", "acct-free"):
            running.client(namespace).chat.completions.create(
                model="gpt-4.1" if namespace == "acct-456" else "gpt-4o-mini",
                messages=[{"role": "user", "content": "one two three"}],
            )
        text = httpx.get(f"http://127.0.0.1:{running.metrics_port}/metrics").text
    finally:
        running.stop()
    series = [
        line
        for line in text.splitlines()
        if line.startswith("settings_gateway_account_requests_total")
    ]
    accounts = {line.split('account="')[1].split('"')[0] for line in series}
    assert accounts == {"acct-789", "other"}
    assert 'settings_gateway_account_requests_total{account="other",outcome="ok"} 2.0' in text
    assert 'settings_gateway_tokens_total{kind="prompt",plan="pro"} 6.0' in text
    assert 'settings_gateway_tokens_total{kind="prompt",plan="free"} 3.0' in text


@pytest.mark.parametrize("bypass", [False, True], ids=["through-the-proxy", "no-proxy"])
def test_the_proxy_of_the_environment_is_used(
    tmp_path: pathlib.Path, sim: simulator.Simulator, bypass: bool
) -> None:
    world = conftest.make_world(tmp_path, sim)
    path = world.declarations / "global.yaml"
    path.write_text(path.read_text().replace(sim.openai, "http://openai.invalid/openai/v1"))
    with simulator.Simulator(tls=False) as proxy:
        env = {"HTTP_PROXY": proxy.base, "http_proxy": proxy.base, "NO_PROXY": "127.0.0.1"}
        if bypass:
            env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,openai.invalid"
        refusing = Gateway(world, sim, env=env)
        try:
            refused = httpx.post(
                f"{refusing.base}/chat/completions",
                json={"messages": [{"role": "user", "content": "hi"}]},
                headers={"Authorization": f"Bearer {conftest.TOKEN['acct-789']}"},
                timeout=20,
            )
        finally:
            refusing.stop()
        # Plain http to another host: refused unless allowed, nothing sent.
        assert refused.status_code == 502
        assert "--allow-insecure-endpoint" in refused.json()["error"]["message"]
        assert proxy.proxied == [] and proxy.received_keys() == []
        running = Gateway(world, sim, "--allow-insecure-endpoint", env=env)
        try:
            answer = httpx.post(
                f"{running.base}/chat/completions",
                json={"messages": [{"role": "user", "content": "hi"}]},
                headers={"Authorization": f"Bearer {conftest.TOKEN['acct-789']}"},
                timeout=20,
            )
        finally:
            running.stop()
        if bypass:
            assert answer.status_code == 502  # openai.invalid does not resolve
            assert proxy.proxied == []
        else:
            assert answer.status_code == 200, answer.text
            assert proxy.proxied == ["http://openai.invalid/openai/v1/chat/completions"]
            assert proxy.received_keys() == [conftest.KEY]


def test_the_upstream_connection_pool_is_bounded(
    tmp_path: pathlib.Path, sim: simulator.Simulator
) -> None:
    world = conftest.make_world(tmp_path, sim)
    sim.answer(conftest.KEY, simulator.Answer(stream_chunks=20, pause=0.05))  # 1 s streams
    running = Gateway(world, sim, "--max-connections", "2")
    most = 0
    try:

        def one() -> int:
            with httpx.stream(
                "POST",
                f"{running.base}/chat/completions",
                json={"messages": [{"role": "user", "content": "hi"}], "stream": True},
                headers={"Authorization": f"Bearer {conftest.TOKEN['acct-789']}"},
                timeout=30,
            ) as answer:
                b"".join(answer.iter_raw())
                return answer.status_code

        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            futures = [pool.submit(one) for _ in range(6)]
            while not all(f.done() for f in futures):
                most = max(most, sim.streams["open"])
                time.sleep(0.01)
            statuses = [f.result() for f in futures]
    finally:
        running.stop()
    assert statuses == [200] * 6  # the others waited for a connection, none failed
    assert most == 2


def test_keys_from_the_environment(tmp_path: pathlib.Path, sim: simulator.Simulator) -> None:
    world = conftest.make_world(tmp_path, sim)
    key = "sk-proj-Zq8Xw3Vt9Rk2Lm7Np4Bc6Df1Gh5Jy0Ws"
    running = Gateway(world, sim, env={"SETTINGS_CONTROLLER_KEY_OPENAI": key}, keys_from_env=True)
    try:
        running.client("acct-789").chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
        refused = httpx.post(  # no SETTINGS_CONTROLLER_KEY_DALLE: that key is missing
            f"{running.base}/images/generations",
            json={"prompt": "x"},
            headers={"Authorization": f"Bearer {conftest.TOKEN['acct-789']}"},
        )
        assert running.stop() == 0  # SIGTERM: a clean stop
    finally:
        running.stop()
    assert sim.received_keys("openai")[-1] == key
    assert (refused.status_code, refused.json()["error"]["code"]) == (503, "key_missing")
    assert simulator.leaked(running.log, [key]) == []
