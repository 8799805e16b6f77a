"""Fixtures for the operator's end-to-end tests on the local control plane, shared by
every package that runs the operator (tests/operator, tests/reliability, tests/breakit2,
tests/gateway): a pytest plugin loaded by tests/conftest.py, as tests/harness/fixtures.py
is. ``install`` and ``apply_keys`` are public for tests that install deploy/ on a control
plane of their own (tests/reliability's private one, tests/gateway).

``installed`` runs ``kubectl apply -k deploy/`` (CRDs, RBAC, policies; the
Deployment sits there without nodes to run it), creates the platform key Secret
and applies examples/global.yaml. ``operator`` runs ``settings-controller
operator`` as a subprocess authenticated as the operator's ServiceAccount, so
every test also proves the RBAC in deploy/rbac is enough.
"""

from __future__ import annotations

import base64
import json
import pathlib
from collections.abc import Iterator

import pytest

from tests.harness.fixtures import Kube
from tests.operator import support

KEYS = {"openai": support.FAKE_KEY, "dalle": "sk-dalle-test-0001", "runware": "rw-test-0001"}


def platform_keys(values: dict[str, str]) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "platform-api-keys", "namespace": support.OPERATOR_NAMESPACE},
            "type": "Opaque",
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()},
        }
    )


def apply_keys(kube: Kube, values: dict[str, str]) -> None:
    """Server-side apply: no last-applied annotation copying the keys, and a key left
    out is removed."""
    kube.kubectl(
        "apply", "--server-side", "--force-conflicts", "-f", "-", input=platform_keys(values)
    )


@pytest.fixture(scope="session")
def installed(kube: Kube) -> Kube:
    return install(kube)


def install(kube: Kube) -> Kube:
    """deploy/ as a user applies it, the platform key Secret and the example global."""
    kube.kubectl("apply", "-k", str(support.REPO / "deploy"), "--server-side", "--force-conflicts")
    kube.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd",
        "-l",
        "app.kubernetes.io/name=settings-controller",
    )
    apply_keys(kube, KEYS)
    kube.kubectl("apply", "-f", str(support.REPO / "examples" / "global.yaml"))
    return kube


@pytest.fixture(scope="session")
def operator(
    installed: Kube, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[support.Operator]:
    log = pathlib.Path(tmp_path_factory.mktemp("operator")) / "operator.log"
    op = support.Operator(installed, log)
    op.start()
    yield op
    if op.proc is not None:
        assert op.stop() == 0, op.log_tail()


@pytest.fixture
def tenant_ns(installed: Kube, namespace: str) -> str:
    """A fresh namespace for one test's account (the account is named after it)."""
    return namespace
