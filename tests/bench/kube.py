"""Helpers for the cluster benchmark: a dedicated control plane, bulk writes, watches, metrics.

The benchmark runs its own control plane instance under ``.cluster/bench``
(same binary as ``make cluster-up``, separate state, ports and etcd), so test
sessions using ``.cluster`` neither disturb the numbers nor see 10,000
namespaces appear.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import pathlib
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any

import aiohttp
import yaml

from controller import schemafiles
from controller.cluster.runtime import clients
from tests.harness import controlplane

REPO = pathlib.Path(__file__).resolve().parents[2]
CLI = pathlib.Path(sys.executable).parent / "settings-controller"
GROUP, VERSION = "integrations.igny8.com", "v1alpha1"
OPERATOR_NAMESPACE = "settings-controller-system"
CONFIGMAP = "integration-settings"
MANAGER = "settings-bench"


# --- the dedicated control plane ---------------------------------------------------


def bench_paths() -> controlplane.Paths:
    """State under .cluster/bench; the binary shared with .cluster/bin (built there once)."""
    shared = controlplane.Paths()
    paths = controlplane.Paths(shared.root / "bench")
    paths.bin, paths.harness, paths.kubectl = shared.bin, shared.harness, shared.kubectl
    return paths


def start_control_plane(
    extra: tuple[str, ...] = (),
) -> tuple[controlplane.Paths, controlplane.ClusterInfo]:
    """``extra``: more ``kube-harness serve`` flags (``--apiserver-arg=--profiling=true``)."""
    paths = bench_paths()
    if controlplane.go_binary() is not None:
        controlplane.build(controlplane.Paths())  # cached: about a second when nothing changed
    # A fresh instance each run: leftovers of an earlier run would skew every number.
    controlplane.down(paths)
    # kube-controller-manager's client defaults to 20 requests/s: 10,000 new
    # namespaces (a ServiceAccount and a ConfigMap each) would take it 15 minutes.
    info = controlplane.up(
        paths,
        rebuild=False,
        serve_args=(
            "--controller-manager-arg=--kube-api-qps=500",
            "--controller-manager-arg=--kube-api-burst=1000",
            *extra,
        ),
    )
    return paths, info


def cpu_seconds(paths: controlplane.Paths, *pids: int) -> dict[str, float]:
    """CPU seconds (user + system) used so far by the control plane's processes under
    ``paths`` (kube-apiserver, etcd, kube-controller-manager) and by ``pids``, by name."""
    used: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry.name)
        if pid in pids:
            name = f"pid {pid}"
        elif (
            len(argv) > 1
            and argv[0].endswith(b"kube-harness")
            and str(paths.root).encode() in b" ".join(argv)
        ):
            name = argv[1].decode()
            if name == "serve":
                continue  # the supervisor: idle
        else:
            continue
        used[name] = used.get(name, 0.0) + (int(stat[11]) + int(stat[12])) / tick
    return used


def kubectl(info: controlplane.ClusterInfo, *args: str, input: str | None = None) -> str:
    done = subprocess.run(
        [str(info.kubectl_path), f"--kubeconfig={info.kubeconfig}", *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {done.stderr}")
    return done.stdout


def install(info: controlplane.ClusterInfo, keys: Mapping[str, str]) -> None:
    """deploy/ (CRDs, RBAC, admission policies), the platform keys, examples/global.yaml."""
    kubectl(info, "apply", "-k", str(REPO / "deploy"), "--server-side", "--force-conflicts")
    kubectl(
        info,
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd",
        "-l",
        "app.kubernetes.io/name=settings-controller",
    )
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "platform-api-keys", "namespace": OPERATOR_NAMESPACE},
        "type": "Opaque",
        "stringData": dict(keys),
    }
    kubectl(info, "apply", "--server-side", "-f", "-", input=json.dumps(secret))
    kubectl(info, "apply", "--server-side", "-f", str(REPO / "examples" / "global.yaml"))


def admin_writer(info: controlplane.ClusterInfo) -> clients.Client:
    """The operator's own write client (controller/cluster/runtime/clients.py), as admin."""
    return clients.Client.connect(info.kubeconfig, schemafiles.load_catalog(), MANAGER)


def writer(kubeconfig: pathlib.Path, manager: str) -> clients.Client:
    """The operator's own write client, as the identity of ``kubeconfig``, under ``manager``."""
    return clients.Client.connect(kubeconfig, schemafiles.load_catalog(), manager)


async def apply(writer: clients.Client, manifest: Mapping[str, Any]) -> None:
    """Server-side apply of one manifest, exactly as the operator applies its outputs."""
    await writer.apply(manifest)


async def apply_all(
    writer: clients.Client, groups: Iterable[list[dict[str, Any]]], concurrency: int
) -> int:
    """Apply each group in order (a namespace before what lives in it), groups concurrently."""
    gate = asyncio.Semaphore(concurrency)
    count = 0

    async def one(group: list[dict[str, Any]]) -> None:
        nonlocal count
        async with gate:
            for manifest in group:
                for attempt in range(5):
                    try:
                        await writer.apply(manifest)
                        break
                    except clients.WriteError as e:
                        if attempt == 4 or e.status not in (0, 409, 429, 500, 503, 504):
                            raise
                        await asyncio.sleep(0.5 * (attempt + 1))
                count += 1

    await asyncio.gather(*(one(g) for g in groups))
    return count


# --- watching outputs and statuses ------------------------------------------------------


class Waiter:
    """Done when every name in ``pending`` has been seen satisfying ``predicate``."""

    def __init__(self, pending: set[str], predicate: Callable[[Any], bool]) -> None:
        self.pending = set(pending)
        self.predicate = predicate
        self.done = asyncio.get_running_loop().create_future()
        self.finished_at = 0.0
        if not self.pending:
            self.finished_at = time.perf_counter()
            self.done.set_result(None)

    def offer(self, name: str, value: Any) -> None:
        if name in self.pending and self.predicate(value):
            self.pending.discard(name)
            if not self.pending and not self.done.done():
                self.finished_at = time.perf_counter()
                self.done.set_result(None)


class Observer:
    """Watches every generated ConfigMap and every Account; keeps what the benchmark checks.

    ``configmaps``: namespace -> the parsed ``openai.json``; ``ready``: names of
    Accounts whose Ready condition is True for their current generation.
    """

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session
        self.configmaps: dict[str, dict[str, Any]] = {}
        self.sample_data: dict[str, str] = {}
        self.ready: set[str] = set()
        self.cm_waiters: list[Waiter] = []
        self.ready_waiters: list[Waiter] = []
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self.tasks = [
            asyncio.create_task(self._watch_configmaps()),
            asyncio.create_task(self._watch_accounts()),
        ]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def wait_configmaps(self, pending: set[str], predicate: Callable[[Any], bool]) -> Waiter:
        waiter = Waiter(pending, predicate)
        self.cm_waiters.append(waiter)
        for name in list(waiter.pending):
            if name in self.configmaps:
                waiter.offer(name, self.configmaps[name])
        return waiter

    def wait_ready(self, pending: set[str]) -> Waiter:
        waiter = Waiter(pending, bool)
        self.ready_waiters.append(waiter)
        for name in list(waiter.pending):
            waiter.offer(name, name in self.ready)
        return waiter

    async def _watch_configmaps(self) -> None:
        async for type_, obj in watch(
            self.session, "/api/v1/configmaps", {"fieldSelector": f"metadata.name={CONFIGMAP}"}
        ):
            namespace = obj["metadata"]["namespace"]
            if type_ == "DELETED":
                self.configmaps.pop(namespace, None)
                continue
            data = obj.get("data") or {}
            if not self.sample_data:
                self.sample_data = dict(data)
            try:
                openai = json.loads(data.get("openai.json", "{}"))
            except ValueError:
                continue
            self.configmaps[namespace] = openai
            for waiter in self.cm_waiters:
                waiter.offer(namespace, openai)
            self.cm_waiters = [w for w in self.cm_waiters if not w.done.done()]

    async def _watch_accounts(self) -> None:
        async for type_, obj in watch(self.session, f"/apis/{GROUP}/{VERSION}/accounts", {}):
            meta = obj["metadata"]
            name = meta["name"]
            status = (obj.get("status") or {}) if type_ != "DELETED" else {}
            ready = any(
                c.get("type") == "Ready"
                and c.get("status") == "True"
                and c.get("observedGeneration") == meta.get("generation")
                for c in status.get("conditions") or ()
            )
            if ready:
                self.ready.add(name)
            else:
                self.ready.discard(name)
            for waiter in self.ready_waiters:
                waiter.offer(name, ready)
            self.ready_waiters = [w for w in self.ready_waiters if not w.done.done()]


async def watch(
    session: aiohttp.ClientSession, path: str, params: Mapping[str, str]
) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """A raw watch (plain JSON, no models: the observer must not steal the operator's CPU).

    Starts without a resourceVersion (the API server sends every object as
    ADDED), resumes from the last one seen, starts over on 410 Gone.
    """
    version = ""
    while True:
        query = {**params, "watch": "1", "allowWatchBookmarks": "true", "timeoutSeconds": "600"}
        if version:
            query["resourceVersion"] = version
        try:
            async with session.get(path, params=query, timeout=aiohttp.ClientTimeout(None)) as r:
                if r.status != 200:
                    # 410: too old, start over; anything else (a CRD just established): retry
                    version = "" if r.status == 410 else version
                    await asyncio.sleep(0.5)
                    continue
                async for line in r.content:
                    event = json.loads(line)
                    obj = event.get("object") or {}
                    if event.get("type") == "ERROR":
                        if obj.get("code") == 410:
                            version = ""
                        break
                    version = (obj.get("metadata") or {}).get("resourceVersion", version)
                    if event.get("type") in ("ADDED", "MODIFIED", "DELETED"):
                        yield event["type"], obj
        except (aiohttp.ClientError, TimeoutError, ValueError):
            await asyncio.sleep(0.5)


def raw_session(info: controlplane.ClusterInfo) -> aiohttp.ClientSession:
    config = yaml.safe_load(info.kubeconfig.read_text())
    cluster = config["clusters"][0]["cluster"]
    ca = base64.b64decode(cluster["certificate-authority-data"]).decode()
    token = config["users"][0]["user"]["token"]
    return aiohttp.ClientSession(
        base_url=cluster["server"],
        connector=aiohttp.TCPConnector(ssl=ssl.create_default_context(cadata=ca)),
        headers={"Authorization": f"Bearer {token}"},
    )


# --- the operator under test ---------------------------------------------------------------


class Sink:
    """The fair baseline's two watchers, in their own process (tests/bench/sink.py)."""

    def __init__(
        self, info: controlplane.ClusterInfo, name: str, log: pathlib.Path, drain_only: bool = False
    ) -> None:
        self.name = name
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.bench.sink",
                    str(info.kubeconfig),
                    name,
                    *(["drain"] if drain_only else []),
                ],
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Operator:
    """``settings-controller operator`` as a subprocess, as its ServiceAccount (deploy/rbac)."""

    def __init__(
        self,
        info: controlplane.ClusterInfo,
        log: pathlib.Path,
        concurrency: int,
        heap: pathlib.Path | None = None,
        sampled: bool = False,
    ):
        self.info = info
        # Under tracemalloc, its heap written to this file on ``heap_breakdown()``.
        self.heap = heap
        self.log = log
        self.concurrency = concurrency
        self.proc: subprocess.Popen[bytes] | None = None
        self.metrics_port = free_port()
        self.health_port = free_port()
        # Under the CPU-time sampler (``--profile``): ``control`` names the next profile.
        self.sampled = sampled
        self.control = log.with_name("profile.control")

    def start(self) -> None:
        with open(self.log, "ab") as log:
            prefix = [str(CLI)]
            if self.heap:
                prefix = [
                    *(sys.executable, "-X", "tracemalloc=1", "-m", "tests.bench.traced"),
                    str(self.heap),
                ]
            elif self.sampled:
                # The CPU-time sampler (``profile_start``): its handlers are installed
                # before the operator runs, so a signal never finds the default action.
                prefix = [sys.executable, "-m", "tests.bench.sampled", str(self.control)]
            self.proc = subprocess.Popen(
                [
                    *prefix,
                    "operator",
                    f"--kubeconfig={self.info.operator_kubeconfig}",
                    f"--namespace={OPERATOR_NAMESPACE}",
                    f"--health-probe-bind-address=127.0.0.1:{self.health_port}",
                    f"--metrics-bind-address=127.0.0.1:{self.metrics_port}",
                    "--metrics-secure=false",  # the bench measures the operator, not TLS
                    f"--concurrency={self.concurrency}",
                    "--resync=86400",
                    "--verify-interval=0",  # no key checks: no traffic to the providers
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                env={k: v for k, v in os.environ.items() if k != "KUBECONFIG"},
            )

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def heap_breakdown(self, timeout: float = 120) -> dict[str, Any]:
        """What the traced operator holds now, by line and by file (tests/bench/traced.py)."""
        assert self.proc is not None and self.heap is not None
        self.heap.unlink(missing_ok=True)
        self.proc.send_signal(signal.SIGUSR2)
        deadline = time.monotonic() + timeout
        while not self.heap.exists():
            if time.monotonic() > deadline:
                raise TimeoutError("no heap breakdown from the operator")
            time.sleep(0.5)
        return dict(json.loads(self.heap.read_text()))

    def rss_mib(self) -> float:
        """Resident memory now."""
        return self._status_mib("VmRSS")

    def peak_mib(self) -> float:
        """The process's resident high-water mark since it started (its start is the peak)."""
        return self._status_mib("VmHWM")

    def _status_mib(self, field: str) -> float:
        assert self.proc is not None
        for line in pathlib.Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError(f"no {field}")

    def cpu_s(self) -> float:
        """User + system CPU seconds the operator process has used."""
        assert self.proc is not None
        fields = pathlib.Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def metrics(self) -> dict[str, float]:
        """The operator's own counters: ``name{labels}`` -> value."""
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10
            ) as r:
                text = r.read().decode()
        except OSError:
            return {}
        out = {}
        for line in text.splitlines():
            if line.startswith("settings_controller_") and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
        return out

    def profile_start(self, output: pathlib.Path) -> None:
        """Sample the operator's CPU time into ``output`` from now until ``profile_stop``
        (tests/bench/sampled.py); before ``start``, from its first instruction."""
        self.control.write_text(str(output))
        if self.proc is not None:
            self.proc.send_signal(signal.SIGUSR1)

    def profile_stop(self, timeout: float = 60) -> None:
        """Write the samples taken since ``profile_start``."""
        assert self.proc is not None
        output = pathlib.Path(self.control.read_text())
        output.unlink(missing_ok=True)
        self.proc.send_signal(signal.SIGUSR2)
        deadline = time.monotonic() + timeout
        while not output.exists():
            if time.monotonic() > deadline:
                raise TimeoutError("no CPU profile from the operator")
            time.sleep(0.1)
        self.control.unlink()


def total(metrics: Mapping[str, float], name: str, **labels: str) -> float:
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(
        v
        for k, v in metrics.items()
        if (k == name or k.startswith(name + "{")) and all(w in k for w in wanted)
    )


_REQUEST = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$")
WRITE_VERBS = {"POST", "PUT", "PATCH", "APPLY", "DELETE", "DELETECOLLECTION"}
REVIEWS = {"selfsubjectreviews", "selfsubjectaccessreviews", "subjectaccessreviews", "tokenreviews"}


def apiserver_writes(paths: controlplane.Paths, server: str) -> dict[str, float]:
    """Write requests the API server has served, by ``resource[/subresource]`` (all clients)."""
    status, body = controlplane.api_get(paths, server, "/metrics", timeout=30)
    if status != 200:
        raise RuntimeError(f"/metrics: {status}")
    out: dict[str, float] = {}
    for line in body.decode().splitlines():
        m = _REQUEST.match(line)
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group("labels")))
        if labels.get("verb") not in WRITE_VERBS:
            continue
        # The operator's start-up proof of its confinement: refused dry-run writes and a
        # SelfSubjectReview, none of which changes anything stored.
        if labels.get("dry_run") or labels.get("resource") in REVIEWS:
            continue
        key = labels.get("resource", "")
        if labels.get("subresource"):
            key += "/" + labels["subresource"]
        out[key] = out.get(key, 0.0) + float(m.group("value"))
    return out


_PLUGIN = re.compile(
    r"^apiserver_admission_controller_admission_duration_seconds_sum\{(?P<labels>[^}]*)\} "
    r"(?P<value>\S+)$"
)


def admission_seconds(paths: controlplane.Paths, server: str, plugin: str) -> float:
    """Seconds the API server has spent in one admission plugin (every operation, admitted
    or refused), from its own histogram: the time inside ``plugin`` alone."""
    status, body = controlplane.api_get(paths, server, "/metrics", timeout=30)
    if status != 200:
        raise RuntimeError(f"/metrics: {status}")
    total = 0.0
    for line in body.decode().splitlines():
        m = _PLUGIN.match(line)
        if m and f'name="{plugin}"' in m.group("labels"):
            total += float(m.group("value"))
    return total


def delta(after: Mapping[str, float], before: Mapping[str, float]) -> dict[str, float]:
    return {
        k: after[k] - before.get(k, 0.0)
        for k in sorted(after)
        if after[k] - before.get(k, 0.0) > 0 and k != "leases"
    }


async def until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not reached in {timeout:.0f}s: {what}")
        await asyncio.sleep(0.2)
