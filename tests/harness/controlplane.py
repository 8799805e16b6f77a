"""Start, stop and find the local Kubernetes control plane used by the tests.

One implementation for ``make cluster-up``/``make cluster-down`` and for the
pytest fixtures in ``tests/harness/fixtures.py``. Standard library only: it
runs before the project's virtualenv may exist.

Layout under ``.cluster/`` (override with ``KUBE_HARNESS_DIR``)::

    bin/kube-harness            busybox binary built from tests/harness (Go)
    bin/kubectl -> kube-harness kubectl of the same Kubernetes version
    kubeconfig                  admin (group system:masters)
    kubeconfig-tenant           user "tenant", groups tenants
    kubeconfig-operator         the settings-controller ServiceAccount user
    controlplane.log            supervisor (kube-harness serve)
    etcd.log, kube-apiserver.log, kube-controller-manager.log
    state/                      pki, tokens.csv, etcd data, cluster.json, serve.pid

Usage: ``python3 tests/harness/controlplane.py up [--node]|down|status|build``
(``--node``: tests/harness/node.py adds a kubelet node).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import errno
import fcntl
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

try:
    from . import node
except ImportError:  # run as a script: python3 tests/harness/controlplane.py
    import node  # type: ignore[no-redef]

REPO_ROOT = Path(__file__).resolve().parents[2]
MODULE_DIR = Path(__file__).resolve().parent
HARNESS_NAME = "kube-harness"
# helm, for the chart tests: its own module, so its dependencies never move the harness's.
HELM_MODULE_DIR = MODULE_DIR / "helm"
HELM_PACKAGE = "helm.sh/helm/v3/cmd/helm"
# promtool, for the alert and dashboard tests (deploy/prometheus): a module of its own too.
PROMTOOL_MODULE_DIR = MODULE_DIR / "promtool"
PROMTOOL_PACKAGE = "github.com/prometheus/prometheus/cmd/promtool"

OPERATOR_NAMESPACE = "settings-controller-system"
OPERATOR_SERVICEACCOUNT = "settings-controller"
OPERATOR_USER = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_SERVICEACCOUNT}"
OPERATOR_GROUPS = (
    "system:serviceaccounts",
    f"system:serviceaccounts:{OPERATOR_NAMESPACE}",
    "system:authenticated",
)
TENANT_USER = "tenant"
TENANT_GROUPS = ("tenants", "system:authenticated")
ADMIN_USER = "admin"
ADMIN_GROUPS = ("system:masters",)
KCM_USER = "system:kube-controller-manager"
# The original list plus what Deployments on a node need (up --node); started
# always, idle while there is no node.
NODE_CONTROLLERS = (
    "garbage-collector-controller,namespace-controller,serviceaccount-controller,"
    "serviceaccount-token-controller,root-ca-certificate-publisher-controller,"
    "clusterrole-aggregation-controller,resourcequota-controller,"
    "validatingadmissionpolicy-status-controller,deployment-controller,replicaset-controller,"
    # Removes the not-ready taint the kubelet registers the node with.
    "node-lifecycle-controller,"
    # EndpointSlices for Services with a selector: what kube-proxy routes to.
    "endpointslice-controller"
)

LOG_NAMES = ("controlplane", "etcd", "kube-apiserver", "kube-controller-manager")


class ControlPlaneError(RuntimeError):
    """The control plane could not be built, started or reached."""


@dataclass
class ClusterInfo:
    """What a client needs to use a control plane."""

    server: str
    kubeconfig: Path
    tenant_kubeconfig: Path
    operator_kubeconfig: Path
    kubectl_path: Path
    log_paths: list[Path] = field(default_factory=list)
    pid: int | None = None
    # True when this call started it (and so should stop it).
    started: bool = False


def cluster_dir() -> Path:
    return Path(os.environ.get("KUBE_HARNESS_DIR", REPO_ROOT / ".cluster")).resolve()


class Paths:
    def __init__(self, root: Path | None = None) -> None:
        self.root = root or cluster_dir()
        self.bin = self.root / "bin"
        self.harness = self.bin / HARNESS_NAME
        self.kubectl = self.bin / "kubectl"
        self.state = self.root / "state"
        self.pki = self.state / "pki"
        self.tokens = self.state / "tokens.csv"
        self.kcm_kubeconfig = self.state / "controller-manager.kubeconfig"
        self.info = self.state / "cluster.json"
        self.pidfile = self.state / "serve.pid"
        self.ready = self.state / "ready"
        self.kubeconfig = self.root / "kubeconfig"
        self.tenant_kubeconfig = self.root / "kubeconfig-tenant"
        self.operator_kubeconfig = self.root / "kubeconfig-operator"
        self.lock = self.root / ".lock"
        self.users_lock = self.root / ".users"
        self.kubelet_kubeconfig = self.state / "kubelet.kubeconfig"
        self.scheduler_kubeconfig = self.state / "scheduler.kubeconfig"
        self.proxy_kubeconfig = self.state / "kube-proxy.kubeconfig"

    def log(self, name: str) -> Path:
        return self.root / f"{name}.log"

    @property
    def logs(self) -> list[Path]:
        return [self.log(n) for n in LOG_NAMES]


def log(msg: str) -> None:
    print(f"controlplane: {msg}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def locked(paths: Paths) -> Iterator[None]:
    """Serialise up/down between make, pytest and other users of the tree."""
    paths.root.mkdir(parents=True, exist_ok=True)
    with open(paths.lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class UserLease:
    """A shared flock held while a client (a pytest session) uses the cluster.

    Whoever started the control plane stops it only when no one else holds a
    lease, so that two test sessions in one tree do not pull it from under
    each other.
    """

    def __init__(self, paths: Paths) -> None:
        paths.root.mkdir(parents=True, exist_ok=True)
        self._fh = open(paths.users_lock, "a")  # noqa: SIM115 - held until release()
        fcntl.flock(self._fh, fcntl.LOCK_SH)

    def release(self) -> bool:
        """Give up the lease; True if no other client holds one."""
        try:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            try:
                fcntl.flock(self._fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            return True
        finally:
            self._fh.close()


# --- build -------------------------------------------------------------------


def go_binary() -> str | None:
    return shutil.which(os.environ.get("GO", "go"))


def kubernetes_version() -> str:
    """The k8s.io/kubernetes version pinned in tests/harness/go.mod."""
    text = (MODULE_DIR / "go.mod").read_text()
    m = re.search(r"^\s*k8s\.io/kubernetes\s+(v\d+\.\d+\.\d+\S*)", text, re.MULTILINE)
    if m is None:
        raise ControlPlaneError("no k8s.io/kubernetes requirement in tests/harness/go.mod")
    return m.group(1)


def ldflags() -> str:
    """-ldflags as Kubernetes' own build sets them (hack/lib/version.sh), minus
    the build date and commit, so that the link stays cached."""
    version = kubernetes_version()
    major, minor = version.lstrip("v").split(".")[:2]
    flags = ["-s", "-w"]
    for pkg in ("k8s.io/client-go/pkg/version", "k8s.io/component-base/version"):
        for key, value in (
            ("gitVersion", version),
            ("gitMajor", major),
            ("gitMinor", minor),
            ("gitTreeState", "clean"),
        ):
            flags.append(f"-X {pkg}.{key}={value}")
    return " ".join(flags)


def build(paths: Paths | None = None) -> Path:
    """Build the harness into .cluster/bin (Go's build cache makes a rebuild quick)."""
    paths = paths or Paths()
    go = go_binary()
    if go is None:
        raise ControlPlaneError("go not found on PATH: it is needed to build tests/harness")
    paths.bin.mkdir(parents=True, exist_ok=True)
    cmd = [
        go,
        "build",
        "-trimpath",
        f"-ldflags={ldflags()}",
        "-o",
        str(paths.harness),
        ".",
    ]
    log(f"building {paths.harness} (go build in {MODULE_DIR})")
    started = time.monotonic()
    env = dict(os.environ)
    # The module's go.mod pins go 1.26.0: never fetch another toolchain.
    env.setdefault("GOTOOLCHAIN", "local")
    proc = subprocess.run(cmd, cwd=MODULE_DIR, env=env, check=False)
    if proc.returncode != 0:
        raise ControlPlaneError(f"go build failed with exit code {proc.returncode}")
    log(f"built in {time.monotonic() - started:.1f}s")
    if paths.kubectl.is_symlink() or paths.kubectl.exists():
        paths.kubectl.unlink()
    paths.kubectl.symlink_to(HARNESS_NAME)
    return paths.harness


def build_helm(paths: Paths | None = None) -> Path:
    """Build helm (``helm.sh/helm/v3/cmd/helm``, the ``tool`` of its own module in
    tests/harness/helm, so the harness's go.mod is untouched) into .cluster/bin/helm."""
    return _build_tool(paths or Paths(), "helm", HELM_MODULE_DIR, HELM_PACKAGE)


def build_promtool(paths: Paths | None = None) -> Path:
    """Build promtool (``github.com/prometheus/prometheus/cmd/promtool``, the ``tool`` of
    its own module in tests/harness/promtool) into .cluster/bin/promtool."""
    return _build_tool(paths or Paths(), "promtool", PROMTOOL_MODULE_DIR, PROMTOOL_PACKAGE)


def _build_tool(paths: Paths, name: str, module_dir: Path, package: str) -> Path:
    go = go_binary()
    if go is None:
        raise ControlPlaneError(f"go not found on PATH: it is needed to build {name}")
    paths.bin.mkdir(parents=True, exist_ok=True)
    target = paths.bin / name
    cmd = [go, "build", "-trimpath", "-ldflags=-s -w", "-o", str(target), package]
    log(f"building {target} (go build in {module_dir})")
    started = time.monotonic()
    env = dict(os.environ)
    env.setdefault("GOTOOLCHAIN", "local")
    proc = subprocess.run(cmd, cwd=module_dir, env=env, check=False)
    if proc.returncode != 0:
        raise ControlPlaneError(f"go build of {name} failed with exit code {proc.returncode}")
    log(f"built in {time.monotonic() - started:.1f}s")
    return target


def build_node(paths: Paths) -> None:
    """kubelet, kube-scheduler, kube-proxy, containerd, CNI plugins and pause (node.py)."""
    go = go_binary()
    if go is None:
        raise ControlPlaneError("go not found on PATH: it is needed to build the node")
    try:
        node.build(_node_paths(paths), go, ldflags(), MODULE_DIR)
    except subprocess.CalledProcessError as e:
        raise ControlPlaneError(f"node build failed: {e}") from e


# --- running instance ----------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    if not any(arg.endswith(HARNESS_NAME.encode()) for arg in cmdline[:1]):
        return False
    if b"serve" not in cmdline:
        return False
    # A zombie still has /proc/<pid>; its state letter is Z.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _read_pid(paths: Paths) -> int | None:
    try:
        return int(paths.pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def running(paths: Paths | None = None) -> ClusterInfo | None:
    """The control plane in .cluster if it is running and ready, else None."""
    paths = paths or Paths()
    pid = _read_pid(paths)
    if pid is None or not _pid_alive(pid) or not paths.ready.exists():
        return None
    try:
        data = json.loads(paths.info.read_text())
    except (OSError, ValueError):
        return None
    info = _info(paths, data["server"], pid)
    try:
        _check_ready(paths, info.server)
    except ControlPlaneError:
        return None
    return info


def _info(paths: Paths, server: str, pid: int | None, started: bool = False) -> ClusterInfo:
    return ClusterInfo(
        server=server,
        kubeconfig=paths.kubeconfig,
        tenant_kubeconfig=paths.tenant_kubeconfig,
        operator_kubeconfig=paths.operator_kubeconfig,
        kubectl_path=paths.kubectl,
        log_paths=[p for p in paths.logs if p.exists()],
        pid=pid,
        started=started,
    )


# --- start ---------------------------------------------------------------------


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def kubeconfig_yaml(
    server: str, ca_data: str | None, ca_file: Path | None, user: str, token: str
) -> str:
    if ca_data is not None:
        ca_line = f"    certificate-authority-data: {ca_data}\n"
    else:
        ca_line = f"    certificate-authority: {ca_file}\n"
    return (
        "apiVersion: v1\n"
        "kind: Config\n"
        "clusters:\n"
        "- name: settings-controller-test\n"
        "  cluster:\n"
        f"    server: {server}\n"
        f"{ca_line}"
        "users:\n"
        f"- name: {user}\n"
        "  user:\n"
        f"    token: {token}\n"
        "contexts:\n"
        f"- name: {user}@settings-controller-test\n"
        "  context:\n"
        "    cluster: settings-controller-test\n"
        f"    user: {user}\n"
        "    namespace: default\n"
        f"current-context: {user}@settings-controller-test\n"
    )


def _write(path: Path, text: str, mode: int = 0o600) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    tmp.replace(path)


def _token_line(token: str, user: str, groups: tuple[str, ...]) -> str:
    line = f"{token},{user},{user}"
    if groups:
        line += ',"' + ",".join(groups) + '"'
    return line + "\n"


def _ssl_context(paths: Paths) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(paths.pki / "ca.crt"))


def _admin_token(paths: Paths) -> str:
    for line in paths.tokens.read_text().splitlines():
        parts = line.split(",")
        if len(parts) >= 2 and parts[1] == ADMIN_USER:
            return parts[0]
    raise ControlPlaneError(f"no admin token in {paths.tokens}")


def api_get(paths: Paths, server: str, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    req = urllib.request.Request(
        server + path, headers={"Authorization": f"Bearer {_admin_token(paths)}"}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=_ssl_context(paths)) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.read()
    except (urllib.error.URLError, OSError) as e:
        raise ControlPlaneError(f"GET {server}{path}: {e}") from e


def _check_ready(paths: Paths, server: str) -> None:
    status, body = api_get(paths, server, "/readyz")
    if status != 200:
        raise ControlPlaneError(f"/readyz: {status} {body[:500]!r}")
    # The serviceaccount controller creating "default" shows the
    # controller-manager is up and acting on the API.
    status, body = api_get(paths, server, "/api/v1/namespaces/default/serviceaccounts/default")
    if status != 200:
        raise ControlPlaneError(f"controller-manager not acting yet: {status} {body[:200]!r}")


def tail(path: Path, lines: int = 40) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


def logs_tail(paths: Paths, lines: int = 40) -> str:
    out = []
    for p in paths.logs:
        text = tail(p, lines)
        if text:
            out.append(f"==> {p} <==\n{text}")
    return "\n".join(out)


def _start_once(paths: Paths, timeout: float, serve_args: tuple[str, ...] = ()) -> ClusterInfo:
    if paths.state.exists():
        shutil.rmtree(paths.state)
    paths.state.mkdir(parents=True, mode=0o700)
    for p in paths.logs:
        p.unlink(missing_ok=True)

    api_port, etcd_port, peer_port = free_ports(3)
    server = f"https://127.0.0.1:{api_port}"
    names = ("admin", "tenant", "operator", "kcm", "node", "scheduler", "proxy")
    tokens = {name: secrets.token_urlsafe(32) for name in names}
    lines = (
        _token_line(tokens["admin"], ADMIN_USER, ADMIN_GROUPS)
        + _token_line(tokens["tenant"], TENANT_USER, TENANT_GROUPS)
        + _token_line(tokens["operator"], OPERATOR_USER, OPERATOR_GROUPS)
        + _token_line(tokens["kcm"], KCM_USER, ())
    )
    # The node's identities and flags are there from the start, so that
    # `up --node` can add a node to a running control plane without a restart.
    lines += _token_line(tokens["node"], node.NODE_USER, node.NODE_GROUPS)
    lines += _token_line(tokens["scheduler"], node.SCHEDULER_USER, ())
    lines += _token_line(tokens["proxy"], node.PROXY_USER, ())
    serve_args = (*_node_serve_args(paths), *serve_args)
    _write(paths.tokens, lines)
    subprocess.run(
        [str(paths.harness), "pki", "--dir", str(paths.pki)],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    ca_data = base64.b64encode((paths.pki / "ca.crt").read_bytes()).decode()
    _write(
        paths.kcm_kubeconfig,
        kubeconfig_yaml(server, None, paths.pki / "ca.crt", KCM_USER, tokens["kcm"]),
    )
    for path, user, key in (
        (paths.kubelet_kubeconfig, node.NODE_USER, "node"),
        (paths.scheduler_kubeconfig, node.SCHEDULER_USER, "scheduler"),
        (paths.proxy_kubeconfig, node.PROXY_USER, "proxy"),
    ):
        _write(path, kubeconfig_yaml(server, None, paths.pki / "ca.crt", user, tokens[key]))
    for path, user, key in (
        (paths.kubeconfig, ADMIN_USER, "admin"),
        (paths.tenant_kubeconfig, TENANT_USER, "tenant"),
        (paths.operator_kubeconfig, OPERATOR_USER, "operator"),
    ):
        # a ':' in a user name is fine in YAML plain scalars only when not
        # followed by a space; these names have none.
        _write(path, kubeconfig_yaml(server, ca_data, None, user, tokens[key]))

    _write(
        paths.info,
        json.dumps(
            {
                "server": server,
                "ports": {"apiserver": api_port, "etcd_client": etcd_port, "etcd_peer": peer_port},
                "started_at": time.time(),
            },
            indent=2,
        )
        + "\n",
        0o644,
    )
    cmd = [
        str(paths.harness),
        "serve",
        "--state-dir",
        str(paths.state),
        "--log-dir",
        str(paths.root),
        "--apiserver-port",
        str(api_port),
        "--etcd-client-port",
        str(etcd_port),
        "--etcd-peer-port",
        str(peer_port),
        *serve_args,
    ]
    # --detach: the supervisor runs in its own session and is not our child,
    # so neither make nor a pytest session has to reap it.
    with open(paths.log("controlplane"), "ab") as out:
        subprocess.run(
            [*cmd, "--detach", "--pid-file", str(paths.pidfile)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=paths.root,
            check=True,
        )
    pid = _read_pid(paths)
    if pid is None:
        raise ControlPlaneError(f"kube-harness serve --detach wrote no pid\n{logs_tail(paths)}")
    log(f"started kube-harness serve (pid {pid}), waiting for {server}")

    started = time.monotonic()
    deadline = started + timeout
    last = ""
    while True:
        if not _pid_alive(pid):
            raise ControlPlaneError(
                f"kube-harness serve (pid {pid}) exited during start-up\n{logs_tail(paths)}"
            )
        if paths.ready.exists():
            try:
                _check_ready(paths, server)
                break
            except ControlPlaneError as e:
                last = str(e)
        if time.monotonic() > deadline:
            _stop_pid(paths, pid)
            raise ControlPlaneError(
                f"control plane not ready after {timeout:.0f}s: {last}\n{logs_tail(paths)}"
            )
        time.sleep(0.25)
    log(f"ready in {time.monotonic() - started:.1f}s: {server}")
    return _info(paths, server, pid, started=True)


def _node_serve_args(paths: Paths) -> tuple[str, ...]:
    """What a node needs from the control plane; inert while no kubelet runs."""
    return (
        f"--controllers={NODE_CONTROLLERS}",
        f"--apiserver-arg=--kubelet-client-certificate={paths.pki / 'apiserver-kubelet-client.crt'}",
        f"--apiserver-arg=--kubelet-client-key={paths.pki / 'apiserver-kubelet-client.key'}",
        "--apiserver-arg=--kubelet-preferred-address-types=InternalIP",
        # Projected tokens expire when they say (no one-year legacy extension),
        # so a pod really depends on the kubelet refreshing them.
        "--apiserver-arg=--service-account-extend-token-expiration=false",
    )


def _node_paths(paths: Paths) -> node.NodePaths:
    return node.NodePaths(paths.root)


def _start_node(paths: Paths, info: ClusterInfo) -> None:
    node.start(
        _node_paths(paths),
        server=info.server,
        ca_file=paths.pki / "ca.crt",
        kubelet_kubeconfig=paths.kubelet_kubeconfig,
        scheduler_kubeconfig=paths.scheduler_kubeconfig,
        proxy_kubeconfig=paths.proxy_kubeconfig,
        admin_kubeconfig=paths.kubeconfig,
        kubectl=paths.kubectl,
    )


def node_running(paths: Paths | None = None) -> bool:
    return node.running(_node_paths(paths or Paths()))


def up(
    paths: Paths | None = None,
    timeout: float = 600.0,
    rebuild: bool = True,
    serve_args: tuple[str, ...] = (),
    with_node: bool = False,
) -> ClusterInfo:
    """Start the control plane unless one is running; return how to reach it.

    ``serve_args`` go to ``kube-harness serve`` (e.g. ``--controller-manager-arg=...``)
    when this call starts it. ``with_node`` adds a kubelet, containerd, a pod
    network and kube-scheduler (tests/harness/node.py), to a running control
    plane too (no restart: its flags and identities are there from the start).
    """
    paths = paths or Paths()
    with locked(paths):
        info = running(paths)
        if info is not None and with_node and not paths.proxy_kubeconfig.exists():
            raise ControlPlaneError(
                "the running control plane predates the node support: make cluster-down first"
            )
        if info is not None:
            if with_node and not node_running(paths):
                if rebuild:
                    build_node(paths)
                try:
                    _start_node(paths, info)
                except BaseException:
                    node.stop(_node_paths(paths), paths.kubectl, paths.kubeconfig)
                    raise
            log(f"already running (pid {info.pid}): {info.server}")
            return info
        pid = _read_pid(paths)
        if pid is not None and _pid_alive(pid):
            # Alive but not ready: a start that died half-way, or a hung one.
            log(f"pid {pid} is not ready: stopping it")
            _stop_pid(paths, pid)
        if rebuild or not paths.harness.exists():
            build(paths)
        if with_node and (rebuild or not (paths.bin / "kubelet").exists()):
            build_node(paths)
        attempts = 3
        for attempt in range(1, attempts + 1):
            try:
                info = _start_once(paths, timeout, serve_args)
                if with_node:
                    try:
                        _start_node(paths, info)
                    except BaseException:
                        _down_locked(paths)
                        raise
                return info
            except ControlPlaneError as e:
                # free_ports() can race with another process taking a port.
                if attempt < attempts and "address already in use" in str(e):
                    log(f"port taken during start-up, retrying ({attempt}/{attempts})")
                    continue
                raise
        raise AssertionError("unreachable")


# --- stop ----------------------------------------------------------------------


def _stop_pid(paths: Paths, pid: int, grace: float = 60.0) -> None:
    if _pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
    # The supervisor leads its own session and process group: sweep it.
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError as e:
        if e.errno not in (errno.ESRCH, errno.EPERM):
            raise
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def down(paths: Paths | None = None) -> bool:
    """Stop the control plane and remove its state. True if one was running."""
    paths = paths or Paths()
    with locked(paths):
        return _down_locked(paths)


def _down_locked(paths: Paths) -> bool:
    if (paths.root / "node").exists():
        # The node first, while the API server can still delete its pods.
        node.stop(_node_paths(paths), paths.kubectl, paths.kubeconfig)
    pid = _read_pid(paths)
    was_running = pid is not None and _pid_alive(pid)
    if pid is not None:
        _stop_pid(paths, pid)
    if paths.state.exists():
        shutil.rmtree(paths.state)
    for p in (paths.kubeconfig, paths.tenant_kubeconfig, paths.operator_kubeconfig):
        p.unlink(missing_ok=True)
    log("stopped" if was_running else "was not running")
    return was_running


# --- command line -------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "command", choices=["up", "down", "status", "build", "build-helm", "build-promtool"]
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="start-up timeout (s)")
    parser.add_argument("--no-build", action="store_true", help="use the existing binary")
    parser.add_argument(
        "--node", action="store_true", help="up: add a node (kubelet, containerd, pod network)"
    )
    args = parser.parse_args(argv)
    paths = Paths()
    try:
        if args.command == "build":
            build(paths)
        elif args.command == "build-helm":
            build_helm(paths)
        elif args.command == "build-promtool":
            build_promtool(paths)
        elif args.command == "up":
            info = up(paths, timeout=args.timeout, rebuild=not args.no_build, with_node=args.node)
            print(f"server:     {info.server}")
            print(f"kubeconfig: {info.kubeconfig} (admin)")
            print(f"            {info.tenant_kubeconfig} (tenant)")
            print(f"            {info.operator_kubeconfig} (operator ServiceAccount)")
            print(f"kubectl:    {info.kubectl_path}")
            print(f"logs:       {paths.root}/*.log")
        elif args.command == "down":
            down(paths)
        elif args.command == "status":
            info = running(paths)
            if info is None:
                print("not running")
                return 1
            print(f"running (pid {info.pid}): {info.server}")
            if node_running(paths):
                print(f"node:    {node.NODE_NAME} ({node.NODE_IP}), logs {paths.root}/kubelet.log")
    except (ControlPlaneError, node.NodeError) as e:
        log(str(e))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
