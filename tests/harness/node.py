"""A real node for the local control plane: containerd, kubelet, a pod network.

Opt-in part of ``controlplane.py up --node`` (``make cluster-up``). Standard
library only, like controlplane.py. Everything is local: the pod network is a
bridge the harness creates (``scnode0``) with no default route and no NAT, and
pods reach the API server on the ``kubernetes`` Service address (10.96.0.1:443)
kube-proxy (iptables mode) routes every Service's ClusterIP to its ready
endpoints; the ``kubernetes`` Service's one endpoint is a TCP forwarder on the
node address to the loopback API server. The host forwards from the bridge to
the bridge only.

The kubelet changes host state that ``stop`` undoes, in this order: pods,
kubelet, remaining containers (by cgroup), containerd and its shims, mounts
under the node's directories, the bridge and its addresses, the pod cgroups,
iptables chains and rules it added, sysctls it changed. Only one node runs per
machine (ports 10250/10248, the bridge, the cgroup root): a machine-wide lock
says which tree holds it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

NODE_NAME = "scnode"
BRIDGE = "scnode0"
POD_SUBNET = "10.244.0.0/24"
NODE_IP = "10.244.0.1"
SERVICE_RANGE = "10.96.0.0/16"
KUBERNETES_SERVICE_IP = "10.96.0.1"
KUBERNETES_ENDPOINTS = "kubernetes-scnode"
# A DNS responder for the cluster domain: in-cluster clients (kopf's
# service-account login among them) call https://kubernetes.default.svc.
CLUSTER_DNS_IP = "10.96.0.10"
CLUSTER_DOMAIN = "cluster.local"
CGROUP_ROOT = "settings-controller-node"
PAUSE_IMAGE = "localhost/settings-controller-test/pause:1"
NODE_USER = f"system:node:{NODE_NAME}"
NODE_GROUPS = ("system:nodes",)
SCHEDULER_USER = "system:kube-scheduler"
# Set by the kubelet; ip_forward and send_redirects by start (kube-proxy's
# DNAT to a pod is routed by the host). stop restores the values recorded
# before start.
KUBELET_SYSCTLS = (
    "vm.overcommit_memory",
    "kernel.panic",
    "kernel.panic_on_oops",
    "net.ipv4.ip_forward",
    "net.ipv4.conf.all.send_redirects",
)
# kube-proxy's identity: the bootstrap ClusterRoleBinding system:node-proxier
# grants it Services, EndpointSlices and Nodes (the Node authorizer gives the
# kubelet's identity no EndpointSlices).
PROXY_USER = "system:kube-proxy"
PROXY_HEALTHZ = "127.0.0.1:10256"
PROXY_METRICS = "127.0.0.1:10249"
# br_netfilter makes bridged replies (pod to pod) pass conntrack, so a
# DNATed connection is un-NATed without masquerading; without it kube-proxy
# masquerades every Service connection (the server then sees the node IP).
BRIDGE_NF = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")
FORWARD_GUARD_COMMENT = "settings-controller node: forward only from the pod bridge to it"
IPTABLES = ("iptables", "ip6tables")
# Written by the kubelet or the runtime whatever their configured directories;
# removed by stop only if they did not exist before start.
HOST_PATHS = ("/var/lib/kubelet", "/var/log/containers", "/var/log/pods", "/var/lib/cni")
IPTABLES_TABLES = ("filter", "nat", "mangle")
# Names the tree whose node runs (and its containerd pid).
MACHINE_CLAIM = Path("/run/settings-controller-node.json")
# Tools from the separate Go module tests/harness/node (see its go.mod).
NODE_TOOLS = {
    "containerd": "github.com/containerd/containerd/v2/cmd/containerd",
    "ctr": "github.com/containerd/containerd/v2/cmd/ctr",
    "containerd-shim-runc-v2": "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2",
    "cni/bridge": "github.com/containernetworking/plugins/plugins/main/bridge",
    "cni/host-local": "github.com/containernetworking/plugins/plugins/ipam/host-local",
    "cni/loopback": "github.com/containernetworking/plugins/plugins/main/loopback",
    "pause": "./pause",
}
# Tools from tests/harness's own module (same Kubernetes version as the harness).
KUBE_TOOLS = {
    "kubelet": "k8s.io/kubernetes/cmd/kubelet",
    "kube-scheduler": "k8s.io/kubernetes/cmd/kube-scheduler",
    "kube-proxy": "k8s.io/kubernetes/cmd/kube-proxy",
}
NODE_LOGS = (
    "containerd",
    "kubelet",
    "kube-scheduler",
    "kube-proxy",
    "apiserver-forwarder",
    "cluster-dns",
)


class NodeError(RuntimeError):
    """The node could not be built, started or stopped."""


@dataclass(frozen=True)
class NodePaths:
    root: Path  # .cluster

    @property
    def dir(self) -> Path:
        return self.root / "node"

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    @property
    def cni_bin(self) -> Path:
        return self.bin / "cni"

    @property
    def cni_conf(self) -> Path:
        return self.dir / "cni"

    @property
    def containerd_root(self) -> Path:
        return self.dir / "containerd"

    @property
    def containerd_state(self) -> Path:
        return self.dir / "containerd-state"

    @property
    def containerd_sock(self) -> Path:
        return self.dir / "containerd.sock"

    @property
    def kubelet_root(self) -> Path:
        return self.dir / "kubelet"

    @property
    def pids(self) -> Path:
        return self.dir / "pids.json"

    @property
    def host_state(self) -> Path:
        """What the host looked like before the node started (for stop)."""
        return self.dir / "host-before.json"

    def log(self, name: str) -> Path:
        return self.root / f"{name}.log"

    @property
    def logs(self) -> list[Path]:
        return [self.log(n) for n in NODE_LOGS]


def _log(msg: str) -> None:
    import sys

    print(f"node: {msg}", file=sys.stderr, flush=True)


def _run(
    *cmd: str | Path,
    check: bool = True,
    env: dict[str, str] | None = None,
    input: str | None = None,
) -> str:
    proc = subprocess.run(
        [str(c) for c in cmd],
        capture_output=True,
        text=True,
        check=False,
        input=input,
        stdin=subprocess.DEVNULL if input is None else None,
        env=env,
    )
    if check and proc.returncode != 0:
        raise NodeError(f"{' '.join(map(str, cmd))}: exit {proc.returncode}\n{proc.stderr}")
    return proc.stdout


# --- build ---------------------------------------------------------------------


def build(paths: NodePaths, go: str, ldflags: str, cluster_module: Path) -> None:
    """Build kubelet and kube-scheduler (harness module) and the runtime pieces
    (node module); Go's build cache makes a second build a relink at most."""
    env = dict(os.environ)
    env.setdefault("GOTOOLCHAIN", "local")
    env_static = dict(env, CGO_ENABLED="0")
    paths.cni_bin.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    for name, pkg in KUBE_TOOLS.items():
        _log(f"building {name}")
        subprocess.run(
            [go, "build", "-trimpath", f"-ldflags={ldflags}", "-o", str(paths.bin / name), pkg],
            cwd=cluster_module,
            env=env,
            check=True,
        )
    for name, pkg in NODE_TOOLS.items():
        _log(f"building {name}")
        subprocess.run(
            [go, "build", "-trimpath", "-ldflags=-s -w", "-o", str(paths.bin / name), pkg],
            cwd=cluster_module / "node",
            # The sandbox program must be static: the pause image holds nothing else.
            env=env_static,
            check=True,
        )
    _log(f"node binaries built in {time.monotonic() - started:.1f}s")


# --- host state ------------------------------------------------------------------


def _iptables_snapshot() -> dict[str, dict[str, list[str]]]:
    snap: dict[str, dict[str, list[str]]] = {}
    for tool in IPTABLES:
        if shutil.which(tool) is None:
            continue
        snap[tool] = {}
        for table in IPTABLES_TABLES:
            proc = subprocess.run(
                [tool, "-w", "-t", table, "-S"], capture_output=True, text=True, check=False
            )
            snap[tool][table] = proc.stdout.splitlines() if proc.returncode == 0 else []
    return snap


def _sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name.replace(".", "/")


def _record_host(paths: NodePaths) -> None:
    state = {
        "sysctls": {n: _sysctl_path(n).read_text().strip() for n in KUBELET_SYSCTLS},
        "iptables": _iptables_snapshot(),
        "absent": [p for p in HOST_PATHS if not os.path.lexists(p)],
    }
    paths.host_state.write_text(json.dumps(state, indent=1) + "\n")


def _restore_iptables(before: dict[str, dict[str, list[str]]]) -> None:
    """Delete the rules and chains that appeared since the snapshot."""
    after = _iptables_snapshot()
    for tool, tables in after.items():
        for table, lines in tables.items():
            old = set(before.get(tool, {}).get(table, []))
            new_chains = []
            for line in lines:
                if line in old:
                    continue
                # Comments are quoted ("kubernetes service portals").
                parts = shlex.split(line)
                if parts[:1] == ["-A"]:
                    subprocess.run(
                        [tool, "-w", "-t", table, "-D", *parts[1:]],
                        capture_output=True,
                        check=False,
                    )
                elif parts[:1] == ["-N"]:
                    new_chains.append(parts[1])
            for chain in new_chains:
                subprocess.run([tool, "-w", "-t", table, "-F", chain], capture_output=True)
            for chain in new_chains:
                subprocess.run([tool, "-w", "-t", table, "-X", chain], capture_output=True)


def _restore_host(paths: NodePaths) -> None:
    try:
        state = json.loads(paths.host_state.read_text())
    except (OSError, ValueError):
        return
    _restore_iptables(state.get("iptables", {}))
    for path in state.get("absent", []):
        _unmount_under(Path(path))
        with contextlib.suppress(OSError):
            shutil.rmtree(path)
    for name, value in state.get("sysctls", {}).items():
        with contextlib.suppress(OSError):
            _sysctl_path(name).write_text(value + "\n")


# --- network -------------------------------------------------------------------


def _setup_bridge() -> None:
    if subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True).returncode != 0:
        _run("ip", "link", "add", BRIDGE, "type", "bridge")
    _run("ip", "addr", "replace", f"{NODE_IP}/24", "dev", BRIDGE)
    _run("ip", "addr", "replace", f"{CLUSTER_DNS_IP}/32", "dev", BRIDGE)
    _run("ip", "link", "set", BRIDGE, "up")
    # The service range to the bridge too: the host's own connections to a
    # ClusterIP are DNATed there, and a pod's to an address kube-proxy does not
    # know stays on the bridge (unanswered) instead of following the host's
    # default route off the machine.
    _run("ip", "route", "replace", SERVICE_RANGE, "dev", BRIDGE, "src", NODE_IP)


def _enable_forwarding() -> None:
    """ip_forward on, but the host forwards nothing that does not both enter
    and leave through the pod bridge (mangle runs before kube-proxy's filter
    rules, which accept established and masqueraded traffic)."""
    for rule in (["!", "-i", BRIDGE], ["!", "-o", BRIDGE]):
        spec = ["FORWARD", *rule, "-m", "comment", "--comment", FORWARD_GUARD_COMMENT, "-j", "DROP"]
        if subprocess.run(
            ["iptables", "-w", "-t", "mangle", "-C", *spec], capture_output=True
        ).returncode:
            _run("iptables", "-w", "-t", "mangle", "-A", *spec)
    # A DNATed packet leaves through the bridge it came in by: without this
    # the host tells the pod (ICMP redirect) to send to the ClusterIP on-link,
    # where nothing answers, and its rate limit swallows kube-proxy's REJECTs.
    for name in ("net.ipv4.conf.all.send_redirects", f"net.ipv4.conf.{BRIDGE}.send_redirects"):
        _sysctl_path(name).write_text("0\n")
    _sysctl_path("net.ipv4.ip_forward").write_text("1\n")


def _remove_bridge() -> None:
    subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True, check=False)


def _write_cni_conf(paths: NodePaths) -> None:
    paths.cni_conf.mkdir(parents=True, exist_ok=True)
    conf = {
        "cniVersion": "1.0.0",
        "name": "settings-controller-test",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                # No gateway, no masquerade, no default route: nothing a pod
                # sends can leave the machine.
                "isGateway": False,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(paths.dir / "cni-ipam"),
                    "ranges": [[{"subnet": POD_SUBNET, "gateway": NODE_IP}]],
                    "routes": [{"dst": SERVICE_RANGE, "gw": NODE_IP}],
                },
            },
            {"type": "loopback"},
        ],
    }
    (paths.cni_conf / "10-settings-controller.conflist").write_text(json.dumps(conf, indent=1))


# --- configuration ---------------------------------------------------------------


def _containerd_config(paths: NodePaths) -> str:
    return f"""version = 3
root = "{paths.containerd_root}"
state = "{paths.containerd_state}"
disabled_plugins = ["io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{paths.containerd_sock}"

[ttrpc]
  address = "{paths.containerd_sock}.ttrpc"

[plugins."io.containerd.cri.v1.images".pinned_images]
  sandbox = "{PAUSE_IMAGE}"

[plugins."io.containerd.cri.v1.runtime"]
  # Root here lacks CAP_SYS_RESOURCE: runc cannot lower oom_score_adj, and
  # every sandbox would fail with "can't get final child's PID from pipe".
  restrict_oom_score_adj = true
  disable_apparmor = true
  # Network namespaces under containerd's state dir, not /run/netns.
  netns_mounts_under_state_dir = true

[plugins."io.containerd.cri.v1.runtime".cni]
  bin_dirs = ["{paths.cni_bin}"]
  conf_dir = "{paths.cni_conf}"

[plugins."io.containerd.cri.v1.runtime".containerd]
  default_runtime_name = "runc"

[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
  BinaryName = "{shutil.which("runc") or "/usr/sbin/runc"}"
  SystemdCgroup = false
"""


def _kubelet_config(paths: NodePaths, ca_file: Path) -> str:
    endpoint = f"unix://{paths.containerd_sock}"
    return json.dumps(
        {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            # This kind of machine has cgroup v1 hierarchies only.
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": f"/{CGROUP_ROOT}",
            "failSwapOn": False,
            "containerRuntimeEndpoint": endpoint,
            "imageServiceEndpoint": endpoint,
            "address": NODE_IP,
            "port": 10250,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": 10248,
            "podLogsDir": str(paths.dir / "pod-logs"),
            # Only the cluster's resolver in pods, never the host's.
            "resolvConf": "",
            "clusterDNS": [CLUSTER_DNS_IP],
            "clusterDomain": CLUSTER_DOMAIN,
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(ca_file)},
            },
            "authorization": {"mode": "Webhook"},
            # A test machine's disk may be fuller than the defaults allow.
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
                "nodefs.inodesFree": "1%",
            },
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "registerNode": True,
            "serializeImagePulls": False,
        },
        indent=1,
    )


def _kube_proxy_config(paths: NodePaths, kubeconfig: Path) -> str:
    conntrack_untouched = {
        # 0: leave the machine's conntrack table size and timeouts alone.
        "maxPerCore": 0,
        "min": 0,
        "tcpEstablishedTimeout": "0s",
        "tcpCloseWaitTimeout": "0s",
    }
    masquerade_all = not (BRIDGE_NF.exists() and BRIDGE_NF.read_text().strip() == "1")
    return json.dumps(
        {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(kubeconfig)},
            "mode": "iptables",
            "clusterCIDR": POD_SUBNET,
            "detectLocalMode": "ClusterCIDR",
            "hostnameOverride": NODE_NAME,
            # The node IP (kube-proxy's node address); nothing listens on it.
            "bindAddress": NODE_IP,
            "healthzBindAddress": PROXY_HEALTHZ,
            "metricsBindAddress": PROXY_METRICS,
            # NodePorts on the bridge address only, never on the machine's
            # other addresses or on loopback (that would set route_localnet).
            "nodePortAddresses": [f"{NODE_IP}/32"],
            "iptables": {"masqueradeAll": masquerade_all, "localhostNodePorts": False},
            "conntrack": conntrack_untouched,
            # Root here cannot lower it (no CAP_SYS_RESOURCE).
            "oomScoreAdj": 0,
        },
        indent=1,
    )


def _kubernetes_endpoints() -> dict[str, object]:
    """The kubernetes Service's endpoint: the forwarder on the node address.

    The API server listens on 127.0.0.1 only and, run with
    --endpoint-reconciler-type=none (it starts before and without a node),
    writes no endpoints for its Service; an EndpointSlice may not name a
    loopback address. So the forwarder stands in for the API server at the
    node address, and kube-proxy routes 10.96.0.1:443 there like any Service.
    """
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": KUBERNETES_ENDPOINTS,
            "namespace": "default",
            "labels": {
                "kubernetes.io/service-name": "kubernetes",
                "endpointslice.kubernetes.io/managed-by": "settings-controller-test-node",
            },
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": [NODE_IP], "conditions": {"ready": True}}],
        "ports": [{"name": "https", "port": 443, "protocol": "TCP"}],
    }


def _proxy_synced() -> bool:
    """kube-proxy's /healthz answers 200 once its first sync is done."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://{PROXY_HEALTHZ}/healthz", timeout=2) as resp:
            return bool(resp.status == 200)
    except (OSError, urllib.error.URLError):
        return False


# --- processes -------------------------------------------------------------------


# The daemons this process started: kept so that stop() reaps them through
# their Popen (no "still running" ResourceWarning when a test session holds them).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def _spawn(paths: NodePaths, name: str, cmd: list[str], env: dict[str, str]) -> int:
    with open(paths.log(name), "ab") as out:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=paths.dir,
            env=env,
            start_new_session=True,
        )
    _CHILDREN[proc.pid] = proc
    return proc.pid


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _stop(pid: int, grace: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    child = _CHILDREN.pop(pid, None)
    if child is not None:
        child.wait()
        return
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, 0)


def _save_pids(paths: NodePaths, pids: dict[str, int]) -> None:
    paths.pids.write_text(json.dumps(pids) + "\n")


def _load_pids(paths: NodePaths) -> dict[str, int]:
    try:
        return {k: int(v) for k, v in json.loads(paths.pids.read_text()).items()}
    except (OSError, ValueError):
        return {}


def _wait(
    what: str, check: object, timeout: float, paths: NodePaths, log_name: str, pid: int
) -> None:
    assert callable(check)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid):
        if check():
            return
        time.sleep(0.25)
    try:
        lines = paths.log(log_name).read_text(errors="replace").splitlines()[-30:]
    except OSError:
        lines = []
    why = f"not ready after {timeout:.0f}s" if _alive(pid) else f"{log_name} exited"
    raise NodeError(f"{what}: {why}\n" + "\n".join(lines))


def _runtime_env(paths: NodePaths) -> dict[str, str]:
    env = dict(os.environ)
    # The built shim first on PATH, or a distribution's older one is picked.
    env["PATH"] = f"{paths.bin}:{env.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
    return env


def ctr(paths: NodePaths, *args: str) -> str:
    return _run(
        paths.bin / "ctr", "--address", paths.containerd_sock, "--namespace", "k8s.io", *args
    )


def import_image(paths: NodePaths, archive: Path) -> None:
    """Load an image archive (docker-archive or oci-archive) into the node."""
    ctr(paths, "images", "import", "--all-platforms", str(archive))


# --- machine claim -------------------------------------------------------------


def _claim(paths: NodePaths) -> None:
    """One node per machine (ports 10250/10248, the bridge, the cgroup root)."""
    try:
        holder = json.loads(MACHINE_CLAIM.read_text())
    except (OSError, ValueError):
        holder = None
    if holder and holder.get("root") != str(paths.root) and _alive(int(holder.get("pid", 0))):
        raise NodeError(f"a node already runs on this machine, from {holder['root']}")
    MACHINE_CLAIM.write_text(json.dumps({"root": str(paths.root), "pid": os.getpid()}) + "\n")


def _set_claim_pid(paths: NodePaths, pid: int) -> None:
    MACHINE_CLAIM.write_text(json.dumps({"root": str(paths.root), "pid": pid}) + "\n")


def _release(paths: NodePaths) -> None:
    try:
        holder = json.loads(MACHINE_CLAIM.read_text())
    except (OSError, ValueError):
        return
    if holder.get("root") == str(paths.root):
        MACHINE_CLAIM.unlink(missing_ok=True)


# --- start -----------------------------------------------------------------------


def _pause_archive(paths: NodePaths) -> Path:
    """The sandbox image: the static pause program alone, built with buildah."""
    archive = paths.root / "image" / "pause.tar"
    if archive.exists() and archive.stat().st_mtime >= (paths.bin / "pause").stat().st_mtime:
        return archive
    try:
        from .image import buildah_cmd
    except ImportError:  # run as a script
        from image import buildah_cmd  # type: ignore[no-redef]

    archive.parent.mkdir(parents=True, exist_ok=True)
    c = _run(*buildah_cmd("from", "scratch")).strip()
    try:
        _run(*buildah_cmd("copy", "--quiet", c, str(paths.bin / "pause"), "/pause"))
        _run(*buildah_cmd("config", "--entrypoint", '["/pause"]', "--user", "65535:65535", c))
        _run(*buildah_cmd("commit", "--quiet", c, PAUSE_IMAGE))
    finally:
        _run(*buildah_cmd("rm", c), check=False)
    archive.unlink(missing_ok=True)
    _run(*buildah_cmd("push", "--quiet", PAUSE_IMAGE, f"docker-archive:{archive}:{PAUSE_IMAGE}"))
    return archive


def _kubectl(
    kubectl: Path, kubeconfig: Path, *args: str, check: bool = True, input: str | None = None
) -> str:
    return _run(kubectl, "--kubeconfig", kubeconfig, *args, check=check, input=input)


def _node_ready(kubectl: Path, kubeconfig: Path) -> bool:
    out = _kubectl(
        kubectl,
        kubeconfig,
        "get",
        "node",
        NODE_NAME,
        "-o",
        'jsonpath={.status.conditions[?(@.type=="Ready")].status}',
        check=False,
    )
    return out.strip() == "True"


def start(
    paths: NodePaths,
    *,
    server: str,
    ca_file: Path,
    kubelet_kubeconfig: Path,
    scheduler_kubeconfig: Path,
    proxy_kubeconfig: Path,
    admin_kubeconfig: Path,
    kubectl: Path,
    timeout: float = 120.0,
) -> None:
    """Start containerd, kubelet, kube-scheduler, kube-proxy, the API forwarder
    and the cluster DNS."""
    _claim(paths)
    for p in paths.logs:
        p.unlink(missing_ok=True)
    paths.dir.mkdir(parents=True, exist_ok=True)
    if not paths.host_state.exists():
        _record_host(paths)
    _write_cni_conf(paths)
    _setup_bridge()
    _enable_forwarding()
    env = _runtime_env(paths)
    pids: dict[str, int] = {}
    started = time.monotonic()

    config = paths.dir / "containerd.toml"
    config.write_text(_containerd_config(paths))
    pids["containerd"] = _spawn(
        paths, "containerd", [str(paths.bin / "containerd"), "--config", str(config)], env
    )
    _save_pids(paths, pids)
    _set_claim_pid(paths, pids["containerd"])
    _wait("containerd", paths.containerd_sock.exists, 30, paths, "containerd", pids["containerd"])
    import_image(paths, _pause_archive(paths))

    api_port = server.rsplit(":", 1)[1]
    pids["apiserver-forwarder"] = _spawn(
        paths,
        "apiserver-forwarder",
        [
            "socat",
            f"TCP-LISTEN:443,bind={NODE_IP},reuseaddr,fork",
            f"TCP:127.0.0.1:{api_port}",
        ],
        env,
    )
    _save_pids(paths, pids)
    # kubernetes.default.svc[.cluster.local] and nothing else: every other
    # name in the cluster domain is NXDOMAIN, and there is no upstream.
    pids["cluster-dns"] = _spawn(
        paths,
        "cluster-dns",
        [
            "dnsmasq",
            "--keep-in-foreground",
            "--log-facility=-",
            "--pid-file=",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            f"--listen-address={CLUSTER_DNS_IP}",
            f"--local=/{CLUSTER_DOMAIN}/",
            f"--address=/kubernetes.default.svc.{CLUSTER_DOMAIN}/{KUBERNETES_SERVICE_IP}",
        ],
        env,
    )
    _save_pids(paths, pids)
    _make_cgroups()
    kubelet_config = paths.dir / "kubelet.json"
    kubelet_config.write_text(_kubelet_config(paths, ca_file))
    pids["kubelet"] = _spawn(
        paths,
        "kubelet",
        [
            str(paths.bin / "kubelet"),
            f"--config={kubelet_config}",
            f"--kubeconfig={kubelet_kubeconfig}",
            f"--root-dir={paths.kubelet_root}",
            f"--cert-dir={paths.kubelet_root / 'pki'}",
            f"--node-ip={NODE_IP}",
            f"--hostname-override={NODE_NAME}",
            "--v=2",
        ],
        env,
    )
    _save_pids(paths, pids)
    pids["kube-scheduler"] = _spawn(
        paths,
        "kube-scheduler",
        [
            str(paths.bin / "kube-scheduler"),
            f"--kubeconfig={scheduler_kubeconfig}",
            f"--authentication-kubeconfig={scheduler_kubeconfig}",
            f"--authorization-kubeconfig={scheduler_kubeconfig}",
            "--bind-address=127.0.0.1",
            "--secure-port=0",
            "--leader-elect=false",
        ],
        env,
    )
    _save_pids(paths, pids)
    _kubectl(
        kubectl, admin_kubeconfig, "apply", "-f", "-", input=json.dumps(_kubernetes_endpoints())
    )
    proxy_config = paths.dir / "kube-proxy.json"
    proxy_config.write_text(_kube_proxy_config(paths, proxy_kubeconfig))
    # Started with the kubelet: it waits for its Node object, then syncs.
    pids["kube-proxy"] = _spawn(
        paths,
        "kube-proxy",
        [str(paths.bin / "kube-proxy"), f"--config={proxy_config}", "--v=2"],
        env,
    )
    _save_pids(paths, pids)
    _wait(
        f"node {NODE_NAME}",
        lambda: _node_ready(kubectl, admin_kubeconfig),
        timeout,
        paths,
        "kubelet",
        pids["kubelet"],
    )
    _wait("kube-proxy", _proxy_synced, timeout, paths, "kube-proxy", pids["kube-proxy"])
    _log(f"node {NODE_NAME} ready in {time.monotonic() - started:.1f}s ({NODE_IP})")


def running(paths: NodePaths) -> bool:
    pids = _load_pids(paths)
    return bool(pids) and all(_alive(pid) for pid in pids.values())


# --- stop ------------------------------------------------------------------------


def _cgroup_dirs() -> list[Path]:
    base = Path("/sys/fs/cgroup")
    return [d / CGROUP_ROOT for d in sorted(base.iterdir()) if (d / CGROUP_ROOT).is_dir()]


def _make_cgroups() -> None:
    """The kubelet's cgroupRoot must exist in every hierarchy (cgroup v1)."""
    for hierarchy in sorted(Path("/sys/fs/cgroup").iterdir()):
        if not (hierarchy / "cgroup.procs").exists():
            continue
        top = hierarchy / CGROUP_ROOT
        top.mkdir(exist_ok=True)
        # A new cpuset cgroup starts with no CPUs and no memory nodes.
        for name in ("cpuset.cpus", "cpuset.mems"):
            if (top / name).exists() and not (top / name).read_text().strip():
                (top / name).write_text((hierarchy / name).read_text())


def _kill_cgroups() -> None:
    """Kill what still runs in the pod cgroups, then remove them bottom-up."""
    for _ in range(20):
        pids: set[int] = set()
        for top in _cgroup_dirs():
            for procs in top.rglob("cgroup.procs"):
                with contextlib.suppress(OSError):
                    pids.update(int(p) for p in procs.read_text().split())
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
    for top in _cgroup_dirs():
        dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
        for d in [*dirs, top]:
            with contextlib.suppress(OSError):
                d.rmdir()


def _shim_pids(paths: NodePaths) -> list[int]:
    sock = str(paths.containerd_sock).encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline[0].endswith(b"containerd-shim-runc-v2") and any(
            a.startswith(sock) for a in cmdline
        ):
            found.append(int(proc.name))
    return found


def _unmount_under(*roots: Path) -> None:
    prefixes = tuple(str(r) + "/" for r in roots) + tuple(str(r) for r in roots)
    for _ in range(5):
        points = []
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            mount_point = line.split()[4].replace("\\040", " ")
            if mount_point.startswith(prefixes):
                points.append(mount_point)
        if not points:
            return
        for point in sorted(set(points), key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def _claimed_by_other(paths: NodePaths) -> str | None:
    """The tree whose node runs on this machine, if it is not this one."""
    try:
        holder = json.loads(MACHINE_CLAIM.read_text())
    except (OSError, ValueError):
        return None
    root = str(holder.get("root", ""))
    if root and root != str(paths.root) and _alive(int(holder.get("pid", 0))):
        return root
    return None


def stop(paths: NodePaths, kubectl: Path | None, admin_kubeconfig: Path | None) -> None:
    """Stop the node and undo its changes to the host (see the module doc).

    The bridge, the pod cgroups and the iptables rules are machine-wide: when
    another tree's node holds the machine (this tree's start was refused), they
    are that node's and stay untouched."""
    other = _claimed_by_other(paths)
    if other is not None:
        _log(f"the node on this machine is {other}'s: nothing of it stopped")
        return
    pids = _load_pids(paths)
    if "kube-scheduler" in pids:
        _stop(pids.pop("kube-scheduler"), 5)
    api_up = kubectl is not None and admin_kubeconfig is not None and kubectl.exists()
    if api_up and "kubelet" in pids and _alive(pids["kubelet"]):
        assert kubectl is not None and admin_kubeconfig is not None
        # Pods first, so the kubelet tears down their volumes and sandboxes.
        _kubectl(
            kubectl,
            admin_kubeconfig,
            "delete",
            "pods",
            "--all",
            "--all-namespaces",
            "--grace-period=1",
            "--wait=false",
            "--request-timeout=10s",
            check=False,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            out = ctr(paths, "tasks", "ls", "-q") if paths.containerd_sock.exists() else ""
            if not out.strip():
                break
            time.sleep(0.5)
    if api_up:
        assert kubectl is not None and admin_kubeconfig is not None
        _kubectl(
            kubectl,
            admin_kubeconfig,
            "delete",
            "endpointslice",
            "-n",
            "default",
            KUBERNETES_ENDPOINTS,
            "--ignore-not-found",
            "--request-timeout=10s",
            check=False,
        )
    # kube-proxy before the iptables restore, or it would write its rules again.
    for name in ("kubelet", "kube-proxy", "apiserver-forwarder", "cluster-dns"):
        if name in pids:
            _stop(pids.pop(name), 10)
    _kill_cgroups()
    if "containerd" in pids:
        _stop(pids.pop("containerd"), 10)
    for pid in _shim_pids(paths):
        _stop(pid, 2)
    _unmount_under(paths.dir)
    _remove_bridge()
    _kill_cgroups()
    _restore_host(paths)
    _release(paths)
    paths.pids.unlink(missing_ok=True)
    paths.host_state.unlink(missing_ok=True)
    # Keep the logs; the rest is throw-away state.
    with contextlib.suppress(OSError):
        shutil.rmtree(paths.dir)
    _log("node stopped, host state restored")
