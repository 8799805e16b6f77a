"""Kyverno side by side: a ``generate`` clone rule with ``synchronize: true``, timed like our fan-out.

    python -m tests.bench.kyverno [--sizes 1000] [--cap 600] [--keep]

The alternative users would otherwise pick for "a ConfigMap per namespace,
kept in sync with a source": Kyverno v1.19.1, built from Go modules by the
module in tests/bench/kyverno (``go build``, GOTOOLCHAIN=local, CGO off, as
Kyverno's Makefile builds it) into ``.cluster/bench/bin``, run as two local
processes against the benchmark's dedicated control plane:

* ``kyverno`` (the admission controller) out of cluster: ``--serverIP
  127.0.0.1:PORT`` makes it register its webhooks by URL; it makes its own CA
  and serving certificate (Secrets in namespace ``kyverno``) with that IP in
  the SAN and serves the webhooks on loopback;
* ``background-controller``, which does the generating.

Each runs with the token of its own ServiceAccount (bound to cluster-admin:
Kyverno's ClusterRoles are not the point), so the admission controller can
tell the background controller's writes apart as it does in a cluster. The
CRDs (``config/crds``) and the ``kyverno`` / ``kyverno-metrics`` ConfigMaps
(from ``config/install-latest-testing.yaml``) come from the downloaded module
source; nothing is fetched from anywhere else. Flags are the release
manifest's, except ports, the out-of-cluster ones and no cloud registry
credential helpers (no network here).

The policy (``policy()``): every Namespace labelled with the plan (the
benchmark's accounts) gets a ConfigMap cloned from one source ConfigMap whose
data is one of our rendered ConfigMaps, ``synchronize: true``,
``generateExisting: true``. Timed on a raw watch of the clones (no polling):

* initial generation: from the policy's creation until every namespace has its clone;
* fan-out: from one server-side apply changing the source until the last
  clone carries the new data; capped (``--cap``), after which the number of
  namespaces synced is reported instead.

``beside()`` is what tests/bench/cluster.py calls after its own fan-outs on
the same control plane and namespaces; run standalone, this module starts the
dedicated control plane, creates the accounts, lets the operator render them
once (a real rendered ConfigMap for the source and the baseline), measures the
baseline as cluster.py does before and after Kyverno, and merges its numbers
into tests/bench/results.json under "kyverno".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import pathlib
import platform
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable
from typing import Any

import aiohttp
import yaml

from tests.bench import cluster, kube
from tests.harness import controlplane

VERSION = "v1.19.1"
MODULE_DIR = pathlib.Path(__file__).resolve().parent / "kyverno"
PACKAGES = {
    "kyverno": "github.com/kyverno/kyverno/cmd/kyverno",
    "background-controller": "github.com/kyverno/kyverno/cmd/background-controller",
}
NAMESPACE = "kyverno"
ADMISSION_SA = "kyverno-admission-controller"
BACKGROUND_SA = "kyverno-background-controller"
SOURCE_NAMESPACE = "kyverno-bench-source"
SOURCE_NAME = "settings-source"
CLONE_NAME = "integration-settings-kyverno"
POLICY_NAME = "bench-clone-settings"
CA_SECRET = "kyverno-svc.kyverno.svc.kyverno-tls-ca"
TLS_SECRET = "kyverno-svc.kyverno.svc.kyverno-tls-pair"
MANAGER = "settings-bench-kyverno"


def log(msg: str) -> None:
    print(f"  [kyverno] {msg}", file=sys.stderr, flush=True)


# --- build -------------------------------------------------------------------------------


def bin_dir() -> pathlib.Path:
    return controlplane.Paths().root / "bench" / "bin"


def build() -> dict[str, Any]:
    """``go build`` both binaries into .cluster/bench/bin (cached: seconds when nothing changed)."""
    go = controlplane.go_binary()
    if go is None:
        raise RuntimeError("go not found on PATH")
    out = bin_dir()
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CGO_ENABLED": "0"}
    env.setdefault("GOTOOLCHAIN", "local")
    ldflags = f"-s -w -X github.com/kyverno/kyverno/pkg/version.BuildVersion={VERSION}"
    cmd = [go, "build", "-trimpath", f"-ldflags={ldflags}", "-o", f"{out}/", *PACKAGES.values()]
    log(f"building Kyverno {VERSION} into {out} (go build in {MODULE_DIR})")
    started = time.monotonic()
    done = subprocess.run(cmd, cwd=MODULE_DIR, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {done.returncode}: {done.stderr[-2000:]}")
    elapsed = time.monotonic() - started
    log(f"built in {elapsed:.1f} s")
    return {"s": elapsed, "bin": str(out)}


def module_source() -> pathlib.Path:
    """Kyverno's module source in the module cache (downloaded by the build)."""
    done = subprocess.run(
        ["go", "list", "-m", "-f", "{{.Dir}}", "github.com/kyverno/kyverno"],
        cwd=MODULE_DIR,
        env={**os.environ, "GOTOOLCHAIN": os.environ.get("GOTOOLCHAIN", "local")},
        capture_output=True,
        text=True,
        check=True,
    )
    return pathlib.Path(done.stdout.strip())


# --- install -----------------------------------------------------------------------------


def install(info: controlplane.ClusterInfo) -> None:
    """CRDs, namespace, ConfigMaps, ServiceAccounts bound to cluster-admin: all idempotent."""
    source = module_source()
    kube.kubectl(
        info, "apply", "--server-side", "--force-conflicts", "-R", "-f", str(source / "config/crds")
    )
    kube.kubectl(info, "wait", "--for=condition=Established", "--timeout=120s", "crd", "--all")
    docs = yaml.safe_load_all((source / "config/install-latest-testing.yaml").read_text())
    configmaps = [
        d
        for d in docs
        if d
        and d.get("kind") == "ConfigMap"
        and d["metadata"].get("namespace") == NAMESPACE
        and d["metadata"]["name"] in ("kyverno", "kyverno-metrics")
    ]
    assert len(configmaps) == 2, "no kyverno ConfigMaps in install-latest-testing.yaml"
    objects: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SOURCE_NAMESPACE}},
        *configmaps,
    ]
    for sa in (ADMISSION_SA, BACKGROUND_SA):
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": sa, "namespace": NAMESPACE},
            }
        )
    objects.append(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "kyverno-bench-cluster-admin"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "cluster-admin",
            },
            "subjects": [
                {"kind": "ServiceAccount", "name": sa, "namespace": NAMESPACE}
                for sa in (ADMISSION_SA, BACKGROUND_SA)
            ],
        }
    )
    kube.kubectl(
        info,
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        "-",
        input="\n---\n".join(json.dumps(o) for o in objects),
    )


def kubeconfig_for(info: controlplane.ClusterInfo, sa: str, path: pathlib.Path) -> pathlib.Path:
    token = kube.kubectl(info, "create", "token", sa, "-n", NAMESPACE, "--duration=48h").strip()
    config = yaml.safe_load(info.kubeconfig.read_text())
    cluster_ = config["clusters"][0]["cluster"]
    text = controlplane.kubeconfig_yaml(
        cluster_["server"],
        cluster_["certificate-authority-data"],
        None,
        f"system:serviceaccount:{NAMESPACE}:{sa}",
        token,
    )
    path.write_text(text)
    path.chmod(0o600)
    return path


# --- the processes -----------------------------------------------------------------------


class Process:
    """One Kyverno binary, restarted when it exits as its Deployment's pod would be.

    Kyverno exits when it loses its leader lease (seen here under the fan-out's
    load: "Failed to renew lease ... client rate limiter Wait returned an error");
    in a cluster the kubelet restarts the container (back-off 10 s, doubling, at
    most 300 s), and so does ``supervise()`` here. Restarts are counted.
    """

    def __init__(self, name: str, args: list[str], env: dict[str, str], logfile: pathlib.Path):
        self.name = name
        self.args = args
        self.env = {**{k: v for k, v in os.environ.items() if k != "KUBECONFIG"}, **env}
        self.logfile = logfile
        self.restarts = 0
        self.exits: list[int] = []
        self.cpu_done = 0.0  # CPU seconds of the exited incarnations
        self.stopping = False
        self.proc = self._spawn()
        self.task = asyncio.create_task(self.supervise())

    def _spawn(self) -> subprocess.Popen[bytes]:
        with open(self.logfile, "ab") as fh:
            return subprocess.Popen(
                [str(bin_dir() / self.name), *self.args],
                stdout=fh,
                stderr=subprocess.STDOUT,
                env=self.env,
            )

    async def supervise(self) -> None:
        backoff = 10.0
        while not self.stopping:
            await asyncio.sleep(0.5)
            if self.proc.poll() is None or self.stopping:
                continue
            self.exits.append(self.proc.returncode)
            log(f"{self.name} exited ({self.proc.returncode}); restarting in {backoff:.0f} s")
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 300.0)
            if not self.stopping:
                self.restarts += 1
                self.proc = self._spawn()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def cpu_s(self) -> float:
        try:
            stat = pathlib.Path(f"/proc/{self.proc.pid}/stat").read_text()
        except OSError:
            return 0.0
        fields = stat.rsplit(")", 1)[1].split()
        # utime, stime, and the reaped children's (none): this incarnation only.
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mib(self) -> float:
        try:
            text = pathlib.Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return 0.0
        for line in text.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    async def stop(self) -> None:
        self.stopping = True
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Kyverno:
    """The admission controller and the background controller, out of cluster."""

    def __init__(self, info: controlplane.ClusterInfo, work: pathlib.Path) -> None:
        self.info = info
        self.work = work
        self.port = kube.free_port()
        self.procs: list[Process] = []

    def start(self) -> None:
        common_env = {
            "KYVERNO_NAMESPACE": NAMESPACE,
            "INIT_CONFIG": "kyverno",
            "METRICS_CONFIG": "kyverno-metrics",
            "KYVERNO_SVC": "kyverno-svc",
        }
        common = [
            "--loggingFormat=text",
            "--v=2",
            "--disableLogColor",
            "--otelConfig=prometheus",
            "--metricsHost=127.0.0.1",
            "--resyncPeriod=15m",
            "--enableConfigMapCaching=true",
            "--enableDeferredLoading=true",
            "--maxAPICallResponseLength=2000000",
            "--omitEvents=PolicyApplied,PolicySkipped",
            "--enablePolicyException=false",
            "--enableReporting=validate,mutate,mutateExisting,imageVerify,generate",
            # No cloud registry credential helpers: there is no network to reach them.
            "--registryCredentialHelpers=",
        ]
        admission = kubeconfig_for(
            self.info, ADMISSION_SA, self.work / "kyverno-admission.kubeconfig"
        )
        background = kubeconfig_for(
            self.info, BACKGROUND_SA, self.work / "kyverno-background.kubeconfig"
        )
        self.procs.append(
            Process(
                "kyverno",
                [
                    *common,
                    f"--kubeconfig={admission}",
                    f"--serverIP=127.0.0.1:{self.port}",
                    "--webhookServerHost=127.0.0.1",
                    f"--webhookServerPort={self.port}",
                    f"--metricsPort={kube.free_port()}",
                    f"--controllerRuntimeMetricsAddress=127.0.0.1:{kube.free_port()}",
                    f"--caSecretName={CA_SECRET}",
                    f"--tlsSecretName={TLS_SECRET}",
                    "--tlsKeyAlgorithm=RSA",
                    f"--backgroundServiceAccountName=system:serviceaccount:{NAMESPACE}:{BACKGROUND_SA}",
                    f"--reportsServiceAccountName=system:serviceaccount:{NAMESPACE}:kyverno-reports-controller",
                    "--crdWatcher=false",
                    "--admissionReports=true",
                    "--maxAdmissionReports=1000",
                    "--autoUpdateWebhooks=true",
                    "--generateValidatingAdmissionPolicy=true",
                    "--generateMutatingAdmissionPolicy=false",
                    "--apiCallTimeout=30s",
                ],
                {
                    **common_env,
                    "KYVERNO_POD_NAME": "kyverno-admission-controller-bench",
                    "KYVERNO_SERVICEACCOUNT_NAME": ADMISSION_SA,
                    "KYVERNO_ROLE_NAME": "kyverno:admission-controller",
                    "KYVERNO_DEPLOYMENT": ADMISSION_SA,
                },
                self.work / "kyverno-admission.log",
            )
        )
        self.procs.append(
            Process(
                "background-controller",
                [
                    *common,
                    f"--kubeconfig={background}",
                    f"--metricsPort={kube.free_port()}",
                    f"--controllerRuntimeMetricsAddress=127.0.0.1:{kube.free_port()}",
                    "--apiCallTimeout=30s",
                ],
                {
                    **common_env,
                    "KYVERNO_POD_NAME": "kyverno-background-controller-bench",
                    "KYVERNO_SERVICEACCOUNT_NAME": BACKGROUND_SA,
                    "KYVERNO_DEPLOYMENT": BACKGROUND_SA,
                },
                self.work / "kyverno-background.log",
            )
        )

    def check(self) -> None:
        """Before the policy is in: an exit at start-up is a failure, not a restart."""
        for p in self.procs:
            if p.exits:
                raise RuntimeError(
                    f"{p.name} exited with {p.exits[0]} at start-up; see {self.work}/kyverno-*.log"
                )

    def restarts(self) -> dict[str, int]:
        return {p.name: p.restarts for p in self.procs}

    def ready(self) -> bool:
        """The admission controller's webhook server answers /health/readiness (TLS on loopback)."""
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        try:
            url = f"https://127.0.0.1:{self.port}/health/readiness"
            with urllib.request.urlopen(url, timeout=2, context=context) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def cpu_s(self) -> dict[str, float]:
        return {p.name: p.cpu_s() for p in self.procs}

    def rss_mib(self) -> dict[str, float]:
        return {p.name: p.rss_mib() for p in self.procs}

    async def stop(self) -> None:
        for p in self.procs:
            await p.stop()
        self.procs = []

    def log_count(self, needle: str) -> int:
        count = 0
        for name in ("kyverno-admission.log", "kyverno-background.log"):
            path = self.work / name
            if path.exists():
                with open(path, errors="replace") as fh:
                    count += sum(needle in line for line in fh)
        return count


# --- the policy, the source, the clones ---------------------------------------------------


def policy() -> dict[str, Any]:
    return {
        "apiVersion": "kyverno.io/v1",
        "kind": "ClusterPolicy",
        "metadata": {"name": POLICY_NAME},
        "spec": {
            "rules": [
                {
                    "name": "clone-settings",
                    "match": {
                        "any": [
                            {
                                "resources": {
                                    "kinds": ["Namespace"],
                                    "selector": {
                                        "matchExpressions": [
                                            {"key": cluster.PLAN_LABEL, "operator": "Exists"}
                                        ]
                                    },
                                }
                            }
                        ]
                    },
                    "generate": {
                        "generateExisting": True,
                        "synchronize": True,
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "name": CLONE_NAME,
                        "namespace": "{{request.object.metadata.name}}",
                        "clone": {"namespace": SOURCE_NAMESPACE, "name": SOURCE_NAME},
                    },
                }
            ]
        },
    }


def source(data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": SOURCE_NAME, "namespace": SOURCE_NAMESPACE},
        "data": data,
    }


def versioned(data: dict[str, str], version: int) -> dict[str, str]:
    """The rendered data with one value changed, as the baseline changes it (same size)."""
    return {k: v.replace('"id"', f'"round": {version}, "id"', 1) for k, v in data.items()}


async def ssa(session: aiohttp.ClientSession, path: str, obj: dict[str, Any]) -> dict[str, Any]:
    async with session.patch(
        path,
        params={"fieldManager": MANAGER, "force": "true"},
        data=json.dumps(obj),
        headers={"Content-Type": "application/apply-patch+yaml"},
    ) as r:
        body = await r.json(content_type=None)
        if r.status >= 300:
            raise RuntimeError(f"apply {path}: {r.status} {body}")
        return dict(body)


class Clones:
    """A raw watch of every clone: namespace -> data."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session
        self.data: dict[str, dict[str, str]] = {}
        self.waiters: list[kube.Waiter] = []
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._watch())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    def wait(self, pending: Iterable[str], data: dict[str, str]) -> kube.Waiter:
        waiter = kube.Waiter(set(pending), lambda d: d == data)
        self.waiters.append(waiter)
        for name in list(waiter.pending):
            if name in self.data:
                waiter.offer(name, self.data[name])
        return waiter

    async def _watch(self) -> None:
        async for type_, obj in kube.watch(
            self.session, "/api/v1/configmaps", {"fieldSelector": f"metadata.name={CLONE_NAME}"}
        ):
            namespace = obj["metadata"]["namespace"]
            if type_ == "DELETED":
                self.data.pop(namespace, None)
                continue
            data = obj.get("data") or {}
            self.data[namespace] = data
            for waiter in self.waiters:
                waiter.offer(namespace, data)
            self.waiters = [w for w in self.waiters if not w.done.done()]


async def timed(waiter: kube.Waiter, started: float, cap: float, total: int) -> dict[str, Any]:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(waiter.done), cap)
    done = total - len(waiter.pending)
    if waiter.done.done():
        elapsed = waiter.finished_at - started
        return {"complete": True, "s": elapsed, "done": done, "per_s": done / elapsed}
    return {"complete": False, "s": cap, "done": done, "cap_s": cap, "per_s": done / cap}


async def count_urs(session: aiohttp.ClientSession) -> int:
    async with session.get(f"/apis/kyverno.io/v2/namespaces/{NAMESPACE}/updaterequests") as r:
        if r.status != 200:
            return -1
        return len((await r.json()).get("items") or [])


async def drained(session: aiohttp.ClientSession, timeout: float) -> float:
    """Until no UpdateRequest is left (Kyverno idle); the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if await count_urs(session) == 0:
            return time.monotonic() - started
        await asyncio.sleep(1)
    return -1.0


async def delete_clones(session: aiohttp.ClientSession, namespaces: list[str]) -> None:
    gate = asyncio.Semaphore(32)

    async def one(ns: str) -> None:
        async with gate, session.delete(f"/api/v1/namespaces/{ns}/configmaps/{CLONE_NAME}") as r:
            await r.read()

    await asyncio.gather(*(one(ns) for ns in namespaces))


def cleanup(info: controlplane.ClusterInfo) -> None:
    """Kyverno stopped: its webhooks, policy and UpdateRequests go (or namespaces and
    ConfigMaps would be refused by a webhook no one serves)."""
    selector = "webhook.kyverno.io/managed-by=kyverno"
    for kind in ("validatingwebhookconfigurations", "mutatingwebhookconfigurations"):
        kube.kubectl(info, "delete", kind, "-l", selector, "--ignore-not-found", "--wait=false")
    kube.kubectl(info, "delete", "clusterpolicy", POLICY_NAME, "--ignore-not-found", "--wait=false")
    kube.kubectl(info, "delete", "updaterequests", "-n", NAMESPACE, "--all", "--wait=false")
    # What is left of Kyverno's own: VAPs it may have generated (none for a generate rule).
    for kind in ("validatingadmissionpolicies", "validatingadmissionpolicybindings"):
        with contextlib.suppress(RuntimeError):
            kube.kubectl(
                info,
                "delete",
                kind,
                "-l",
                "app.kubernetes.io/managed-by=kyverno",
                "--ignore-not-found",
                "--wait=false",
            )


# --- the measurement ---------------------------------------------------------------------


def phase(kyverno: Kyverno, cpu0: dict[str, float], restarts0: dict[str, int]) -> dict[str, Any]:
    """Restarts during a step, and the CPU seconds it took each process (if none restarted)."""
    restarts = {k: v - restarts0[k] for k, v in kyverno.restarts().items()}
    cpu = kyverno.cpu_s()
    return {
        "restarts": restarts,
        "cpu_s": {k: (v - cpu0[k] if not restarts[k] else None) for k, v in cpu.items()},
    }


async def measure(
    paths: controlplane.Paths,
    info: controlplane.ClusterInfo,
    namespaces: list[str],
    data: dict[str, str],
    baseline_per_s: float,
    work: pathlib.Path,
    cap: float = 600,
) -> dict[str, Any]:
    """Kyverno started, the policy applied, initial generation and one source change timed."""
    n = len(namespaces)
    result: dict[str, Any] = {
        "version": VERSION,
        "namespaces": n,
        "source_bytes": sum(len(k) + len(v) for k, v in data.items()),
        "cap_s": cap,
    }
    install(info)
    session = kube.raw_session(info)
    clones = Clones(session)
    clones.start()
    kyverno = Kyverno(info, work)
    try:
        await ssa(
            session,
            f"/api/v1/namespaces/{SOURCE_NAMESPACE}/configmaps/{SOURCE_NAME}",
            source(versioned(data, 0)),
        )
        started = time.perf_counter()
        kyverno.start()
        deadline = time.monotonic() + 180
        while not kyverno.ready():
            kyverno.check()
            if time.monotonic() > deadline:
                raise TimeoutError("Kyverno's webhook server never became ready")
            await asyncio.sleep(0.5)
        # The policy goes through Kyverno's own validating webhook, registered by its
        # leader once the certificates exist: retried until that is in place.
        while True:
            try:
                await ssa(session, f"/apis/kyverno.io/v1/clusterpolicies/{POLICY_NAME}", policy())
                break
            except RuntimeError as e:
                kyverno.check()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the ClusterPolicy was never admitted: {e}") from e
                await asyncio.sleep(1)
        result["startup_s"] = time.perf_counter() - started
        log(f"Kyverno up and the policy admitted in {result['startup_s']:.1f} s")

        # Initial generation (generateExisting): from the policy's creation.
        cpu0, writes0 = kyverno.cpu_s(), kube.apiserver_writes(paths, info.server)
        restarts0 = kyverno.restarts()
        started = time.perf_counter()
        initial = await timed(clones.wait(namespaces, versioned(data, 0)), started, cap, n)
        initial.update(phase(kyverno, cpu0, restarts0))
        initial["apiserver_writes"] = kube.delta(kube.apiserver_writes(paths, info.server), writes0)
        result["initial"] = initial
        log(
            f"initial generation: {initial['done']:,}/{n:,} in {initial['s']:.1f} s "
            f"({initial['per_s']:.0f}/s){'' if initial['complete'] else ' (cap reached)'}"
        )
        result["settle_s"] = await drained(session, 120)

        # The fan-out: one change of the source.
        new = versioned(data, 1)
        waiter = clones.wait(namespaces, new)
        cpu0, writes0 = kyverno.cpu_s(), kube.apiserver_writes(paths, info.server)
        restarts0 = kyverno.restarts()
        skipped0 = kyverno.log_count("UpdateRequest creation skipped")
        started = time.perf_counter()
        await ssa(
            session,
            f"/api/v1/namespaces/{SOURCE_NAMESPACE}/configmaps/{SOURCE_NAME}",
            source(new),
        )
        fan = await timed(waiter, started, cap, n)
        fan.update(phase(kyverno, cpu0, restarts0))
        fan["apiserver_writes"] = kube.delta(kube.apiserver_writes(paths, info.server), writes0)
        fan["urs_skipped_threshold"] = (
            kyverno.log_count("UpdateRequest creation skipped") - skipped0
        )
        fan["namespaces_per_s"] = fan["per_s"]
        fan["baseline_writes_per_s"] = baseline_per_s
        fan["ratio_to_baseline"] = fan["per_s"] / baseline_per_s
        result["fanout"] = fan
        result["rss_mib"] = kyverno.rss_mib()
        log(
            f"fan-out: {fan['done']:,}/{n:,} synced in {fan['s']:.1f} s ({fan['per_s']:.1f}/s), "
            f"ratio {fan['ratio_to_baseline']:.3f} to baseline {baseline_per_s:.0f}/s"
            + ("" if fan["complete"] else " (cap reached)")
            + f"; restarts {fan['restarts']}; URs skipped at the threshold "
            f"{fan['urs_skipped_threshold']}"
        )
        return result
    finally:
        await kyverno.stop()
        await clones.stop()
        try:
            cleanup(info)
            await delete_clones(session, namespaces)
        finally:
            await session.close()


_build_error: str | None = None
_built: dict[str, Any] | None = None


async def beside(
    paths: controlplane.Paths,
    info: controlplane.ClusterInfo,
    observer: kube.Observer,
    namespaces: list[str],
    baseline_per_s: float,
    work: pathlib.Path,
    cap: float = 600,
) -> dict[str, Any]:
    """For cluster.py, operator stopped: Kyverno on the same control plane and namespaces.

    Never raises: a build or run failure is recorded as ``{"error": ...}``.
    """
    global _build_error, _built
    if _build_error is not None:
        return {"error": _build_error}
    try:
        if _built is None:
            _built = build()
    except Exception as e:  # recorded: the benchmark goes on
        _build_error = f"build failed: {e}"
        return {"error": _build_error}
    try:
        result = await measure(
            paths, info, namespaces, dict(observer.sample_data), baseline_per_s, work, cap
        )
        result["build_s"] = _built["s"]
        return result
    except Exception as e:  # recorded: the benchmark goes on
        return {"error": f"{type(e).__name__}: {e}"}


# --- standalone ----------------------------------------------------------------------------


async def run(args: argparse.Namespace, work: pathlib.Path) -> dict[str, Any]:
    built = build()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    paths, info = kube.start_control_plane()
    results: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "kubernetes": "kube-apiserver " + controlplane.kubernetes_version(),
        "kyverno": VERSION,
        "build_s": built["s"],
        "sizes": [],
    }
    try:
        kube.install(info, cluster.KEYS)
        all_specs = cluster.specs(sizes[-1])
        session = kube.raw_session(info)
        writer = kube.admin_writer(info)
        observer = kube.Observer(session)
        observer.start()
        operator = kube.Operator(info, work / "operator.log", args.concurrency)
        created = 0
        try:
            for n in sizes:
                row: dict[str, Any] = {"accounts": n}
                operator.stop()
                await cluster.create(writer, all_specs[created:n])
                await cluster.settle(paths, info.server, n)
                names = {s.name for s in all_specs[:n]}
                # The operator renders every account once: the source's body is a real one.
                await cluster.cold_start(operator, observer, names, 1800)
                operator.stop()
                created = n
                targets = sorted(names)
                count = max(2000, n // 2)
                before = await cluster.baseline(writer, observer, targets, count, args.concurrency)
                log(f"baseline before: {before['writes_per_s']:.0f} writes/s")
                row["kyverno"] = await measure(
                    paths,
                    info,
                    targets,
                    dict(observer.sample_data),
                    before["writes_per_s"],
                    work,
                    args.cap,
                )
                after = await cluster.baseline(writer, observer, targets, count, args.concurrency)
                log(f"baseline after: {after['writes_per_s']:.0f} writes/s")
                around = (before["writes_per_s"] + after["writes_per_s"]) / 2
                fan = row["kyverno"]["fanout"]
                fan["baseline_writes_per_s"] = around
                fan["ratio_to_baseline"] = fan["per_s"] / around
                row["baseline"] = {
                    "writes_per_s": around,
                    "runs_writes_per_s": [before["writes_per_s"], after["writes_per_s"]],
                }
                results["sizes"].append(row)
        finally:
            operator.stop()
            await observer.stop()
            await session.close()
            await writer.close()
    except BaseException as e:
        results["incomplete"] = f"{type(e).__name__}: {e}"
        merge(results)
        raise
    finally:
        if not args.keep:
            controlplane.down(paths)
    return results


def table(results: dict[str, Any]) -> str:
    lines = [
        f"Kyverno {results['kyverno']} generate/clone/synchronize (built in {results['build_s']:.0f} s)"
    ]
    lines.append(
        f"{'namespaces':>10} {'initial s':>10} {'initial/s':>10} {'fan-out s':>10} "
        f"{'synced':>8} {'synced/s':>9} {'baseline w/s':>13} {'vs base':>8}"
    )
    for row in results["sizes"]:
        k = row["kyverno"]
        i, f = k["initial"], k["fanout"]
        lines.append(
            f"{k['namespaces']:>10,} {i['s']:>10.1f} {i['per_s']:>10.1f} {f['s']:>10.1f} "
            f"{f['done']:>8,} {f['per_s']:>9.1f} {f['baseline_writes_per_s']:>13,.0f} "
            f"{f['ratio_to_baseline']:>8.3f}" + ("" if f["complete"] else "  (cap reached)")
        )
    return "\n".join(lines)


def merge(results: dict[str, Any]) -> None:
    path = cluster.RESULTS
    merged = json.loads(path.read_text()) if path.exists() else {}
    merged["kyverno"] = results
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="1000", help="namespaces, comma-separated (grown in order)")
    p.add_argument("--cap", type=float, default=600, help="seconds before giving up on a step")
    p.add_argument("--concurrency", type=int, default=16, help="the baseline's concurrency")
    p.add_argument("--keep", action="store_true", help="leave the control plane running")
    p.add_argument("--work", type=pathlib.Path, default=None)
    args = p.parse_args(argv)
    work = args.work or pathlib.Path("/tmp") / f"settings-bench-kyverno-{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    print(f"kyverno bench: logs in {work}", file=sys.stderr)
    results = asyncio.run(run(args, work))
    print(table(results))
    merge(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
