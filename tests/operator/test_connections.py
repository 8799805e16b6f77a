"""Key checks on the real control plane: ``Connected`` and ``status.connections`` on the global,
the service each account uses on Accounts and IntegrationSettings, rotations, the annotation,
Events, metrics, and no key fragment anywhere outside the Secrets.

The session's operator runs without checks (its global names the public endpoints); this
module stops it, points every credential's endpoint at the provider simulator
(tests/providers/simulator.py: TLS from a CA the operator trusts through SSL_CERT_FILE,
chunked gzip answers, keep-alive), runs an operator with checks on, and puts everything
back at the end.
"""

from __future__ import annotations

import json
import pathlib
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.connections import conftest as connections_conftest
from tests.harness.fixtures import Kube
from tests.operator import fixtures, support
from tests.providers import simulator

pytestmark = pytest.mark.cluster

GOOD = {
    "openai": "sk-good-openai-LEAK0001aaaa",
    "dalle": "sk-good-dalle-LEAK0002bbbb",
    "runware": "rw-good-runware-LEAK0003cccc",
}
GIS = ("globalintegrationsettings", "default")
ANNOTATION = "integrations.igny8.com/test-connection"


class Checking:
    def __init__(self, kube: Kube, fake: simulator.Simulator, op: support.Operator) -> None:
        self.kube, self.fake, self.op = kube, fake, op
        self.keys_used: set[str] = set()

    def keys(self, drop: tuple[str, ...] = (), **values: str) -> None:
        """The platform key Secret: the good keys, some replaced, some left out."""
        merged = {k: v for k, v in {**GOOD, **values}.items() if k not in drop}
        self.keys_used.update(merged.values())
        fixtures.apply_keys(self.kube, merged)

    def declare(self, endpoints: dict[str, str]) -> None:
        body = connections_conftest.global_body(endpoints)
        support.apply_text(self.kube, json.dumps(body))

    def reasons(self, predicate: Any, timeout: float = 30.0, what: str = "") -> dict[str, Any]:
        def ok(obj: dict[str, Any]) -> bool:
            found = {
                f"{c['integration']}.{c['credential']}": c["reason"]
                for c in obj.get("status", {}).get("connections", [])
            }
            return bool(predicate(found, support.condition(obj, "Connected")))

        try:
            return support.wait_json(self.kube, GIS, ok, timeout, what)
        except AssertionError:
            status = support.get_json(self.kube, *GIS).get("status", {})
            shown = json.dumps({k: status.get(k) for k in ("conditions", "connections")}, indent=1)
            raise AssertionError(
                f"timed out waiting for {what}; status:\n{shown}\n{self.op.log_tail(30)}"
            ) from None


@pytest.fixture(scope="module")
def checking(
    operator: support.Operator, installed: Kube, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Checking]:
    operator.stop()  # one leader at a time: the session's operator checks nothing
    log = pathlib.Path(tmp_path_factory.mktemp("connections")) / "operator.log"
    with simulator.Simulator(hang=5.0) as fake:
        op = support.Operator(
            installed,
            log,
            ("--connection-check-interval=30", "--connection-check-timeout=2"),
            fake.env(),
        )
        state = Checking(installed, fake, op)
        state.keys()
        state.declare(connections_conftest.local_endpoints(fake))
        op.start()
        try:
            yield state
        finally:
            if op.proc is not None:
                op.stop()
            installed.kubectl("apply", "-f", str(support.REPO / "examples" / "global.yaml"))
            fixtures.apply_keys(installed, fixtures.KEYS)
            operator.start()


def _all(reason: str) -> Any:
    return lambda found, cond: len(found) == 3 and set(found.values()) == {reason}


def test_the_global_shows_connected_with_one_entry_per_key(checking: Checking) -> None:
    obj = checking.reasons(
        lambda found, cond: _all("Verified")(found, cond) and cond.get("status") == "True",
        what="every key verified",
    )
    entries = obj["status"]["connections"]
    assert [(e["integration"], e["credential"], e["provider"]) for e in entries] == [
        ("image_generation", "dalle", "openai"),
        ("image_generation", "runware", "runware"),
        ("openai", "apiKey", "openai"),
    ]  # in catalog order, whatever the order of the declaration
    # Shown by origin: a path could carry a secret (issue 20, break 4).
    assert all(e["connected"] and e["endpoint"] == checking.fake.base for e in entries)
    assert all(isinstance(e["latencyMilliseconds"], int) and e["lastCheckTime"] for e in entries)
    table = checking.kube.kubectl("get", "gis").stdout.splitlines()
    assert table[0].split() == ["NAME", "READY", "CREDENTIALS", "CONNECTED", "REASON", "AGE"]
    assert table[1].split()[:4] == ["default", "True", "True", "True"]
    assert ("openai", GOOD["openai"]) in checking.fake.received
    assert ("runware", GOOD["runware"]) in checking.fake.received


def test_every_provider_answer_maps_to_its_reason(checking: Checking) -> None:
    checking.keys(openai="sk-bad-openai-LEAK0004dddd", dalle="sk-limited-LEAK0005eeee",
                  runware="rw-broken-LEAK0006ffff")  # fmt: skip
    obj = checking.reasons(
        lambda found, cond: (
            found
            == {
                "openai.apiKey": "InvalidKey",
                "image_generation.dalle": "RateLimited",
                "image_generation.runware": "ProviderError",
            }
            and cond.get("status") == "False"
        ),
        what="401, 429, 500",
    )
    assert support.condition(obj, "Connected")["reason"] == "InvalidKey"
    checking.keys(("runware",), openai="sk-forbidden-LEAK0007gggg", dalle="sk-hang-LEAK0008hhhh")
    checking.reasons(
        lambda found, cond: (
            found
            == {
                "openai.apiKey": "Forbidden",
                "image_generation.dalle": "Timeout",
                "image_generation.runware": "MissingKey",
            }
        ),
        what="403, a hang past the timeout, a missing key",
    )
    checking.keys()
    checking.declare({**connections_conftest.local_endpoints(checking.fake),
                      "runware": simulator.refused_endpoint()})  # fmt: skip
    checking.reasons(
        lambda found, cond: (
            found["image_generation.runware"] == "Unreachable"
            and found["openai.apiKey"] == "Verified"
        ),
        what="connection refused",
    )
    checking.declare(connections_conftest.local_endpoints(checking.fake))
    checking.reasons(_all("Verified"), what="all verified again")


def test_a_rotation_from_a_bad_to_a_good_key_flips_connected_without_a_restart(
    checking: Checking,
) -> None:
    checking.reasons(_all("Verified"))
    pid = checking.op.proc.pid  # type: ignore[union-attr]
    checking.keys(openai="sk-bad-rotation-LEAK0009iiii")
    checking.reasons(
        lambda found, cond: found["openai.apiKey"] == "InvalidKey" and cond["status"] == "False"
    )
    started = time.monotonic()
    checking.keys()
    checking.reasons(lambda found, cond: _all("Verified")(found, cond) and cond["status"] == "True")
    assert time.monotonic() - started < 10
    assert checking.op.proc.pid == pid  # type: ignore[union-attr]
    events = json.loads(
        checking.kube.kubectl(
            "get", "events", "-n", "default", "--field-selector",
            "involvedObject.name=default,involvedObject.kind=GlobalIntegrationSettings",
            "-o", "json",
        ).stdout
    )["items"]  # fmt: skip
    said = [(e["type"], e["reason"], e["message"]) for e in events]
    assert any(t == "Warning" and r == "InvalidKey" and "openai.apiKey" in m for t, r, m in said)
    assert any(t == "Normal" and r == "Verified" and "openai.apiKey" in m for t, r, m in said)


def test_a_rotated_key_is_not_reported_good_before_its_own_check(checking: Checking) -> None:
    checking.reasons(lambda found, cond: _all("Verified")(found, cond) and cond["status"] == "True")
    # The new key's check hangs past the 2 s timeout: meanwhile the old key's Verified must
    # not stand for it.
    checking.keys(openai="sk-hang-rotation-LEAK0011kkkk")
    checking.reasons(
        lambda found, cond: (
            found["openai.apiKey"] == "Checking"
            and (cond["status"], cond["reason"]) == ("Unknown", "Checking")
        ),
        timeout=5,
        what="Checking while the rotated key's check runs",
    )
    checking.reasons(lambda found, cond: found["openai.apiKey"] == "Timeout", timeout=10)
    checking.keys()
    checking.reasons(_all("Verified"))


def test_the_annotation_rechecks_within_a_second(checking: Checking) -> None:
    checking.reasons(_all("Verified"))
    before = len(checking.fake.received)
    started = time.monotonic()
    checking.kube.kubectl(
        "annotate", "gis", "default", f"{ANNOTATION}={time.time_ns()}", "--overwrite"
    )
    support.until(lambda: len(checking.fake.received) >= before + 3, "three checks", 5)
    elapsed = time.monotonic() - started
    print(f"annotation to three checks answered: {elapsed * 1000:.0f} ms (kubectl included)")
    assert elapsed < 1.0, f"the annotation took {elapsed:.2f}s to re-check"


def test_accounts_show_whether_the_service_they_use_is_connected(checking: Checking) -> None:
    kube = checking.kube
    try:
        _accounts_show_their_service(checking)
    finally:
        kube.kubectl("delete", "accounts", "conn-dalle", "conn-runware", "--ignore-not-found")
        checking.keys()


def _accounts_show_their_service(checking: Checking) -> None:
    kube = checking.kube
    for name in ("conn-dalle", "conn-runware"):
        support.apply_text(kube, support.account_manifest(name, name))
    support.wait_json(kube, ("namespace", "conn-runware"), lambda _: True, 30)
    support.apply_text(
        kube, support.override_manifest("conn-runware", "image-generation", {"service": "runware"})
    )
    checking.keys(runware="rw-bad-runware-LEAK0010jjjj")

    def shows(name: str, expected: dict[str, bool]) -> None:
        support.wait_json(
            kube, ("account", name), lambda o: o["status"].get("connected") == expected, 30
        )

    shows("conn-dalle", {"openai": True, "image_generation": True})
    shows("conn-runware", {"openai": True, "image_generation": False})
    support.wait_json(
        kube,
        ("integrationsettings", "image-generation", "-n", "conn-runware"),
        lambda o: o["status"].get("connected") is False,
        30,
    )
    table = kube.kubectl("get", "accounts", "conn-dalle", "conn-runware").stdout.splitlines()
    header = table[0].split()
    assert "IMAGE-GENERATION-CONNECTED" in header and "OPENAI-CONNECTED" in header
    column = header.index("IMAGE-GENERATION-CONNECTED")
    assert [row.split()[column] for row in table[1:]] == ["true", "false"]
    checking.keys()  # Runware's key fixed: the account that uses it is connected again
    shows("conn-runware", {"openai": True, "image_generation": True})
    rows = kube.kubectl("get", "is", "-n", "conn-runware").stdout.splitlines()
    assert rows[0].split()[:5] == ["NAME", "ACTIVE", "APPLIED", "CONNECTED", "READY"]
    assert rows[1].split()[3] == "true"
    # Connection state never reaches the ConfigMap.
    cm = support.get_json(kube, "configmap", "integration-settings", "-n", "conn-runware")
    assert "connect" not in json.dumps(cm["data"]).lower()


def test_metrics_count_outcomes_and_latency(checking: Checking) -> None:
    text = checking.op.metrics()
    assert (
        'settings_controller_connection_checks_total{credential="apiKey",integration="openai",reason="Verified"}'
        in text
    )
    assert (
        'settings_controller_connection_checks_total{credential="apiKey",integration="openai",reason="InvalidKey"}'
        in text
    )
    assert "settings_controller_connection_check_seconds_bucket" in text
    assert (
        'settings_controller_connected{credential="runware",integration="image_generation"} 1.0'
        in text
    )


def test_the_egress_guard_refuses_and_reports_the_public_endpoints(checking: Checking) -> None:
    # examples/global.yaml names no endpoint: the operator tries the public ones, the guard
    # in its process refuses them (nothing leaves the machine) and writes them down.
    checking.kube.kubectl("apply", "-f", str(support.REPO / "examples" / "global.yaml"))
    try:
        checking.reasons(_all("Unreachable"), what="public endpoints refused by the guard")
        attempts = "\n".join(checking.op.egress())
        assert "api.openai.com" in attempts and "api.runware.ai" in attempts
    finally:
        checking.declare(connections_conftest.local_endpoints(checking.fake))
        checking.reasons(_all("Verified"))
        checking.op.egress_path.unlink()  # expected attempts: stop() fails on any other


def test_no_key_fragment_in_statuses_events_or_logs(checking: Checking) -> None:
    kube = checking.kube
    parts = {
        "globals": kube.kubectl("get", "gis", "-o", "json").stdout,
        "accounts": kube.kubectl("get", "accounts", "-o", "json").stdout,
        "integrationsettings": kube.kubectl("get", "is", "-A", "-o", "json").stdout,
        "events": kube.kubectl("get", "events", "-A", "-o", "json").stdout,
        "configmaps": kube.kubectl("get", "configmaps", "-A", "-o", "json").stdout,
        "log": checking.op.log_text(),
    }
    assert "InvalidKey" in parts["events"] and "InvalidKey" in parts["log"]
    leaks = [
        (where, fragment)
        for key in checking.keys_used
        for fragment in (key, simulator.quoted(key), key[:6] + "***", key[-8:])
        for where, text in parts.items()
        if fragment in text
    ]
    assert not leaks, leaks
    assert yaml.safe_load(parts["globals"])  # parsed: the scan read real output
