"""The gateway on the real node, as users run it (issue 23's proof).

deploy/gateway/ is applied through tests/node/gateway-overlay (the operator image
tests/harness/image.py built; the provider simulator's CA trusted as deploy/README.md says
for a private CA: a ConfigMap, ``SSL_CERT_FILE``). Workload pods run in account namespaces
whose plan has ``projectKeys: false``, with a projected ServiceAccount token of audience
``integrations.igny8.com``, and call the gateway with the official ``openai`` package
(tests/node/client_image.py) at ``http://<ClusterIP>/v1`` — kube-proxy carries them to a
replica; the harness's DNS does not resolve Service names (tests/node/test_service_on_node.py).
The upstream is the provider simulator on this machine, bound to the node's bridge address
(what pods reach of the host), which records the key each request carried.

Freshness is measured from the moment the kubectl that made the change returned to the moment
after which every request of a workload looping in its pod (a new connection each, so both
replicas answer) sees the change: printed, and written to .cluster/node-gateway.json.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.connections import conftest as connections_conftest
from tests.harness import controlplane as cp
from tests.harness import image as image_
from tests.harness import node as node_
from tests.harness.fixtures import kubectl_env, until
from tests.node import client_image
from tests.node.conftest import NAMESPACE, PLATFORM_KEYS, POLL, REPO, Node, http_get
from tests.providers import simulator

pytestmark = pytest.mark.cluster

GATEWAY = "settings-controller-gateway"
SELECTOR = "app.kubernetes.io/name=settings-controller,app.kubernetes.io/component=gateway"
OVERLAY = REPO / "tests" / "node" / "gateway-overlay"
AUDIENCE = "integrations.igny8.com"
TOKEN = "/var/run/secrets/gateway/token"
CHAT = "/openai/v1/chat/completions"
# Recognisable fakes: compared, never printed; the leak scan looks for any 8 characters.
KEY = "sk-proj-nodeGatewayPlatformKey7Hq2Xw9LmP4sRt6VbN3cZa"
ROTATED = "sk-proj-nodeGatewayRotatedKey5Kd8Yf1QaW3eTu7JoG2xMb"
BOUND = 1.0  # seconds: the promise
RESULTS = cp.cluster_dir() / "node-gateway.json"
MEASURED: dict[str, float] = {}
OUTPUTS: list[str] = []  # everything the workloads printed: leak-scanned at the end

# Run in a workload pod: ``once``/``models`` print one JSON line, ``loop`` one a request for
# SECONDS (a new connection each).
CLIENT = r"""
import json, os, sys, threading, time
import openai
mode, base, fields = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
# Connection: close, so that every request is a new connection kube-proxy may send to
# either replica.
headers = {**fields.pop("headers", {}), "Connection": "close"}
model = fields.pop("model", None)
with open("/var/run/secrets/gateway/token") as f:
    client = openai.OpenAI(base_url=base, api_key=f.read().strip(), max_retries=0, timeout=10,
                           default_headers=headers)
def one():
    out = {"openai": openai.__version__}
    try:
        if mode == "models":
            out.update(status=200, models=[m.id for m in client.models.list()])
        else:
            # No model: the SDK's NOT_GIVEN leaves it out, the gateway fills in the account's.
            answer = client.chat.completions.create(
                model=openai.NOT_GIVEN if model is None else model,
                messages=[{"role": "user", "content": "hello"}], **fields)
            out.update(status=200, model=answer.model, content=answer.choices[0].message.content)
    except openai.APIStatusError as e:
        out.update(status=e.status_code, code=e.code, param=e.param, error=e.body)
    except openai.APIError as e:
        out.update(status=0, error=type(e).__name__)
    out["t"] = time.time()
    print(json.dumps(out), flush=True)
if mode == "loop":
    # Ends when the test closes its end (stdin), or after SECONDS at the latest.
    threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()
    deadline = time.monotonic() + float(sys.argv[4])
    while time.monotonic() < deadline:
        one()
        time.sleep(0.005)
else:
    one()
"""


def _global(sim: simulator.Simulator) -> dict[str, Any]:
    """examples/global.yaml, its endpoints at the simulator, two keyless plans added."""
    body = connections_conftest.global_body(connections_conftest.local_endpoints(sim))
    body["spec"]["plans"]["gateway"] = {"allowOverrides": True, "projectKeys": False}
    body["spec"]["plans"]["gateway-free"] = {"allowOverrides": False, "projectKeys": False}
    return body


def _account(name: str, plan: str) -> dict[str, Any]:
    return {
        "apiVersion": "integrations.igny8.com/v1alpha1",
        "kind": "Account",
        "metadata": {"name": name},
        "spec": {"plan": plan, "namespace": name},
    }


def _workload(namespace: str, image: str) -> dict[str, Any]:
    """A pod as deploy/README.md shows: the gateway's audience in a projected token, and no
    other token (no automount)."""
    token = {"audience": AUDIENCE, "path": "token", "expirationSeconds": 3600}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "workload", "namespace": namespace, "labels": {"app": "workload"}},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "enableServiceLinks": False,
            "automountServiceAccountToken": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 65532,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "main",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                        "readOnlyRootFilesystem": True,
                    },
                    "volumeMounts": [
                        {"name": "gateway-token", "mountPath": "/var/run/secrets/gateway"},
                        {"name": "tmp", "mountPath": "/tmp"},
                    ],
                }
            ],
            "volumes": [
                {
                    "name": "gateway-token",
                    "projected": {"sources": [{"serviceAccountToken": token}]},
                },
                {"name": "tmp", "emptyDir": {"sizeLimit": "16Mi"}},
            ],
        },
    }


def _set_key(node: Node, value: str) -> None:
    patch = json.dumps({"stringData": {"openai": value}})
    node.kube.kubectl("patch", "secret", "platform-api-keys", "-n", NAMESPACE, "-p", patch)


def _ready(node: Node, namespace: str, pod: str) -> bool:
    obj = node.get("pod", "-n", namespace, pod)
    conds = {c["type"]: c["status"] for c in obj["status"].get("conditions", [])}
    return conds.get("Ready") == "True"


class Loop:
    """A workload calling the gateway in a loop (CLIENT ``loop``): its lines as they come."""

    def __init__(self, node: Node, namespace: str, base: str, seconds: float, **fields: Any):
        cmd = [str(node.kube.kubectl_path), f"--kubeconfig={node.kube.kubeconfig}", "exec"]
        cmd += ["-i", "-n", namespace, "workload", "--", "python3", "-c", CLIENT]
        cmd += ["loop", base, json.dumps(fields), str(seconds)]
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=kubectl_env(),
        )
        self.lines: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self.changed = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.raw.append(line)
            with self.changed:
                with contextlib.suppress(ValueError):
                    self.lines.append(json.loads(line))
                self.changed.notify_all()
        with self.changed:
            self.changed.notify_all()

    def until(self, what: str, check: Callable[[list[dict[str, Any]]], bool], timeout: float):
        deadline = time.monotonic() + timeout
        with self.changed:
            while not check(self.lines):
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self.reader.is_alive()):
                    pytest.fail(f"{what}: not within {timeout}s: {self.lines[-3:]}")
                self.changed.wait(min(left, 0.5))

    def stop(self) -> None:
        """Close its stdin: the loop in the pod ends, and kubectl with it."""
        assert self.proc.stdin is not None
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        assert self.proc.stderr is not None and self.proc.stdout is not None
        err = self.proc.stderr.read()
        self.reader.join(10)
        self.proc.stderr.close()
        self.proc.stdout.close()
        OUTPUTS.extend([*self.raw, err])


@dataclass
class World:
    node: Node
    sim: simulator.Simulator
    base: str  # http://<the Service's ClusterIP>/v1
    accounts: dict[str, str]  # role -> account name = its namespace
    figures: dict[str, float] = field(default_factory=dict)

    def call(self, role: str, mode: str = "once", **fields: Any) -> dict[str, Any]:
        proc = self.node.kube.kubectl(
            "exec",
            "-n",
            self.accounts[role],
            "workload",
            "--",
            "python3",
            "-c",
            CLIENT,
            mode,
            self.base,
            json.dumps(fields),
            timeout=60,
        )
        OUTPUTS.extend([proc.stdout, proc.stderr])
        answer: dict[str, Any] = json.loads(proc.stdout.splitlines()[-1])
        return answer

    def chat_calls(self, since: float = 0.0) -> list[tuple[float, str]]:
        """(time, key) of every chat completion the simulator received since ``since``."""
        with self.sim._lock:
            calls = list(self.sim.calls)
        return [(t, key) for t, method, path, key in calls if path == CHAT and t >= since]

    def loop(self, role: str, seconds: float = 20.0, **fields: Any) -> Loop:
        return Loop(self.node, self.accounts[role], self.base, seconds, **fields)


def _enforced_after(
    lines: list[dict[str, Any]], changed: float, new: Callable[[dict[str, Any]], bool]
) -> float | None:
    """Seconds from ``changed`` until the first answer after which every answer is new."""
    old = [line["t"] for line in lines if not new(line)]
    after = [line["t"] for line in lines if new(line) and line["t"] > max(old, default=0.0)]
    return max(0.0, after[0] - changed) if after else None


def _measure(
    world: World,
    role: str,
    what: str,
    change: Callable[[], None],
    new: Callable[[dict[str, Any]], bool],
    **fields: Any,
) -> float:
    """Make ``change`` while ``role``'s workload loops; seconds until it is enforced."""
    loop = world.loop(role, **fields)
    try:
        loop.until(
            f"{what}: the old state answered", lambda ls: sum(not new(x) for x in ls) >= 5, 60
        )
        change()
        changed = time.time()
        # Settled: 30 answers in a row show the change.
        loop.until(what, lambda ls: len(ls) >= 30 and all(new(x) for x in ls[-30:]), BOUND + 10)
    finally:
        loop.stop()
    took = _enforced_after(loop.lines, changed, new)
    assert took is not None
    MEASURED[what] = took
    print(f"{what}: {took * 1000:.0f} ms")
    return took


@pytest.fixture(scope="module")
def world(deployed_operator: Node) -> Iterator[World]:
    node = deployed_operator
    kube = node.kube
    suffix = secrets.token_hex(3)
    # "a" on a plan that may override, "b" on one that may not, "gone" to be deleted.
    accounts = {"a": f"gwn-a-{suffix}", "b": f"gwn-b-{suffix}", "gone": f"gwn-gone-{suffix}"}
    plans = {"a": "gateway", "b": "gateway-free", "gone": "gateway"}
    figures: dict[str, float] = {}
    with simulator.Simulator(host=node_.NODE_IP, hang=10.0) as sim:
        try:
            image, archive = client_image.build()
            figures["client_image_build_s"] = client_image.BUILD_SECONDS[-1]
            node_.import_image(node.paths, archive)
            _set_key(node, KEY)
            kube.kubectl("apply", "-f", "-", input=json.dumps(_global(sim)))
            items = [_account(accounts[r], plans[r]) for r in accounts]
            kube.kubectl(
                "apply",
                "-f",
                "-",
                input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}),
            )
            ca = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "provider-ca", "namespace": NAMESPACE},
                "data": {"ca.pem": sim.ca_file.read_text()},
            }
            kube.kubectl("apply", "-f", "-", input=json.dumps(ca))
            started = time.monotonic()
            kube.kubectl("apply", "-k", str(OVERLAY))
            kube.kubectl(
                "wait",
                "-n",
                NAMESPACE,
                "--for=condition=Available",
                f"deployment/{GATEWAY}",
                "--timeout=300s",
                timeout=320,
            )
            figures["gateway_available_s"] = time.monotonic() - started
            for ns in accounts.values():
                until(
                    lambda ns=ns: (
                        kube.kubectl("get", "sa", "default", "-n", ns, check=False).returncode == 0
                    ),
                    f"the default ServiceAccount of {ns}",
                    60,
                    POLL,
                )
            pods = [_workload(ns, image) for ns in accounts.values()]
            kube.kubectl(
                "apply",
                "-f",
                "-",
                input=json.dumps({"apiVersion": "v1", "kind": "List", "items": pods}),
            )
            for ns in accounts.values():
                until(
                    lambda ns=ns: _ready(node, ns, "workload"),
                    f"the workload in {ns} Ready",
                    180,
                    POLL,
                )
            ip = node.get("service", "-n", NAMESPACE, GATEWAY)["spec"]["clusterIP"]
            found = World(node, sim, f"http://{ip}/v1", accounts, figures)
            # The Service's endpoints reach kube-proxy's rules within a sync: a bounded wait.
            until(
                lambda: found.call("a")["status"] == 200,
                "the gateway answering through its ClusterIP",
                60,
                1,
            )
            yield found
        finally:
            for ns in accounts.values():
                kube.kubectl("delete", "account", ns, "--ignore-not-found", "--wait=false")
            kube.kubectl(
                "delete",
                "namespace",
                *accounts.values(),
                "--ignore-not-found",
                "--wait=true",
                "--timeout=120s",
                check=False,
                timeout=150,
            )
            kube.kubectl("delete", "-k", str(OVERLAY), "--ignore-not-found", check=False)
            kube.kubectl(
                "delete", "configmap", "provider-ca", "-n", NAMESPACE, "--ignore-not-found"
            )
            kube.kubectl("apply", "-f", str(REPO / "examples" / "global.yaml"))
            _set_key(node, PLATFORM_KEYS["openai"])


def test_the_gateway_is_deployed_as_users_deploy_it(world: World) -> None:
    deployment = world.node.get("deployment", "-n", NAMESPACE, GATEWAY)
    assert deployment["status"].get("readyReplicas") == 2, deployment["status"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == image_.IMAGE
    assert container["args"][0] == "gateway"
    print(f"gateway Available after {world.figures['gateway_available_s']:.1f} s")


def test_the_account_namespace_holds_no_key(world: World) -> None:
    for role in ("a", "b"):
        ns = world.accounts[role]
        found = world.node.get("secrets", "-n", ns)["items"]
        for secret in found:
            assert secret["type"] != "kubernetes.io/service-account-token", secret["metadata"]
            if secret["metadata"]["name"] == "integration-credentials":
                assert not secret.get("data"), list(secret.get("data", {}))
            text = json.dumps(secret)
            assert simulator.leaked(text, [KEY, ROTATED, *PLATFORM_KEYS.values()]) == []
        # The workload's filesystem holds the gateway's token, no key.
        listed = world.node.exec(ns, "workload", "ls", "/var/run/secrets")
        assert listed.split() == ["gateway"], listed


def test_a_workload_calls_the_gateway_through_its_service_with_the_openai_package(
    world: World,
) -> None:
    since = time.time()
    answer = world.call("a")
    assert answer["status"] == 200, answer
    assert answer["openai"] == client_image.openai_version()
    assert answer["content"] == "Hello from the simulator."
    assert answer["model"] == "gpt-4o-mini"  # the global default, filled in by the gateway
    calls = world.chat_calls(since)
    assert calls and all(key == KEY for _, key in calls), len(calls)
    models = world.call("a", "models")
    assert models["status"] == 200, models
    assert set(models["models"]) == {"gpt-4o-mini", "gpt-4o", "gpt-4.1", "dall-e-3"}


def test_a_model_outside_the_accounts_choices_is_refused(world: World) -> None:
    since = time.time()
    answer = world.call("a", model="gpt-3.5-turbo")
    assert answer["status"] == 403, answer
    assert answer["param"] == "model" and answer["code"] == "not_allowed", answer
    assert "gpt-4.1" in answer["error"]["message"], answer  # what is allowed
    assert "gpt-3.5-turbo" not in json.dumps(answer["error"])  # the value sent is not quoted
    assert world.chat_calls(since) == []  # nothing went upstream
    assert world.call("a", model="gpt-4.1")["model"] == "gpt-4.1"  # a choice it has


def test_a_token_from_another_account_acts_only_for_its_own(world: World) -> None:
    """b's plan may not override: whatever b's request says about a, it is b's."""
    a = world.accounts["a"]
    disguise = {"headers": {"OpenAI-Organization": a, "OpenAI-Project": a}, "user": a}
    refused = world.call("b", model="gpt-4.1", **disguise)
    assert refused["status"] == 403 and refused["code"] == "not_allowed", refused
    assert refused["param"] == "model"
    models = world.call("b", "models", **disguise)
    assert models["status"] == 200 and set(models["models"]) == {"gpt-4o-mini", "dall-e-3"}
    assert world.call("b", **disguise)["model"] == "gpt-4o-mini"


def test_a_deleted_account_is_refused_within_a_second(world: World) -> None:
    name = world.accounts["gone"]
    took = _measure(
        world,
        "gone",
        "deleted Account refused",
        lambda: world.node.kube.kubectl("delete", "account", name, "--wait=false"),
        lambda x: x["status"] == 403 and x["code"] == "no_account",
    )
    assert took < BOUND


def test_a_global_default_change_is_enforced_within_a_second(world: World) -> None:
    def change(model: str) -> None:
        patch = [
            {"op": "replace", "path": "/spec/integrations/openai/defaults/model", "value": model}
        ]
        world.node.kube.kubectl("patch", "gis", "default", "--type=json", "-p", json.dumps(patch))

    try:
        took = _measure(
            world,
            "a",
            "global default enforced",
            lambda: change("gpt-4o"),
            lambda x: x["status"] == 200 and x["model"] == "gpt-4o",
        )
    finally:
        change("gpt-4o-mini")
    assert took < BOUND


def test_a_rotated_key_is_used_within_a_second_without_a_restart(world: World) -> None:
    def pods() -> dict[str, int]:
        items = world.node.get("pods", "-n", NAMESPACE, "-l", SELECTOR)["items"]
        return {
            p["metadata"]["name"]: p["status"]["containerStatuses"][0]["restartCount"]
            for p in items
        }

    before = pods()
    loop = world.loop("a")
    try:
        started = time.time()
        loop.until("the old key in use", lambda ls: len(ls) >= 5, 60)
        assert world.chat_calls(started) and all(k == KEY for _, k in world.chat_calls(started))
        _set_key(world.node, ROTATED)
        changed = time.time()

        def settled(_: object) -> bool:
            keys = [k for _, k in world.chat_calls(changed)]
            return len(keys) >= 30 and all(k == ROTATED for k in keys[-30:])

        loop.until("the rotated key in use", settled, BOUND + 10)
    finally:
        loop.stop()
        restored = time.time()
        _set_key(world.node, KEY)
    calls = [(t, k) for t, k in world.chat_calls(started) if t < restored]
    assert {k for _, k in calls} == {KEY, ROTATED}  # no other value ever went upstream
    old = [t for t, k in calls if k == KEY]
    took = max(0.0, min(t for t, k in calls if k == ROTATED and t > max(old)) - changed)
    MEASURED["rotated key used"] = took
    print(f"rotated key used: {took * 1000:.0f} ms")
    assert all(line["status"] == 200 for line in loop.lines), loop.lines[-3:]
    assert pods() == before  # the same pods, not restarted
    assert took < BOUND


def test_both_replicas_served_and_nothing_leaked(world: World) -> None:
    """Runs last. kube-proxy spread the workloads' connections over both replicas; the
    platform keys (and the workloads' tokens) appear in no pod log, Event, ConfigMap,
    status, metric or workload output."""
    node = world.node
    kube = node.kube
    gateway_pods = node.get("pods", "-n", NAMESPACE, "-l", SELECTOR)["items"]
    assert len(gateway_pods) == 2
    texts: list[str] = list(OUTPUTS)
    for pod in gateway_pods:
        _, metrics = http_get(f"http://{pod['status']['podIP']}:9090/metrics")
        served = [
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("settings_gateway_requests_total{") and 'outcome="ok"' in line
        ]
        assert sum(served) > 0, pod["metadata"]["name"]
        texts.append(metrics)
    namespaces = [NAMESPACE, *world.accounts.values()]
    for ns in namespaces:
        for pod in node.get("pods", "-n", ns)["items"]:
            name = pod["metadata"]["name"]
            texts.append(kube.kubectl("logs", "-n", ns, name, "--all-containers").stdout)
        texts.append(kube.kubectl("get", "configmaps", "-n", ns, "-o", "json").stdout)
        texts.append(kube.kubectl("get", "all", "-n", ns, "-o", "json").stdout)
    texts.append(kube.kubectl("get", "events", "-A", "-o", "json").stdout)
    for kind in ("accounts", "integrationsettings", "globalintegrationsettings"):
        texts.append(kube.kubectl("get", kind, "-A", "-o", "json").stdout)
    # The tokens' signatures: the part of a token no one else can make.
    tokens = [
        node.exec(world.accounts[r], "workload", "cat", TOKEN).rsplit(".", 1)[1] for r in ("a", "b")
    ]
    text = "\n".join(texts)
    assert "Traceback" not in "".join(OUTPUTS)
    assert simulator.leaked(text, [KEY, ROTATED, *tokens]) == []
    # The simulator never saw a workload's token, only platform keys.
    assert {key for _, key in world.chat_calls()} <= {KEY, ROTATED}
    figures = {**world.figures, **{f"{k} (s)": v for k, v in MEASURED.items()}}
    RESULTS.write_text(json.dumps(figures, indent=1) + "\n")
    print(f"gateway on the node: {figures}")
