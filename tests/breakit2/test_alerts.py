"""Breaks of the shipped alerts (deploy/README.md "Monitoring", "Alerts") on the operator's
real /metrics, with the operator on the local control plane (tests/operator/support.py)."""

from __future__ import annotations

import json
import pathlib
import re
import time

import pytest
import yaml

from tests.harness.fixtures import Kube
from tests.operator import support

pytestmark = pytest.mark.cluster

GLOBAL = support.REPO / "examples" / "global.yaml"


def _gauges(body: str) -> dict[str, float]:
    return {
        m.group(1): float(m.group(2))
        for m in re.finditer(r"^settings_controller_connected\{(.*)\} (\S+)$", body, re.MULTILINE)
    }


def test_a_removed_credential_leaves_no_failing_key_series(
    installed: Kube, tmp_path: pathlib.Path
) -> None:
    """deploy/README.md:491 (Alerts): ``SettingsControllerKeyNotConnected`` (critical) means
    "a platform key failed its checks ...; every account using it is told so"; its rule
    (deploy/prometheus/rules/prometheusrule.yaml) is ``max by (namespace, integration,
    credential) (settings_controller_connected) == 0``. Broke: a credential whose key was
    failing (here: its endpoint refuses connections) and that the admin then removes from
    the global keeps ``settings_controller_connected{credential="runware",
    integration="image_generation"} 0.0`` in every scrape until the operator restarts (the
    global's ``status.connections`` drops it), so the critical alert fires for ever about a
    key nobody uses. The same after the whole global is deleted. Fault:
    controller/cluster/connections.py ``refresh`` forgets a removed target's tables but
    never ``self.meter.connected.remove(integration, slot)`` (nor the per-reason series)."""
    port = support.free_port()  # nothing listens: every check is Unreachable, on loopback
    body = yaml.safe_load(GLOBAL.read_text())
    for block in body["spec"]["integrations"].values():
        for ref in block["credentials"].values():
            ref["endpoint"] = f"https://127.0.0.1:{port}/v1"
    installed.kubectl("apply", "-f", "-", input=json.dumps(body))
    operator = support.Operator(installed, tmp_path / "operator.log", ("--verify-interval=600",))
    operator.start()
    try:
        deadline = time.monotonic() + 90
        while (
            _gauges(operator.metrics()).get('credential="runware",integration="image_generation"')
            != 0.0
        ):
            assert time.monotonic() < deadline, operator.log_tail()
            time.sleep(0.5)
        del body["spec"]["integrations"]["image_generation"]["credentials"]["runware"]
        installed.kubectl("replace", "-f", "-", input=json.dumps(body))

        def listed() -> list[str]:
            status = installed.kubectl(
                "get", "gis", "default", "-o", "jsonpath={.status.connections}"
            ).stdout
            return [c.get("credential", "") for c in json.loads(status or "[]")]

        deadline = time.monotonic() + 60
        while "runware" in listed():
            assert time.monotonic() < deadline, operator.log_tail()
            time.sleep(0.5)
        time.sleep(2)
        stale = {k: v for k, v in _gauges(operator.metrics()).items() if "runware" in k}
        assert stale == {}, stale
    finally:
        operator.stop()
        installed.kubectl("apply", "-f", str(GLOBAL))
