"""The README's cluster-mode gateway walk-through, every ``$`` line as written, in one shell,
against the test control plane.

``kubectl`` is the harness's (first on PATH, ``KUBECONFIG`` its admin kubeconfig); deploy/
is installed, the examples' global points at the provider simulator and acct-123 exists
with its namespace, as the README assumes. The one change to the lines: port 8080 becomes
a free port (the API server lives on this machine's loopback, so the shell cannot take a
network namespace of its own, as the local-mode walk-through does). Every output line the
README shows must be printed by its command.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import subprocess
import sys

import pytest

from tests.connections import conftest as connections_conftest
from tests.gateway import test_cluster
from tests.harness import console
from tests.harness.fixtures import Kube, kubectl_env
from tests.operator import fixtures as operator_fixtures
from tests.operator import support
from tests.providers import simulator

pytestmark = pytest.mark.cluster

SECTION = "**Cluster mode** (no `--declarations`)"


def test_readme_cluster_gateway_walkthrough(kube: Kube, tmp_path: pathlib.Path) -> None:
    steps = console.console_block(support.REPO / "README.md", SECTION)
    assert any(c.startswith("settings-controller gateway --kubeconfig") for c, _ in steps)
    operator_fixtures.install(kube)
    port = str(support.free_port())
    with simulator.Simulator() as sim:
        test_cluster._apply_global(
            kube, connections_conftest.global_body(connections_conftest.local_endpoints(sim))
        )
        kube.kubectl("create", "namespace", "acct-123", check=False)
        kube.kubectl("apply", "-f", str(support.REPO / "examples" / "accounts" / "acct-123.yaml"))
        support.until(
            lambda: (
                kube.kubectl("get", "sa", "default", "-n", "acct-123", check=False).returncode == 0
            ),
            "the default ServiceAccount of acct-123",
        )
        (tmp_path / "deploy").symlink_to(support.REPO / "deploy")
        script = ["set +e", f"cd {tmp_path}"]
        script += console.script(command.replace("8080", port) for command, _ in steps)
        env = {
            **kubectl_env(),
            **sim.env(),
            "KUBECONFIG": str(kube.kubeconfig),
            "PATH": os.pathsep.join(
                [
                    str(kube.kubectl_path.parent),
                    str(pathlib.Path(sys.executable).parent),
                    *os.environ["PATH"].split(os.pathsep),
                ]
            ),
        }
        env.pop("OPENAI_API_KEY", None)
        shell = subprocess.Popen(
            ["bash", "-c", "\n".join(script)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,  # the gateway it starts is in its group: stopped with it
        )
        try:
            out, err = shell.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(shell.pid, signal.SIGKILL)
            out, err = shell.communicate()
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(shell.pid, signal.SIGKILL)
            test_cluster._apply_global(kube, connections_conftest.global_body({}))
            kube.kubectl("apply", "-f", str(support.REPO / "examples" / "global.yaml"))
            kube.kubectl("delete", "account", "acct-123", "--ignore-not-found")
    printed = console.printed(out)
    assert printed.finished(len(steps)), err[-3000:]
    for i, (command, expected) in enumerate(steps):
        for line in expected:
            assert line in printed.outputs[i], (command, printed.outputs[i], err[-3000:])
    assert "Traceback" not in err, err[-3000:]


def test_deploy_readme_gateway_rbac(kube: Kube) -> None:
    """deploy/README's gateway block: each command exactly, the outputs as shown."""
    operator_fixtures.install(kube)
    steps = console.console_block(
        support.REPO / "deploy" / "README.md",
        "## The gateway: keys that stay in the platform namespace",
    )
    assert steps[0][0] == "kubectl apply -k deploy/gateway/"
    env = {
        **kubectl_env(),
        "KUBECONFIG": str(kube.kubeconfig),
        "PATH": f"{kube.kubectl_path.parent}{os.pathsep}{os.environ['PATH']}",
    }
    for command, shown in steps:
        done = subprocess.run(
            ["bash", "-c", command],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=support.REPO,
        )
        assert done.returncode == (1 if shown == ["no"] else 0), (command, done.stderr)
        if shown:
            assert done.stdout.splitlines() == shown, (command, done.stdout, done.stderr)
