"""The force re-sync annotation, with deploy/README's commands: a label removed from an
account's ConfigMap by hand (which the operator's view does not record, so neither the
watch nor a periodic resync puts it back) is restored at once by the annotation on the
Account, on the IntegrationSettings, and, for every account, on the global."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator

import pytest

from tests.harness.fixtures import Kube, kubectl_env
from tests.operator import support

pytestmark = pytest.mark.cluster

LABEL = f"{support.GROUP}/account"
README = support.REPO / "deploy" / "README.md"


def _readme_commands() -> dict[str, str]:
    """deploy/README's annotate commands by kind (account, integrationsettings, gis)."""
    text = README.read_text()
    section = text[text.index("* **Force a re-sync**") :]
    block = section[section.index("```sh\n") + 6 : section.index("```\n", section.index("```sh"))]
    commands = {}
    for line in filter(str.strip, block.splitlines()):
        m = re.search(r"annotate (\w+) ", line)
        assert m, line
        commands[m.group(1)] = line.strip()
    assert set(commands) == {"account", "integrationsettings", "gis"}
    return commands


def _run(kube: Kube, command: str, account: str) -> None:
    """The README's command, for ``account`` (the README's acct-123), with the harness's
    kubectl and admin kubeconfig."""
    env = {**kubectl_env(), "KUBECONFIG": str(kube.kubeconfig)}
    env["PATH"] = f"{os.path.dirname(kube.kubectl_path)}:{env['PATH']}"
    done = subprocess.run(
        ["bash", "-c", command.replace("acct-123", account)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def _unlabel(kube: Kube, namespace: str) -> None:
    kube.kubectl("label", "configmap", "integration-settings", "-n", namespace, f"{LABEL}-")
    cm = support.get_json(kube, "configmap", "integration-settings", "-n", namespace)
    assert LABEL not in cm["metadata"]["labels"]


def _relabelled(kube: Kube, namespace: str, account: str) -> None:
    support.wait_json(
        kube,
        ("configmap", "integration-settings", "-n", namespace),
        lambda cm: cm["metadata"]["labels"].get(LABEL) == account,
        timeout=20,
        what=f"the label {LABEL} back on {namespace}'s ConfigMap",
    )


def _account(kube: Kube, namespace: str) -> None:
    support.apply_text(kube, support.account_manifest(namespace, namespace))
    support.apply_text(kube, support.override_manifest(namespace, "openai", {"temperature": 0.5}))
    support.wait_json(
        kube,
        ("configmap", "integration-settings", "-n", namespace),
        lambda cm: support.settings(cm, "openai")["temperature"] == 0.5,
        what="the first render",
    )


@pytest.fixture
def second_ns(installed: Kube) -> Iterator[str]:
    name = f"t-resync-second-{os.getpid()}"
    installed.kubectl("create", "namespace", name)
    yield name
    installed.kubectl("delete", "account", name, "--ignore-not-found", check=False)
    installed.kubectl("delete", "namespace", name, "--wait=false", check=False)


def test_the_annotation_restores_what_the_view_does_not_record(
    installed: Kube, operator: support.Operator, tenant_ns: str, second_ns: str
) -> None:
    kube = installed
    commands = _readme_commands()
    _account(kube, tenant_ns)
    _account(kube, second_ns)

    _unlabel(kube, tenant_ns)
    _run(kube, commands["account"], tenant_ns)
    _relabelled(kube, tenant_ns, tenant_ns)

    _unlabel(kube, tenant_ns)
    _run(kube, commands["integrationsettings"], tenant_ns)
    _relabelled(kube, tenant_ns, tenant_ns)

    for namespace in (tenant_ns, second_ns):
        _unlabel(kube, namespace)
    _run(kube, commands["gis"], tenant_ns)
    for namespace in (tenant_ns, second_ns):
        _relabelled(kube, namespace, namespace)
    assert "re-sync of every account requested" in operator.log_text()
