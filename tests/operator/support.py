"""Helpers for the operator's end-to-end tests: bounded polling, the operator subprocess."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from tests.harness.fixtures import Kube
from tests.harness.fixtures import until as until  # the one polling helper, re-exported

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent.parent
MANIFESTS = HERE / "manifests"
CLI = pathlib.Path(sys.executable).parent / "settings-controller"
OPERATOR_NAMESPACE = "settings-controller-system"
GROUP = "integrations.igny8.com"

# A recognisable fake key. The tests search for it everywhere it must never be.
FAKE_KEY = "sk-FAKEKEY-0xC0FFEE-do-not-leak-7f3a9b"

Json = dict[str, Any]


def get_json(kube: Kube, *args: str, kubeconfig: Any = None) -> Json:
    out = kube.kubectl("get", *args, "-o", "json", kubeconfig=kubeconfig).stdout
    result: Json = json.loads(out)
    return result


def wait_json(
    kube: Kube,
    args: tuple[str, ...],
    predicate: Callable[[Json], bool],
    timeout: float = 30.0,
    what: str = "",
) -> Json:
    """Poll ``kubectl get ARGS -o json`` until ``predicate`` holds; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Json | str = "never fetched"
    while True:
        proc = kube.kubectl("get", *args, "-o", "json", check=False)
        if proc.returncode == 0:
            last = json.loads(proc.stdout)
            try:
                if predicate(last):
                    return last
            except (KeyError, TypeError, IndexError, ValueError):
                pass
        else:
            last = proc.stderr
        if time.monotonic() > deadline:
            shown = json.dumps(last, indent=1)[:3000] if isinstance(last, dict) else last
            raise AssertionError(f"timed out after {timeout}s waiting for {what or args}:\n{shown}")
        time.sleep(0.25)


def wait_gone(kube: Kube, args: tuple[str, ...], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        proc = kube.kubectl("get", *args, "-o", "name", check=False)
        if proc.returncode != 0 and "NotFound" in proc.stderr:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{args} still exists after {timeout}s")
        time.sleep(0.25)


def settings(configmap: Json, type_name: str) -> Json:
    result: Json = json.loads(configmap["data"][f"{type_name}.json"])
    return result


def condition(obj: Json, type_: str = "Ready") -> Json:
    for item in obj.get("status", {}).get("conditions", []):
        if item["type"] == type_:
            return dict(item)
    return {}


def is_current(obj: Json, type_: str = "Ready") -> bool:
    """The condition exists and speaks of the object's current generation."""
    c = condition(obj, type_)
    return bool(c) and c.get("observedGeneration") == obj["metadata"].get("generation")


def apply_text(kube: Kube, text: str, kubeconfig: Any = None, check: bool = True) -> Any:
    return kube.kubectl("apply", "-f", "-", input=text, kubeconfig=kubeconfig, check=check)


def account_manifest(name: str, namespace: str, plan: str = "pro") -> str:
    return json.dumps(
        {
            "apiVersion": f"{GROUP}/v1alpha1",
            "kind": "Account",
            "metadata": {"name": name},
            "spec": {"plan": plan, "namespace": namespace},
        }
    )


def override_manifest(namespace: str, name: str, overrides: Json, active: bool = True) -> str:
    return json.dumps(
        {
            "apiVersion": f"{GROUP}/v1alpha1",
            "kind": "IntegrationSettings",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"isActive": active, "overrides": overrides},
        }
    )


SCRAPER = "metrics-scraper"  # a ServiceAccount bound to settings-controller-metrics-reader
_tokens: dict[tuple[str, str], str] = {}


def service_account_token(kube: Kube, name: str, reader: bool) -> str:
    """A token (TokenRequest) of ServiceAccount ``name`` in the operator's namespace,
    bound to the ClusterRole settings-controller-metrics-reader when ``reader``."""
    key = (kube.server, name)
    if key in _tokens:
        return _tokens[key]
    documents: list[Json] = [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": name, "namespace": OPERATOR_NAMESPACE},
        }
    ]
    if reader:
        documents.append(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": f"{name}-metrics-reader"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "settings-controller-metrics-reader",
                },
                "subjects": [
                    {"kind": "ServiceAccount", "name": name, "namespace": OPERATOR_NAMESPACE}
                ],
            }
        )
    kube.kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps({"kind": "List", "apiVersion": "v1", "items": documents}),
    )
    token = kube.kubectl(
        "create", "token", name, "-n", OPERATOR_NAMESPACE, "--duration=2h"
    ).stdout.strip()
    _tokens[key] = token
    return token


def insecure() -> ssl.SSLContext:
    """TLS without verification: the operator's metrics certificate is self-signed."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def fetch(
    url: str, token: str | None = None, headers: dict[str, str] | None = None, timeout: float = 5
) -> tuple[int, str]:
    """GET ``url`` (https: certificate not verified) with a bearer token: (status, body)."""
    request = urllib.request.Request(url, headers=dict(headers or {}))
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=insecure()) as r:
            return int(r.status), str(r.read().decode())
    except urllib.error.HTTPError as e:
        return int(e.code), e.read().decode(errors="replace")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


EGRESS_GUARD = REPO / "tests" / "egress"


def guarded_env(egress_log: pathlib.Path) -> dict[str, str]:
    """The environment of an operator under test: no $KUBECONFIG, and the egress guard
    (tests/egress/sitecustomize.py) refusing and recording any non-loopback connection."""
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(EGRESS_GUARD), env.get("PYTHONPATH")]))
    env["SETTINGS_CONTROLLER_EGRESS_LOG"] = str(egress_log)
    return env


class Operator:
    """``settings-controller operator`` as a subprocess, as the operator's ServiceAccount.

    Key checks are off (``--verify-interval=0``: examples/global.yaml names the public
    provider endpoints) unless ``args`` turns them on; tests/connections points every
    endpoint at the provider simulator first (tests/providers/simulator.py; ``env``
    carries its CA as SSL_CERT_FILE). Either way the egress guard runs in the process,
    and ``stop`` fails when it refused anything.
    """

    def __init__(
        self,
        kube: Kube,
        log_path: pathlib.Path,
        args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.kube = kube
        self.env = env or {}  # added to its environment (the provider simulator's CA)
        self.log_path = log_path
        self.egress_path = log_path.with_suffix(".egress")
        self.args = args or ("--verify-interval=0",)
        self.proc: subprocess.Popen[bytes] | None = None
        self.health_port = free_port()
        self.metrics_port = free_port()
        self.exit_codes: list[int] = []

    def start(self) -> None:
        assert self.proc is None
        log = open(self.log_path, "ab")  # noqa: SIM115  (kept open for the process' life)
        self.proc = subprocess.Popen(
            [
                str(CLI),
                "operator",
                f"--kubeconfig={self.kube.operator_kubeconfig}",
                f"--namespace={OPERATOR_NAMESPACE}",
                f"--health-probe-bind-address=127.0.0.1:{self.health_port}",
                f"--metrics-bind-address=127.0.0.1:{self.metrics_port}",
                "--resync=60",
                *self.args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**guarded_env(self.egress_path), **self.env},
        )
        log.close()
        deadline = time.monotonic() + 60
        while not self.healthy():
            if self.proc.poll() is not None:
                raise AssertionError(f"operator exited at start:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"operator not healthy after 60s:\n{self.log_tail()}")
            time.sleep(0.25)

    def healthy(self, path: str = "/healthz") -> bool:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.health_port}{path}", timeout=2
            ) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def ready(self) -> bool:
        return self.healthy("/readyz")

    @property
    def metrics_url(self) -> str:
        scheme = "http" if "--metrics-secure=false" in self.args else "https"
        return f"{scheme}://127.0.0.1:{self.metrics_port}/metrics"

    def metrics(self) -> str:
        """/metrics as Prometheus reads it: HTTPS with a metrics-reader token (the
        default), or plain HTTP with ``--metrics-secure=false``."""
        token = None
        if self.metrics_url.startswith("https:"):
            token = service_account_token(self.kube, SCRAPER, reader=True)
        status, body = fetch(self.metrics_url, token)
        assert status == 200, (status, body)
        return body

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, as Kubernetes stops a pod; the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"operator did not stop in {timeout}s on SIGTERM") from None
        self.proc = None
        self.exit_codes.append(code)
        attempts = self.egress()
        assert not attempts, f"the operator tried to reach beyond loopback: {attempts}"
        return code

    def egress(self) -> list[str]:
        """The non-loopback connections the egress guard refused so far."""
        if not self.egress_path.exists():
            return []
        return self.egress_path.read_text().splitlines()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])
