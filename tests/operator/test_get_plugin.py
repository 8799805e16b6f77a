"""``kubectl integrations get``: the flags a krew-style plugin is called with (``--context``,
``--kubeconfig``, ``-n``), against a stand-in API server that answers the three reads."""

from __future__ import annotations

import http.server
import json
import pathlib
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
import yaml

PLUGIN = pathlib.Path(sys.executable).parent / "kubectl-integrations"
GROUP = "/apis/integrations.igny8.com/v1alpha1"

DOCUMENT = {"id": "openai", "enabled": True, "model": "gpt-4o", "using_global": False}
OBJECTS: dict[str, Any] = {
    f"{GROUP}/accounts/acct-123": {
        "apiVersion": "integrations.igny8.com/v1alpha1",
        "kind": "Account",
        "metadata": {"name": "acct-123"},
        "spec": {"plan": "pro", "namespace": "tenant-a"},
    },
    f"{GROUP}/namespaces/tenant-a/integrationsettings": {
        "apiVersion": "integrations.igny8.com/v1alpha1",
        "kind": "IntegrationSettingsList",
        "metadata": {},
        "items": [],
    },
    "/api/v1/namespaces/tenant-a/configmaps/integration-settings": {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "integration-settings", "namespace": "tenant-a"},
        "data": {"openai.json": json.dumps({**DOCUMENT, "overridden": ["model"]})},
    },
}


class _Api(http.server.BaseHTTPRequestHandler):
    tokens: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.tokens.append(self.headers.get("Authorization", ""))
        body = OBJECTS.get(self.path.split("?")[0])
        data = json.dumps(body or {"kind": "Status", "code": 404, "reason": "NotFound"}).encode()
        self.send_response(200 if body else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def kubeconfig(tmp_path: pathlib.Path) -> Iterator[pathlib.Path]:
    """Two contexts: the current one points at a port nobody listens on, ``good`` at the API."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Api)
    _Api.tokens = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead = closed.getsockname()[1]
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "api",
                        "cluster": {"server": f"http://127.0.0.1:{server.server_address[1]}"},
                    },
                    {"name": "dead", "cluster": {"server": f"http://127.0.0.1:{dead}"}},
                ],
                "users": [{"name": "u", "user": {"token": "token-of-good"}}],
                "contexts": [
                    {"name": "good", "context": {"cluster": "api", "user": "u"}},
                    {"name": "current", "context": {"cluster": "dead", "user": "u"}},
                ],
                "current-context": "current",
            }
        )
    )
    yield path
    server.shutdown()
    server.server_close()


def _plugin(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(PLUGIN), "get", *map(str, args)], capture_output=True, text=True, timeout=60
    )


def test_context_picks_the_cluster(kubeconfig: pathlib.Path) -> None:
    done = _plugin("acct-123", "openai", "--kubeconfig", kubeconfig, "--context", "good")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("acct-123 (pro) · openai · enabled · Custom settings")
    assert set(_Api.tokens) == {"Bearer token-of-good"}
    # Without --context, the current one: nobody answers there.
    dead = _plugin("acct-123", "--kubeconfig", kubeconfig)
    assert dead.returncode == 1 and "cannot reach the API server" in dead.stderr


def test_an_unknown_context_is_one_clear_line(kubeconfig: pathlib.Path) -> None:
    done = _plugin("acct-123", "--kubeconfig", kubeconfig, "--context", "nope")
    assert done.returncode == 1
    assert done.stderr == (
        "settings-controller: error: no usable kubeconfig: Context 'nope' not found\n"
    )


def test_namespace_checks_the_accounts_namespace(kubeconfig: pathlib.Path) -> None:
    """An Account is cluster-scoped: -n is a check of the namespace it renders into."""
    base = ("acct-123", "--kubeconfig", kubeconfig, "--context", "good")
    right = _plugin(*base, "-n", "tenant-a", "-o", "json")
    assert right.returncode == 0, right.stderr
    assert json.loads(right.stdout)["openai"]["model"] == "gpt-4o"
    assert _plugin(*base, "--namespace", "tenant-a").returncode == 0
    wrong = _plugin(*base, "-n", "acct-123")
    assert wrong.returncode == 1 and wrong.stdout == ""
    assert "renders into namespace 'tenant-a', not 'acct-123'" in wrong.stderr


def test_cluster_flags_with_declarations_are_usage_errors(tmp_path: pathlib.Path) -> None:
    for flag in (("--context", "x"), ("-n", "x"), ("--kubeconfig", "k")):
        done = _plugin("acct-123", "-d", tmp_path, *flag)
        assert done.returncode == 2 and "not with -d DIR" in done.stderr, done.stderr
