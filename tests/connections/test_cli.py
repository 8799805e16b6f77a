"""``settings-controller test-connection``: the same reasons as the operator, exit 0 only when
every key is verified."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess

import pytest
import yaml

from tests.conftest import CLI
from tests.connections import conftest
from tests.providers import simulator


def _run(
    *args: object, sim: simulator.Simulator | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The CLI as an operator runs it: the simulator's CA trusted through SSL_CERT_FILE."""
    return subprocess.run(
        [str(CLI), "test-connection", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(sim.env() if sim else {}), **(env or {})},
    )


def _declare(tmp_path: pathlib.Path, endpoints: dict[str, str]) -> pathlib.Path:
    path = tmp_path / "global.yaml"
    path.write_text(yaml.safe_dump(conftest.global_body(endpoints), sort_keys=False))
    return path


def _keys(tmp_path: pathlib.Path, values: dict[str, str]) -> pathlib.Path:
    directory = tmp_path / "keys"
    directory.mkdir()
    for name, value in values.items():
        (directory / name).write_text(value + "\n")
    return directory


GOOD = {
    "openai": "sk-good-openai-AAAA1111",
    "dalle": "sk-good-dalle-BBBB2222",
    "runware": "rw-good-CCCC3333",
}


def test_all_verified_exits_0_with_a_table(
    sim: simulator.Simulator, tmp_path: pathlib.Path
) -> None:
    proc = _run(
        _declare(tmp_path, conftest.local_endpoints(sim)),
        "--keys-dir",
        _keys(tmp_path, GOOD),
        sim=sim,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == [
        "INTEGRATION",
        "CREDENTIAL",
        "CONNECTED",
        "REASON",
        "LATENCY",
        "ENDPOINT",
    ]  # https (the simulator's TLS): no WARNING column
    rows = [line.split() for line in lines[1:4]]
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        ("image_generation", "dalle", "true", "Verified"),
        ("image_generation", "runware", "true", "Verified"),
        ("openai", "apiKey", "true", "Verified"),
    ]
    assert lines[-1] == "3 keys checked, 0 not connected"


def test_every_failure_has_its_reason_and_exit_1_without_leaking(
    sim: simulator.Simulator, tmp_path: pathlib.Path
) -> None:
    keys = {"openai": "sk-bad-openai-LEAKME42", "dalle": "sk-limited-dalle-LEAKME43"}
    endpoints = {**conftest.local_endpoints(sim), "runware": simulator.refused_endpoint()}
    proc = _run(
        _declare(tmp_path, endpoints), "--keys-dir", _keys(tmp_path, keys), "-o", "json", sim=sim
    )
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    assert report["connected"] is False
    assert {(c["integration"], c["credential"]): c["reason"] for c in report["connections"]} == {
        ("openai", "apiKey"): "InvalidKey",
        ("image_generation", "dalle"): "RateLimited",
        ("image_generation", "runware"): "MissingKey",
    }
    for key in keys.values():
        for fragment in (key, simulator.quoted(key), key[:6], key[-4:]):
            assert fragment not in proc.stdout + proc.stderr


def test_keys_from_the_environment_and_yaml_output(
    sim: simulator.Simulator, tmp_path: pathlib.Path
) -> None:
    env = {
        "SETTINGS_CONTROLLER_KEY_OPENAI": GOOD["openai"],
        "SETTINGS_CONTROLLER_KEY_DALLE": GOOD["dalle"],
        "SETTINGS_CONTROLLER_KEY_RUNWARE": "rw-broken-DDDD4444",
    }
    proc = _run(
        _declare(tmp_path, conftest.local_endpoints(sim)),
        "--keys-from-env",
        "-o",
        "yaml",
        sim=sim,
        env=env,
    )
    assert proc.returncode == 1, proc.stderr
    report = yaml.safe_load(proc.stdout)
    assert [c["reason"] for c in report["connections"]] == ["Verified", "ProviderError", "Verified"]


def test_a_secret_per_directory_layout(sim: simulator.Simulator, tmp_path: pathlib.Path) -> None:
    keys = _keys(tmp_path, {})
    (keys / "platform-api-keys").mkdir()
    for name, value in GOOD.items():
        (keys / "platform-api-keys" / name).write_text(value)
    proc = _run(_declare(tmp_path, conftest.local_endpoints(sim)), "--keys-dir", keys, sim=sim)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_usage_errors_exit_2(tmp_path: pathlib.Path) -> None:
    assert _run(tmp_path).returncode == 2  # neither --keys-dir nor --keys-from-env
    assert _run(tmp_path / "nope.yaml", "--keys-from-env").returncode == 2
    assert _run(tmp_path, "--keys-dir", tmp_path / "missing").returncode == 2


def test_a_deeply_nested_answer_still_prints_one_row_per_key(
    sim: simulator.Simulator, tmp_path: pathlib.Path
) -> None:
    # Break 2 of issue 20: a 200 of "[" x 5000 raised RecursionError: a traceback, no rows,
    # the two healthy keys unreported.
    keys = {**GOOD, "dalle": "sk-proj-deep-json-DDDD4444eeee5555"}
    sim.answer(keys["dalle"], simulator.Answer("deep_json"))
    proc = _run(
        _declare(tmp_path, conftest.local_endpoints(sim)), "--keys-dir", _keys(tmp_path, keys),
        "-o", "json", sim=sim,
    )  # fmt: skip
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    report = json.loads(proc.stdout)
    assert [c["reason"] for c in report["connections"]] == [
        "UnexpectedResponse",
        "Verified",
        "Verified",
    ]


@pytest.mark.parametrize("fmt", ["table", "json", "yaml"])
def test_a_provider_echoing_fragments_of_the_key_gets_none_printed(
    sim: simulator.Simulator, tmp_path: pathlib.Path, fmt: str
) -> None:
    # Break 3 of issue 20: a middle fragment of the key (24 characters) in the provider's error
    # code was printed as "provider code ...".
    keys = {
        "openai": f"sk-proj-echo-code-{fmt}-AbCdEfGhIjKlMnOpQrStUvWx0123",
        "dalle": f"sk-proj-echo-header-{fmt}-BcDeFgHiJkLmNoPqRsTuVwXy1234",
        "runware": f"rw-echo-body-{fmt}-CdEfGhIjKlMnOpQrStUvWxYz2345",
    }
    sim.answer(keys["openai"], simulator.Answer("echo_code", echo="middle"))
    sim.answer(keys["dalle"], simulator.Answer("echo_reason", echo="middle"))
    sim.answer(keys["runware"], simulator.Answer("echo_body", echo="middle"))
    proc = _run(
        _declare(tmp_path, conftest.local_endpoints(sim)), "--keys-dir", _keys(tmp_path, keys),
        "-o", fmt, sim=sim,
    )  # fmt: skip
    assert proc.returncode == 1 and "InvalidKey" in proc.stdout, proc.stderr
    assert not simulator.leaked(proc.stdout + proc.stderr, keys.values())


def test_an_endpoint_holding_a_key_is_refused_by_field_and_never_printed(
    sim: simulator.Simulator, tmp_path: pathlib.Path
) -> None:
    # Break 4 of issue 20: a key in the endpoint's path was accepted, sent and printed.
    key = "sk-proj-AbCdEfGhIjKlMnOpQrStUvWx0123456789"
    endpoints = {**conftest.local_endpoints(sim), "apiKey": f"{sim.openai}/{key}"}
    proc = _run(_declare(tmp_path, endpoints), "--keys-dir", _keys(tmp_path, GOOD), sim=sim)
    assert proc.returncode == 1
    assert (
        "spec.integrations.openai.credentials.apiKey.endpoint: looks like it holds an API key"
        in proc.stderr
    )
    assert not simulator.leaked(proc.stdout + proc.stderr, [key])
    assert key not in sim.received_keys() and all(key not in p for p in sim.proxied)


def test_endpoints_are_shown_by_origin(sim: simulator.Simulator, tmp_path: pathlib.Path) -> None:
    # The paths (/openai/v1, /runware/v1) are not shown: a gateway's path can carry a secret.
    endpoints = conftest.local_endpoints(sim)
    proc = _run(_declare(tmp_path, endpoints), "--keys-dir", _keys(tmp_path, GOOD), "-o", "json",
                sim=sim)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert {c["endpoint"] for c in json.loads(proc.stdout)["connections"]} == {sim.base}


def test_a_key_is_not_sent_over_plain_http_to_another_host(
    sim: simulator.Simulator, tmp_path: pathlib.Path
) -> None:
    """test-connection sent keys to an http:// endpoint without a word. Now: refused (exit 2,
    nothing sent) unless --allow-insecure-endpoint; then sent, warned on stderr and in the row.
    A plain-HTTP simulator stands for the forward proxy: it sees whatever would cross the
    network (absolute-form request lines)."""
    endpoints = {**conftest.local_endpoints(sim), "apiKey": "http://llm-gateway.example/openai/v1"}
    path = _declare(tmp_path, endpoints)
    keys = _keys(tmp_path, GOOD)
    with simulator.Simulator(tls=False) as proxy:
        env = {"HTTP_PROXY": proxy.base, "http_proxy": proxy.base, "NO_PROXY": "127.0.0.1"}
        env["no_proxy"] = env["NO_PROXY"]
        refused = _run(path, "--keys-dir", keys, sim=sim, env=env)
        assert refused.returncode == 2 and refused.stdout == ""
        assert refused.stderr == (
            "settings-controller: error: openai.apiKey: http://llm-gateway.example is plain "
            "http: its key would cross the network unencrypted; use https, or pass "
            "--allow-insecure-endpoint to send it anyway\n"
        )
        assert proxy.proxied == [] and proxy.received_keys() == []  # no key left the machine
        allowed = _run(path, "--keys-dir", keys, "--allow-insecure-endpoint", sim=sim, env=env)
        assert proxy.proxied == ["http://llm-gateway.example/openai/v1/models"]
        assert proxy.received_keys() == [GOOD["openai"]]
    assert allowed.returncode == 0, allowed.stderr
    warning = "http://llm-gateway.example: plain http: the key is sent unencrypted"
    assert f"settings-controller: warning: openai.apiKey: {warning}" in allowed.stderr
    lines = allowed.stdout.splitlines()
    assert lines[0].split()[-1] == "WARNING"
    row = next(line for line in lines if line.startswith("openai"))
    assert row.split()[3] == "Verified"
    assert row.endswith("plain http: the key is sent unencrypted")
    assert not simulator.leaked(allowed.stdout + allowed.stderr, GOOD.values())


def test_plain_http_on_loopback_is_checked_with_a_warning_in_the_row(
    tmp_path: pathlib.Path,
) -> None:
    """The bytes never leave the host (a local test server, a port-forward): no refusal."""
    with simulator.Simulator(tls=False) as plain:
        proc = _run(
            _declare(tmp_path, conftest.local_endpoints(plain)),
            "--keys-dir",
            _keys(tmp_path, GOOD),
            "-o",
            "json",
        )
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)["connections"]
    assert [r["warning"] for r in rows] == ["plain http: the key is sent unencrypted"] * 3
    assert proc.stderr.count("settings-controller: warning: ") == 3


def test_a_timeout_that_is_not_a_positive_duration_is_a_usage_error(tmp_path: pathlib.Path) -> None:
    path = _declare(tmp_path, {})
    keys = _keys(tmp_path, GOOD)
    for value in ("nan", "-1", "0", "inf", "-inf", "ten"):
        done = _run(path, "--keys-dir", keys, f"--timeout={value}")
        assert done.returncode == 2, (value, done.stderr)
        assert f"--timeout: {value}:" in done.stderr and "Traceback" not in done.stderr
