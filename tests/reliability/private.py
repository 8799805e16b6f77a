"""A private control plane whose components a test may stop and start one by one.

Built on tests/harness/controlplane.py without changing it: ``controlplane.up``
starts an instance under its own root (a temporary directory, the shared
binary symlinked in), then the supervisor is stopped and its three children
(etcd, kube-apiserver, kube-controller-manager) are started again here with
exactly the command lines the supervisor gave them (read from /proc), in the
same state directory and on the same ports. From then on each can be stopped
and started on its own; the data directory, PKI and tokens stay, so clients
keep working across restarts.
"""

from __future__ import annotations

import contextlib
import pathlib
import signal
import subprocess
import time

from tests.harness import controlplane as cp
from tests.harness.fixtures import Kube

COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager")


def _children(pid: int) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) != pid:
            continue
        args = [a.decode() for a in argv if a]
        if len(args) > 1 and args[1] in COMPONENTS:
            found[args[1]] = args
    return found


class PrivateCluster:
    def __init__(self, root: pathlib.Path, shared: cp.Paths | None = None) -> None:
        shared = shared or cp.Paths()
        self.paths = cp.Paths(root)
        self.paths.bin.mkdir(parents=True, exist_ok=True)
        for link, target in (
            (self.paths.harness, shared.harness),
            (self.paths.kubectl, shared.kubectl),
        ):
            if not link.exists():
                link.symlink_to(target.resolve())
        info = cp.up(self.paths, rebuild=False)
        self.server = info.server
        self.argv = _children(info.pid or 0)
        assert set(self.argv) == set(COMPONENTS), self.argv
        # Hand the components over from the supervisor to this object.
        cp._stop_pid(self.paths, info.pid or 0)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        for name in COMPONENTS:
            self.start(name)
        self.kube = Kube(
            kubeconfig=info.kubeconfig,
            tenant_kubeconfig=info.tenant_kubeconfig,
            operator_kubeconfig=info.operator_kubeconfig,
            server=info.server,
            kubectl_path=info.kubectl_path,
            log_paths=self.paths.logs,
        )

    def start(self, name: str, timeout: float = 120.0) -> float:
        """Start one component; for the apiserver, wait until it serves. Seconds taken."""
        started = time.monotonic()
        with open(self.paths.log(name), "ab") as log:
            self.procs[name] = subprocess.Popen(
                self.argv[name],
                cwd=self.paths.state,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if name in ("kube-apiserver", "etcd"):
            self.wait_ready(timeout)
        return time.monotonic() - started

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if "kube-apiserver" in self.procs and self.procs["kube-apiserver"].poll() is None:
                try:
                    status, _ = cp.api_get(self.paths, self.server, "/readyz")
                    if status == 200:
                        return
                except cp.ControlPlaneError:
                    pass
            elif "kube-apiserver" not in self.procs:
                return  # not started yet: nothing to wait for
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"apiserver not ready after {timeout}s\n{cp.logs_tail(self.paths)}"
                )
            time.sleep(0.2)

    def stop(self, name: str, sig: int = signal.SIGTERM) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def restart_all(self) -> float:
        """Stop every component, then start them again on the same data directory."""
        for name in reversed(COMPONENTS):
            self.stop(name)
        started = time.monotonic()
        for name in COMPONENTS:
            self.start(name)
        return time.monotonic() - started

    def close(self) -> None:
        for name in reversed(COMPONENTS):
            with contextlib.suppress(OSError):
                self.stop(name)
        cp.down(self.paths)
