"""Cluster mode on the real API server: the gateway runs as its own ServiceAccount with the
RBAC of deploy/gateway/ (a token of it in a generated kubeconfig), workloads call it with
``kubectl create token SA -n NS --audience integrations.igny8.com`` through the openai
package, and the provider simulator records the platform key it received.

Freshness is measured from the moment the kubectl that changed the object returned.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import pathlib
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx2 as httpx
import openai
import pytest
import yaml

from controller import schemafiles
from controller.cluster.runtime import clients
from controller.gateway import cluster
from tests.connections import conftest as connections_conftest
from tests.gateway import conftest
from tests.gateway.conftest import KEY, POLL, Gateway
from tests.harness.fixtures import Kube, until
from tests.operator import fixtures as operator_fixtures
from tests.operator import support
from tests.providers import simulator

pytestmark = pytest.mark.cluster

SYSTEM = support.OPERATOR_NAMESPACE
GATEWAY_SA = "settings-controller-gateway"
AUDIENCE = "integrations.igny8.com"
HELLO = [{"role": "user", "content": "hi"}]
BOUND = 1.0  # seconds: the promise
ROTATED = "sk-proj-gatewayRotatedKey24680AbCdEfGhIjKlMnOpQrSt"
MEASURED: dict[str, float] = {}  # what the freshness tests measured (printed at the end)
REVOKED: dict[str, float] = {}  # bounded by the verdict cache and the API server's, not 1 s


def _keys(openai_key: str = KEY) -> dict[str, str]:
    return {"openai": openai_key, "dalle": conftest.DALLE_KEY, "runware": conftest.RUNWARE_KEY}


def token(kube: Kube, sa: str, namespace: str, audience: str | None = AUDIENCE) -> str:
    args = ["create", "token", sa, "-n", namespace, "--duration=1h"]
    if audience is not None:
        args.append(f"--audience={audience}")
    return kube.kubectl(*args).stdout.strip()


def kubeconfig_for(kube: Kube, path: pathlib.Path, bearer: str) -> pathlib.Path:
    """A kubeconfig that authenticates as ``bearer`` to the harness's API server."""
    admin = json.loads(kube.kubectl("config", "view", "--raw", "--minify", "-o", "json").stdout)
    server = admin["clusters"][0]["cluster"]
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": server}],
                "users": [{"name": "u", "user": {"token": bearer}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def sim() -> Iterator[simulator.Simulator]:
    with simulator.Simulator(hang=10.0) as server:
        yield server


@pytest.fixture(scope="module")
def world(kube: Kube, sim: simulator.Simulator) -> Iterator[Kube]:
    """deploy/ and deploy/gateway/ applied, the keys, a global pointed at the simulator."""
    operator_fixtures.install(kube)
    kube.kubectl(
        "apply",
        "-k",
        str(support.REPO / "deploy" / "gateway"),
        "--server-side",
        "--force-conflicts",
    )
    operator_fixtures.apply_keys(kube, _keys())
    _apply_global(kube, connections_conftest.global_body(connections_conftest.local_endpoints(sim)))
    yield kube
    operator_fixtures.apply_keys(kube, operator_fixtures.KEYS)
    kube.kubectl("apply", "-f", str(support.REPO / "examples" / "global.yaml"))


def _apply_global(kube: Kube, body: dict[str, Any]) -> None:
    kube.kubectl("apply", "-f", "-", input=json.dumps(body))


@pytest.fixture(scope="module")
def gateway_kubeconfig(world: Kube, tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    bearer = token(world, GATEWAY_SA, SYSTEM, audience=None)  # the API server's audience
    return kubeconfig_for(world, tmp_path_factory.mktemp("gw") / "kubeconfig", bearer)


@pytest.fixture(scope="module")
def gateway(
    world: Kube, sim: simulator.Simulator, gateway_kubeconfig: pathlib.Path
) -> Iterator[Gateway]:
    running = Gateway(
        None,
        sim,
        "--kubeconfig",
        str(gateway_kubeconfig),
        "--namespace",
        SYSTEM,
        "--timeout",
        "5",
        ready_timeout=60,
    )
    yield running
    metrics = httpx.get(f"http://127.0.0.1:{running.metrics_port}/metrics").text
    assert running.stop() == 0
    text = running.log + metrics
    assert simulator.leaked(text, [*conftest.KEYS, ROTATED, *ISSUED]) == []
    assert "Traceback" not in running.log


ISSUED: list[str] = []  # every workload token the tests made: no run of one may be logged


@pytest.fixture(scope="module")
def tenants(world: Kube) -> Iterator[dict[str, str]]:
    """Two claimed namespaces (pro and free) and an unclaimed one, each with a workload
    ServiceAccount; namespace -> its token."""
    suffix = secrets.token_hex(3)
    names = {"pro": f"gw-pro-{suffix}", "free": f"gw-free-{suffix}", "none": f"gw-none-{suffix}"}
    for ns in names.values():
        world.kubectl("create", "namespace", ns)
        world.kubectl("create", "serviceaccount", "workload", "-n", ns)
    support.apply_text(world, support.account_manifest(names["pro"], names["pro"], "pro"))
    support.apply_text(world, support.account_manifest(names["free"], names["free"], "free"))
    made = {role: token(world, "workload", ns) for role, ns in names.items()}
    ISSUED.extend(made.values())
    yield {**names, **{f"token-{role}": t for role, t in made.items()}}
    for ns in names.values():
        world.kubectl("delete", "account", ns, "--ignore-not-found", "--wait=false")
        world.kubectl("delete", "namespace", ns, "--wait=false")


def _client(gateway: Gateway, bearer: str) -> openai.OpenAI:
    return gateway.client(token=bearer)


def _ask(gateway: Gateway, bearer: str, **fields: Any) -> httpx.Response:
    return httpx.post(
        f"{gateway.base}/chat/completions",
        json={"messages": HELLO, **fields},
        headers={"Authorization": f"Bearer {bearer}"},
        timeout=10,
    )


def test_a_workload_token_works_and_the_simulator_gets_the_platform_key(
    gateway: Gateway, tenants: dict[str, str], sim: simulator.Simulator
) -> None:
    answer = _client(gateway, tenants["token-pro"]).chat.completions.create(
        model="gpt-4.1", messages=HELLO
    )
    assert answer.choices[0].message.content
    assert sim.received_keys("openai")[-1] == KEY
    models = [m.id for m in _client(gateway, tenants["token-pro"]).models.list()]
    assert "gpt-4.1" in models


def test_a_token_for_another_audience_is_401(
    world: Kube, gateway: Gateway, tenants: dict[str, str]
) -> None:
    for audience in ("someone-else.example", None):
        other = token(world, "workload", tenants["pro"], audience=audience)
        ISSUED.append(other)
        r = _ask(gateway, other)
        assert r.status_code == 401, r.text
        assert r.json()["error"]["code"] == "invalid_token"
        assert other[10:30] not in r.text


def test_a_token_acts_only_for_its_own_namespace(gateway: Gateway, tenants: dict[str, str]) -> None:
    # The free account gets the defaults only: the model the pro account may choose is
    # refused with its token, whatever else the request says.
    assert _ask(gateway, tenants["token-pro"], model="gpt-4.1").status_code == 200
    r = _ask(gateway, tenants["token-free"], model="gpt-4.1", user=tenants["pro"])
    assert r.status_code == 403, r.text
    assert r.json()["error"]["code"] == "not_allowed"


def test_an_unclaimed_namespace_is_403_no_account(
    gateway: Gateway, tenants: dict[str, str]
) -> None:
    r = _ask(gateway, tenants["token-none"])
    assert r.status_code == 403, r.text
    assert r.json()["error"]["code"] == "no_account"


def _raw(gateway: Gateway, authorization: bytes) -> bytes | None:
    """One request with this Authorization header, as bytes on the wire (no client checks);
    None when the gateway reset the connection before its answer could be read.

    A server that answers and closes while the client is still sending (a header of
    megabytes) leaves unread bytes behind, so the kernel closes with a reset, and a reset
    that arrives before the client has read the answer discards it (RFC 9112 §9.6: only a
    lingering close avoids that). Then the refusal is the reset itself."""
    request = (
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Authorization: " + authorization + b"\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as s:
        # Send from a thread and read here meanwhile, so an early answer is read at once.
        def send() -> None:
            with contextlib.suppress(OSError):  # the gateway stopped reading: that is its answer
                s.sendall(request)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
        finally:
            sender.join(10)
    return b"".join(chunks) or None


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(b"Bearer garbage-TOKENPART", id="garbage"),
        pytest.param(b"Bearer a.b." + b"TOKENPART" * 200, id="long"),
        pytest.param(b"Bearer a.b." + b"TOKENPART" * 200_000, id="huge"),
        pytest.param(b"Bearer eyJhbGciOi.eyJzdWIi.sig\x0bTOKENPART", id="control-char"),
        pytest.param(b"Bearer eyJhbGciOi.eyJzdWIi.sig\r\n TOKENPART", id="folded-newline"),
    ],
)
def test_tokens_that_are_not_service_account_tokens_are_refused_without_echo(
    gateway: Gateway, header: bytes
) -> None:
    started = time.monotonic()
    answer = _raw(gateway, header)
    assert time.monotonic() - started < 5
    if answer is None:  # reset before the answer could be read: only for a header this big
        assert len(header) > 1_000_000
        return
    assert answer.split(b" ")[1] in (b"400", b"401", b"431"), answer[:300]
    assert b"TOKENPART" not in answer


def test_a_user_token_that_is_no_service_account_is_401(world: Kube, gateway: Gateway) -> None:
    tenant = yaml.safe_load(world.tenant_kubeconfig.read_text())["users"][0]["user"]["token"]
    r = _ask(gateway, tenant)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "invalid_token"
    assert tenant[:8] not in r.text


def test_a_deleted_account_is_refused_within_a_second(
    world: Kube, gateway: Gateway, tenants: dict[str, str]
) -> None:
    ns = f"gw-gone-{secrets.token_hex(3)}"
    world.kubectl("create", "namespace", ns)
    world.kubectl("create", "serviceaccount", "workload", "-n", ns)
    support.apply_text(world, support.account_manifest(ns, ns, "pro"))
    bearer = token(world, "workload", ns)
    ISSUED.append(bearer)
    until(lambda: _ask(gateway, bearer).status_code == 200, "the new account answered", 10, POLL)
    world.kubectl("delete", "account", ns, "--wait=false")
    took = until(
        lambda: _ask(gateway, bearer).status_code == 403, "the deleted account refused", BOUND, POLL
    )
    MEASURED["deleted Account refused"] = took
    world.kubectl("delete", "namespace", ns, "--wait=false")


def test_a_global_default_change_is_enforced_within_a_second(
    world: Kube, gateway: Gateway, tenants: dict[str, str], sim: simulator.Simulator
) -> None:
    body = connections_conftest.global_body(connections_conftest.local_endpoints(sim))
    assert _ask(gateway, tenants["token-free"]).status_code == 200
    assert sim.bodies[-1][1]["model"] == "gpt-4o-mini"
    body["spec"]["integrations"]["openai"]["defaults"]["model"] = "gpt-4o"
    try:
        _apply_global(world, body)

        def changed() -> bool:
            return bool(
                _ask(gateway, tenants["token-free"]).status_code == 200
                and sim.bodies[-1][1]["model"] == "gpt-4o"
            )

        MEASURED["global default enforced"] = until(
            changed, "the global default enforced", BOUND, POLL
        )
    finally:
        body["spec"]["integrations"]["openai"]["defaults"]["model"] = "gpt-4o-mini"
        _apply_global(world, body)


def test_a_rotated_key_is_used_without_a_restart_within_a_second(
    world: Kube, gateway: Gateway, tenants: dict[str, str], sim: simulator.Simulator
) -> None:
    assert _ask(gateway, tenants["token-pro"]).status_code == 200
    assert sim.received_keys("openai")[-1] == KEY
    try:
        operator_fixtures.apply_keys(world, _keys(ROTATED))

        def rotated() -> bool:
            return bool(
                _ask(gateway, tenants["token-pro"]).status_code == 200
                and sim.received_keys("openai")[-1] == ROTATED
            )

        MEASURED["rotated key used"] = until(rotated, "the rotated key used", BOUND, POLL)
    finally:
        operator_fixtures.apply_keys(world, _keys())
    assert gateway.proc.poll() is None  # the same process throughout


def test_tokenreview_refused_to_the_gateway_is_503_and_bounded(
    world: Kube, gateway: Gateway, tenants: dict[str, str]
) -> None:
    binding = world.kubectl("get", "clusterrolebinding", GATEWAY_SA, "-o", "json").stdout
    fresh = token(world, "workload", tenants["pro"])
    ISSUED.append(fresh)
    world.kubectl("delete", "clusterrolebinding", GATEWAY_SA)
    try:
        # RBAC answers 403 for the review (the watches already running are not affected).
        def unavailable() -> bool:
            other = token(world, "workload", tenants["pro"])
            ISSUED.append(other)
            started = time.monotonic()
            r = _ask(gateway, other)
            assert time.monotonic() - started < 6
            return r.status_code == 503 and r.json()["error"]["code"] == "identity_unavailable"

        until(unavailable, "503 identity_unavailable", 15, 0.2)
    finally:
        world.kubectl("create", "-f", "-", input=binding)
    until(lambda: _ask(gateway, fresh).status_code == 200, "answered again", 15, 0.2)


def test_token_reviews_are_counted(gateway: Gateway) -> None:
    """After the tests above: reviews that authenticated, refused and failed, and their time."""
    text = httpx.get(f"http://127.0.0.1:{gateway.metrics_port}/metrics").text
    for outcome in ("authenticated", "refused", "failed"):
        line = f'settings_gateway_token_reviews_total{{outcome="{outcome}"}}'
        assert line in text, outcome
        count = float(text.split(line)[1].split()[0])
        assert count >= 1, outcome
    assert "settings_gateway_token_review_seconds_count" in text


def test_the_gateway_service_account_can_only_what_it_must(world: Kube) -> None:
    who = f"--as=system:serviceaccount:{SYSTEM}:{GATEWAY_SA}"

    def can(*args: str) -> bool:
        done = world.kubectl("auth", "can-i", who, *args, check=False)
        return done.stdout.strip() == "yes"

    for kind in ("accounts", "integrationsettings", "globalintegrationsettings"):
        for verb in ("get", "list", "watch"):
            assert can(verb, f"{kind}.integrations.igny8.com", "-A"), (verb, kind)
        assert not can("create", f"{kind}.integrations.igny8.com", "-A")
        assert not can("patch", f"{kind}.integrations.igny8.com/status", "-A")
    assert can("create", "tokenreviews.authentication.k8s.io")
    for verb in ("get", "list", "watch"):
        assert can(verb, "secret/platform-api-keys", "-n", SYSTEM), verb
    assert not can("list", "secrets", "-n", SYSTEM)  # without the name: no
    assert not can("get", "secret/integration-credentials", "-n", SYSTEM)
    assert not can("get", "secret/platform-api-keys", "-n", "default")
    assert not can("list", "secrets", "-A")
    assert not can("list", "configmaps", "-A")
    assert not can("list", "namespaces")
    assert not can("create", "tokenrequests.authentication.k8s.io")
    assert not can("create", "subjectaccessreviews.authorization.k8s.io")
    # The manifests pass the API server's validation as they are, and the pod the Deployment
    # makes passes the namespace's restricted Pod Security Standard (enforced there).
    world.kubectl("apply", "-k", str(support.REPO / "deploy" / "gateway"), "--dry-run=server")
    rendered = world.kubectl("kustomize", str(support.REPO / "deploy" / "gateway")).stdout
    (deployment,) = [o for o in yaml.safe_load_all(rendered) if o and o["kind"] == "Deployment"]
    assert deployment["spec"]["replicas"] == 2
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "gateway-", "namespace": SYSTEM},
        "spec": deployment["spec"]["template"]["spec"],
    }
    labels = world.kubectl("get", "namespace", SYSTEM, "-o", "json").stdout
    assert '"pod-security.kubernetes.io/enforce": "restricted"' in labels
    done = world.kubectl(
        "create", "--dry-run=server", "-f", "-", input=json.dumps(pod), check=False
    )
    assert done.returncode == 0, done.stderr
    assert "violate" not in done.stderr


# --- in process: what is read, and how reviews are bounded ------------------------------


async def _started(kubeconfig: pathlib.Path, **reviews: Any) -> cluster.ClusterSource:
    cat = schemafiles.load_catalog()
    source = cluster.ClusterSource(
        cat, clients.Client.connect(kubeconfig, cat), SYSTEM, cluster.Reviews(**reviews)
    )
    await asyncio.wait_for(source.start(), 30)
    return source


def test_only_the_named_key_secret_is_read_and_another_changing_does_nothing(
    world: Kube, gateway_kubeconfig: pathlib.Path
) -> None:
    async def run() -> None:
        source = await _started(gateway_kubeconfig)
        try:
            assert sorted(source.keys) == ["platform-api-keys"]
            assert source.credential("openai", "apiKey") is not None
            before = source.generation
            other = {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "gw-neighbour", "namespace": SYSTEM},
                "data": {
                    "openai": base64.b64encode(
                        b"sk-neighbour-" + secrets.token_hex(8).encode()
                    ).decode()
                },
            }
            world.kubectl("apply", "-f", "-", input=json.dumps(other))
            world.kubectl("delete", "secret", "gw-neighbour", "-n", SYSTEM)
            await asyncio.sleep(1.0)
            assert source.generation == before
            assert [len(s) for s in source.keys.values()] == [1]
            assert source.supervisor.failed is None  # the watches held (RBAC admitted them)
        finally:
            await source.stop()
            await asyncio.sleep(0.25)  # SSL transports close after the session (aiohttp)

    asyncio.run(run())


def test_malformed_tokens_cost_no_review_and_verdicts_are_cached(
    world: Kube, gateway_kubeconfig: pathlib.Path, tenants: dict[str, str]
) -> None:
    async def run() -> None:
        source = await _started(gateway_kubeconfig, cache_size=2)
        try:
            for bad in ("x", "a.b.c\n", "a.b." + "c" * cluster.MAX_TOKEN, "Bearer a.b.c"):
                refused = await source.authenticate(bad)
                assert getattr(refused, "status", None) == 401
            assert source.review_calls == 0
            started = time.perf_counter()
            assert await source.authenticate(tenants["token-pro"]) == tenants["pro"]
            reviewed = time.perf_counter() - started
            started = time.perf_counter()
            assert await source.authenticate(tenants["token-pro"]) == tenants["pro"]
            cached = time.perf_counter() - started
            MEASURED["TokenReview (first request of a token)"] = reviewed
            MEASURED["cached verdict"] = cached
            assert source.review_calls == 1
            # Many at once: one review each token, and the cache bounded.
            results = await asyncio.gather(
                *(source.authenticate(tenants[f"token-{r}"]) for r in ("free", "none") * 5)
            )
            assert set(results) == {tenants["free"], tenants["none"]}
            assert source.review_calls == 3
            assert source.cached_verdicts == 2
        finally:
            await source.stop()
            await asyncio.sleep(0.25)  # SSL transports close after the session (aiohttp)

    asyncio.run(run())


def test_a_revoked_token_is_refused_once_its_verdict_expires(
    world: Kube, gateway_kubeconfig: pathlib.Path, tenants: dict[str, str]
) -> None:
    """A ServiceAccount deleted: its token keeps its cached verdict at most ``ttl``."""
    world.kubectl("create", "serviceaccount", "short-lived", "-n", tenants["pro"])
    bearer = token(world, "short-lived", tenants["pro"])
    ISSUED.append(bearer)

    async def run() -> None:
        source = await _started(gateway_kubeconfig, ttl=1.0)
        try:
            assert await source.authenticate(bearer) == tenants["pro"]
            world.kubectl("delete", "serviceaccount", "short-lived", "-n", tenants["pro"])
            assert await source.authenticate(bearer) == tenants["pro"]  # cached
            assert source.review_calls == 1
            # The API server keeps a token's verdict itself (kube-apiserver's token cache,
            # 10 s for a success): revocation takes up to ttl + 10 s.
            deleted = time.monotonic()
            refused: Any = None
            while time.monotonic() - deleted < 1.0 + 12:
                await asyncio.sleep(0.5)
                refused = await source.authenticate(bearer)
                if not isinstance(refused, str):
                    break
            REVOKED["revoked token refused"] = time.monotonic() - deleted
            assert getattr(refused, "status", None) == 401, refused
            assert getattr(refused, "code", None) == "invalid_token"
            assert source.review_calls >= 2
        finally:
            await source.stop()
            await asyncio.sleep(0.25)

    asyncio.run(run())


def test_a_slow_api_server_answers_503_within_the_review_timeout(
    world: Kube, tmp_path: pathlib.Path, gateway_kubeconfig: pathlib.Path, tenants: dict[str, str]
) -> None:
    """The reviews go to a server that accepts and never answers: 503 after the timeout."""
    sink = socket.socket()
    sink.bind(("127.0.0.1", 0))
    sink.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        sink.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(sink.accept()[0])
            except OSError:
                continue

    threading.Thread(target=accept, daemon=True).start()
    config = yaml.safe_load(gateway_kubeconfig.read_text())
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{sink.getsockname()[1]}"
    slow = tmp_path / "slow"
    slow.write_text(yaml.safe_dump(config))

    async def run() -> None:
        cat = schemafiles.load_catalog()
        source = cluster.ClusterSource(
            cat,
            clients.Client.connect(slow, cat),
            SYSTEM,
            cluster.Reviews(review_timeout=0.5),
        )
        try:
            started = time.monotonic()
            verdict = await source.authenticate(tenants["token-pro"])
            took = time.monotonic() - started
            assert getattr(verdict, "status", None) == 503, verdict
            assert getattr(verdict, "code", None) == "identity_unavailable"
            assert took < 1.5, took
            assert source.cached_verdicts == 0  # a failure is not remembered
        finally:
            await source.client.close()
            await asyncio.sleep(0.25)

    try:
        asyncio.run(run())
    finally:
        stop.set()
        for s in held:
            s.close()
        sink.close()


def test_freshness_figures(gateway: Gateway) -> None:
    """Runs last: prints what the freshness tests measured (pytest -s shows it)."""
    for what, seconds in MEASURED.items():
        print(f"{what}: {seconds * 1000:.1f} ms")
        assert seconds < BOUND
    for what, seconds in REVOKED.items():
        print(f"{what}: {seconds:.1f} s")
