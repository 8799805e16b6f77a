"""``settings-controller test-connection``: the same reasons as the operator, exit 0 only when
every key is verified."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess

import yaml

from tests.conftest import CLI
from tests.connections import conftest, providers


def _run(*args: object, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLI), "test-connection", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
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
    fake: providers.Providers, tmp_path: pathlib.Path
) -> None:
    proc = _run(
        _declare(tmp_path, conftest.local_endpoints(fake)), "--keys-dir", _keys(tmp_path, GOOD)
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
    ]
    rows = [line.split() for line in lines[1:4]]
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        ("image_generation", "dalle", "true", "Verified"),
        ("image_generation", "runware", "true", "Verified"),
        ("openai", "apiKey", "true", "Verified"),
    ]
    assert lines[-1] == "3 keys checked, 0 not connected"


def test_every_failure_has_its_reason_and_exit_1_without_leaking(
    fake: providers.Providers, tmp_path: pathlib.Path
) -> None:
    keys = {"openai": "sk-bad-openai-LEAKME42", "dalle": "sk-limited-dalle-LEAKME43"}
    endpoints = {**conftest.local_endpoints(fake), "runware": providers.refused_endpoint()}
    proc = _run(_declare(tmp_path, endpoints), "--keys-dir", _keys(tmp_path, keys), "-o", "json")
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    assert report["connected"] is False
    assert {(c["integration"], c["credential"]): c["reason"] for c in report["connections"]} == {
        ("openai", "apiKey"): "InvalidKey",
        ("image_generation", "dalle"): "RateLimited",
        ("image_generation", "runware"): "MissingKey",
    }
    for key in keys.values():
        for fragment in (key, providers.quoted(key), key[:6], key[-4:]):
            assert fragment not in proc.stdout + proc.stderr


def test_keys_from_the_environment_and_yaml_output(
    fake: providers.Providers, tmp_path: pathlib.Path
) -> None:
    env = {
        "SETTINGS_CONTROLLER_KEY_OPENAI": GOOD["openai"],
        "SETTINGS_CONTROLLER_KEY_DALLE": GOOD["dalle"],
        "SETTINGS_CONTROLLER_KEY_RUNWARE": "rw-broken-DDDD4444",
    }
    proc = _run(
        _declare(tmp_path, conftest.local_endpoints(fake)), "--keys-from-env", "-o", "yaml", env=env
    )
    assert proc.returncode == 1, proc.stderr
    report = yaml.safe_load(proc.stdout)
    assert [c["reason"] for c in report["connections"]] == ["Verified", "ProviderError", "Verified"]


def test_a_secret_per_directory_layout(fake: providers.Providers, tmp_path: pathlib.Path) -> None:
    keys = _keys(tmp_path, {})
    (keys / "platform-api-keys").mkdir()
    for name, value in GOOD.items():
        (keys / "platform-api-keys" / name).write_text(value)
    proc = _run(_declare(tmp_path, conftest.local_endpoints(fake)), "--keys-dir", keys)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_usage_errors_exit_2(tmp_path: pathlib.Path) -> None:
    assert _run(tmp_path).returncode == 2  # neither --keys-dir nor --keys-from-env
    assert _run(tmp_path / "nope.yaml", "--keys-from-env").returncode == 2
    assert _run(tmp_path, "--keys-dir", tmp_path / "missing").returncode == 2
