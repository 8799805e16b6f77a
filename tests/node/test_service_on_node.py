"""Services on the node: kube-proxy (iptables mode, built from the kubelet's
Kubernetes module) carries a pod's connection to a ClusterIP to a ready
endpoint, in its namespace and from another one, and refuses one to a Service
without ready endpoints at once.

The harness's cluster DNS (dnsmasq, tests/harness/node.py) answers
kubernetes.default.svc only: Service names are NXDOMAIN there, which
test_service_names_do_not_resolve pins down. The CNI (bridge plugin) enforces no
NetworkPolicy, which test_network_policy_is_not_enforced pins down.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.harness import image as image_
from tests.harness import node as node_
from tests.harness.fixtures import until
from tests.node.conftest import POLL, Node

pytestmark = pytest.mark.cluster

PORT = 8080
# Answers every GET with its pod name (HOSTNAME), so a test sees which endpoint served it.
SERVER = (
    "import http.server,os\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        body = os.environ['HOSTNAME'].encode()\n"
    "        self.send_response(200)\n"
    "        self.send_header('Content-Length', str(len(body)))\n"
    "        self.end_headers()\n"
    "        self.wfile.write(body)\n"
    "    def log_message(self, *a): pass\n"
    f"http.server.ThreadingHTTPServer(('', {PORT}), H).serve_forever()\n"
)
# Run in a client pod: GET url n times, one JSON line of [ok, body-or-error, seconds] each.
CLIENT = (
    "import json,sys,time,urllib.request\n"
    "url, n, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])\n"
    "for _ in range(n):\n"
    "    t = time.monotonic()\n"
    "    try:\n"
    "        with urllib.request.urlopen(url, timeout=timeout) as r:\n"
    "            out = [True, r.read().decode()]\n"
    "    except Exception as e:\n"
    "        out = [False, repr(getattr(e, 'reason', e))]\n"
    "    print(json.dumps(out + [time.monotonic() - t]), flush=True)\n"
)
RESOLVE = (
    "import socket,sys,time\n"
    "t = time.monotonic()\n"
    "try:\n"
    "    print(socket.gethostbyname(sys.argv[1]))\n"
    "except OSError as e:\n"
    "    print('error', type(e).__name__, e)\n"
    "print(time.monotonic() - t)\n"
)


@dataclass
class Services:
    node: Node
    namespace: str
    other: str
    echo_ip: str
    unready_ip: str

    def get(self, client_ns: str, url: str, n: int = 1, timeout: float = 5.0) -> list[Any]:
        proc = self.node.kube.kubectl(
            "exec",
            "-n",
            client_ns,
            "client",
            "--",
            "python3",
            "-c",
            CLIENT,
            url,
            str(n),
            str(timeout),
            timeout=30 + n * timeout,
        )
        return [json.loads(line) for line in proc.stdout.splitlines()]


def _pod(
    namespace: str, name: str, app: str, command: list[str], probe_port: int | None
) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "main",
        "image": image_.IMAGE,
        "imagePullPolicy": "Never",
        "command": command,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
        },
    }
    if probe_port is not None:
        container["readinessProbe"] = {"tcpSocket": {"port": probe_port}, "periodSeconds": 1}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": app}},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "enableServiceLinks": False,
            "containers": [container],
        },
    }


def _service(namespace: str, app: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": app, "namespace": namespace},
        "spec": {
            "type": "ClusterIP",
            "selector": {"app": app},
            "ports": [{"name": "http", "port": 80, "targetPort": PORT}],
        },
    }


def _namespace(name: str) -> dict[str, Any]:
    labels = {"settings-controller.test/temporary": "true"}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def _ready(node: Node, namespace: str, *pods: str) -> bool:
    for pod in pods:
        obj = node.get("pod", "-n", namespace, pod)
        conds = {c["type"]: c["status"] for c in obj["status"].get("conditions", [])}
        if conds.get("Ready") != "True":
            return False
    return True


def _ready_endpoints(services: Services) -> int:
    slices = services.node.get(
        "endpointslices", "-n", services.namespace, "-l", "kubernetes.io/service-name=echo"
    )
    return sum(
        1
        for item in slices["items"]
        for endpoint in item.get("endpoints") or []
        if endpoint.get("conditions", {}).get("ready")
    )


@pytest.fixture(scope="module")
def services(node: Node) -> Iterator[Services]:
    node_.import_image(node.paths, image_.build())
    kube = node.kube
    suffix = secrets.token_hex(3)
    namespace, other = f"t-svc-{suffix}", f"t-svc-other-{suffix}"
    sleeper = ["python3", "-c", "import time; time.sleep(86400)"]
    server = ["python3", "-c", SERVER]
    items = [
        _namespace(namespace),
        _namespace(other),
        _pod(namespace, "echo-a", "echo", server, PORT),
        _pod(namespace, "echo-b", "echo", server, PORT),
        # Running, serving even, but never Ready (its probe asks another port).
        _pod(namespace, "unready", "unready", server, PORT + 1),
        _service(namespace, "echo"),
        _service(namespace, "unready"),
        _pod(namespace, "client", "client", sleeper, None),
        _pod(other, "client", "client", sleeper, None),
    ]
    manifest = {"apiVersion": "v1", "kind": "List", "items": items}
    kube.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    try:
        until(
            lambda: (
                _ready(node, namespace, "echo-a", "echo-b", "client")
                and _ready(node, other, "client")
            ),
            "echo-a, echo-b and the clients Ready",
            180,
            1,
        )

        def cluster_ip(name: str) -> str:
            return str(node.get("service", "-n", namespace, name)["spec"]["clusterIP"])

        found = Services(node, namespace, other, cluster_ip("echo"), cluster_ip("unready"))
        # Ready pods reach kube-proxy's rules through the EndpointSlice
        # controller and a sync (at most one a second): a bounded wait.
        until(
            lambda: _ready_endpoints(found) == 2,
            "both endpoints in the Service's EndpointSlice",
            30,
            POLL,
        )
        until(
            lambda: found.get(namespace, f"http://{found.echo_ip}/", timeout=2)[0][0],
            "the ClusterIP answering",
            10,
            0.2,
        )
        yield found
    finally:
        # Waited for while the kubelet runs (a namespace whose pods are on a
        # stopped node stays Terminating).
        kube.kubectl(
            "delete",
            "namespace",
            namespace,
            other,
            "--ignore-not-found",
            "--wait=true",
            "--timeout=120s",
            check=False,
            timeout=150,
        )


def test_cluster_ip_reaches_every_ready_endpoint(services: Services) -> None:
    results = services.get(services.namespace, f"http://{services.echo_ip}/", n=30)
    assert all(ok for ok, _, _ in results), results
    assert {body for _, body, _ in results} == {"echo-a", "echo-b"}, results
    assert max(s for _, _, s in results) < 1.0, results


def test_another_namespace_reaches_it(services: Services) -> None:
    results = services.get(services.other, f"http://{services.echo_ip}/", n=10)
    assert all(ok and body in ("echo-a", "echo-b") for ok, body, _ in results), results


def test_no_ready_endpoint_is_refused_at_once(services: Services) -> None:
    node = services.node
    # The pod behind it runs and listens on PORT, but is not Ready.
    pod = node.get("pod", "-n", services.namespace, "unready")
    assert pod["status"]["phase"] == "Running"
    assert not _ready(node, services.namespace, "unready")
    results = services.get(services.namespace, f"http://{services.unready_ip}/", n=3, timeout=10)
    for ok, error, seconds in results:
        assert not ok
        assert "Connection refused" in error, results
        assert seconds < 1.0, results
    # An address in the service range that no Service holds: no answer, and
    # the client's own bound ends the wait (nothing routes it off the machine).
    unused = "10.96.255.254"
    t = time.monotonic()
    ((ok, error, seconds),) = services.get(services.namespace, f"http://{unused}/", timeout=2)
    assert not ok and seconds < 3.5, (error, seconds)
    assert time.monotonic() - t < 30


def test_endpoint_removed_is_no_longer_used(services: Services) -> None:
    node = services.node
    node.kube.kubectl("delete", "pod", "-n", services.namespace, "echo-b", "--wait=false")
    started = time.monotonic()

    def only_echo_a() -> bool:
        results = services.get(services.namespace, f"http://{services.echo_ip}/", n=30, timeout=2)
        return all(ok and body == "echo-a" for ok, body, _ in results)

    until(only_echo_a, "echo-b gone from the Service", 20, 0.2)
    assert time.monotonic() - started < 20


def test_kubernetes_service_through_kube_proxy(services: Services) -> None:
    """10.96.0.1 is no address of the host any more: kube-proxy DNATs it to the
    forwarder on the node address, and the API server answers through it."""
    bridge = subprocess.run(
        ["ip", "-o", "addr", "show", "dev", node_.BRIDGE], capture_output=True, text=True
    )
    assert f"inet {node_.KUBERNETES_SERVICE_IP}/" not in bridge.stdout, bridge.stdout
    script = (
        "import ssl,urllib.request,urllib.error\n"
        "ctx = ssl.create_default_context(cafile="
        "'/var/run/secrets/kubernetes.io/serviceaccount/ca.crt')\n"
        "try:\n"
        f"    urllib.request.urlopen('https://{node_.KUBERNETES_SERVICE_IP}/version', context=ctx)\n"
        "    print(200)\n"
        "except urllib.error.HTTPError as e:\n"
        "    print(e.code)\n"
    )
    proc = services.node.kube.kubectl(
        "exec", "-n", services.namespace, "client", "--", "python3", "-c", script
    )
    # The certificate names 10.96.0.1 and the API server answered (anonymous
    # requests may be refused: a status code is the proof).
    assert proc.stdout.strip() in ("200", "401", "403"), proc.stdout


def test_service_names_do_not_resolve(services: Services) -> None:
    """The harness's DNS knows kubernetes.default.svc only (tests/harness/README.md)."""
    kube = services.node.kube

    def resolve(name: str) -> list[str]:
        proc = kube.kubectl(
            "exec", "-n", services.namespace, "client", "--", "python3", "-c", RESOLVE, name
        )
        return proc.stdout.splitlines()

    answer, seconds = resolve("kubernetes.default.svc")
    assert answer == node_.KUBERNETES_SERVICE_IP
    assert float(seconds) < 1.0
    answer, seconds = resolve(f"echo.{services.namespace}.svc")
    assert answer.startswith("error gaierror"), answer
    assert float(seconds) < 1.0


def test_network_policy_is_not_enforced(services: Services) -> None:
    """The bridge CNI ignores NetworkPolicy: a deny-all policy changes nothing.
    If this fails, the node enforces policies now: document it and turn this
    around."""
    policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "deny-all", "namespace": services.namespace},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
    }
    kube = services.node.kube
    kube.kubectl("apply", "-f", "-", input=json.dumps(policy))
    try:
        time.sleep(2)
        results = services.get(services.other, f"http://{services.echo_ip}/", n=5)
        assert all(ok for ok, _, _ in results), results
    finally:
        kube.kubectl("delete", "networkpolicy", "-n", services.namespace, "deny-all", check=False)
