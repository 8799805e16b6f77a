"""pytest fixtures for tests against a real Kubernetes control plane.

Load with ``pytest_plugins = ["tests.harness.fixtures"]`` (tests/conftest.py)
or ``pytest -p tests.harness.fixtures``.

``kube`` (session): the control plane. In order of preference it is
  1. the cluster of ``$KUBECONFIG``, when that is set and is not this tree's
     own ``.cluster/kubeconfig`` (tenant and operator kubeconfigs then use
     impersonation through the given credentials);
  2. the control plane already running from ``.cluster`` (``make cluster-up``);
  3. one this session builds and starts, and stops again at the end.
Without ``go`` the tests are skipped, or fail when ``CI`` is true.

``namespace`` (function): a fresh namespace, deleted (without waiting) after
the test.

``until`` (and ``until_async`` in an event loop): the one polling helper of the
tests: a predicate polled until it holds, an AssertionError naming what was
awaited after ``timeout``.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import re
import secrets
import subprocess
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pytest

from tests.harness import controlplane as cp

KUBE_KEY = pytest.StashKey["Kube"]()
LOG_TAIL_LINES = 60


class KubectlError(subprocess.CalledProcessError):
    """A kubectl call that failed; str() includes its output."""

    def __str__(self) -> str:
        return f"{super().__str__()}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"


@dataclass
class Kube:
    """A reachable control plane and a kubectl of the same version."""

    kubeconfig: Path
    tenant_kubeconfig: Path
    operator_kubeconfig: Path
    server: str
    kubectl_path: Path
    log_paths: list[Path] = field(default_factory=list)
    # True when this pytest session started the control plane.
    started: bool = False

    def kubectl(
        self,
        *args: str,
        kubeconfig: str | os.PathLike[str] | None = None,
        input: str | None = None,
        check: bool = True,
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run the harness kubectl with the admin (or the given) kubeconfig."""
        cmd = [
            str(self.kubectl_path),
            f"--kubeconfig={kubeconfig if kubeconfig is not None else self.kubeconfig}",
            *args,
        ]
        proc = subprocess.run(
            cmd,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=kubectl_env(),
        )
        if check and proc.returncode != 0:
            raise KubectlError(proc.returncode, cmd, proc.stdout, proc.stderr)
        return proc

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        parts = []
        for p in self.log_paths:
            text = cp.tail(p, lines)
            if text:
                parts.append(f"==> {p} <==\n{text}")
        return "\n".join(parts)


def kubectl_env() -> dict[str, str]:
    env = dict(os.environ)
    # No user preferences (~/.kube/kuberc) changing kubectl's behaviour.
    env["KUBERC"] = "off"
    env.pop("KUBECONFIG", None)
    return env


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def unavailable(reason: str) -> NoReturn:
    """Skip on a developer machine; fail under CI, where a skip would hide it."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: failing instead of skipping)", pytrace=False)
    pytest.skip(reason)


def until(
    predicate: Callable[[], object],
    what: str,
    timeout: float = 30.0,
    interval: float = 0.25,
    *,
    ignoring: tuple[type[Exception], ...] = (),
    value: bool = False,
) -> Any:
    """Poll ``predicate`` until it holds; the seconds that took. Fail after ``timeout``.

    ``value``: return what ``predicate`` last returned (truthy) instead of the seconds.
    ``ignoring``: exceptions of ``predicate`` that mean "not yet" (a file being written).
    The AssertionError names ``what`` and, unless it was a bool, the last thing seen.
    """
    polls = _polls(predicate, what, timeout, interval, ignoring, value)
    try:
        while True:
            time.sleep(next(polls))
    except StopIteration as done:
        return done.value


async def until_async(
    predicate: Callable[[], object],
    what: str,
    timeout: float = 30.0,
    interval: float = 0.25,
    *,
    ignoring: tuple[type[Exception], ...] = (),
    value: bool = False,
) -> Any:
    """``until`` for a test running in an event loop: the loop runs while it waits."""
    polls = _polls(predicate, what, timeout, interval, ignoring, value)
    try:
        while True:
            await asyncio.sleep(next(polls))
    except StopIteration as done:
        return done.value


def _polls(
    predicate: Callable[[], object],
    what: str,
    timeout: float,
    interval: float,
    ignoring: tuple[type[Exception], ...],
    value: bool,
) -> Generator[float, None, Any]:
    """The polling of ``until`` and ``until_async``: yields each pause, returns their result."""
    started = time.monotonic()
    while True:
        try:
            last: object = predicate()
            if last:
                return last if value else time.monotonic() - started
        except ignoring as e:
            last = e
        if time.monotonic() - started > timeout:
            seen = "" if isinstance(last, bool) else f" (last: {last!r})"
            raise AssertionError(f"not true after {timeout}s: {what}{seen}")
        yield interval


def ensure_binary(paths: cp.Paths) -> None:
    """The harness binary built (Go build cache), or skip/fail when it cannot be."""
    if cp.go_binary() is None:
        if paths.harness.exists():
            return
        unavailable("go not found: the cluster tests build their control plane with Go")
    try:
        cp.build(paths)
    except cp.ControlPlaneError as e:
        pytest.fail(f"building the control plane failed: {e}", pytrace=False)


def _external(paths: cp.Paths, kubeconfig: Path, out_dir: Path) -> Kube:
    """A Kube for someone else's cluster; tenant/operator by impersonation."""
    ensure_binary(paths)
    proc = subprocess.run(
        [
            str(paths.kubectl),
            f"--kubeconfig={kubeconfig}",
            "config",
            "view",
            "--raw",
            "--flatten",
            "--minify",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        check=False,
        env=kubectl_env(),
    )
    if proc.returncode != 0:
        pytest.fail(f"cannot read KUBECONFIG={kubeconfig}: {proc.stderr}", pytrace=False)
    config = json.loads(proc.stdout)
    server = config["clusters"][0]["cluster"]["server"]
    kube = Kube(
        kubeconfig=kubeconfig,
        tenant_kubeconfig=out_dir / "kubeconfig-tenant",
        operator_kubeconfig=out_dir / "kubeconfig-operator",
        server=server,
        kubectl_path=paths.kubectl,
    )
    for path, user, groups in (
        (kube.tenant_kubeconfig, cp.TENANT_USER, cp.TENANT_GROUPS),
        (kube.operator_kubeconfig, cp.OPERATOR_USER, cp.OPERATOR_GROUPS),
    ):
        impersonating = copy.deepcopy(config)
        impersonating["users"][0]["user"]["as"] = user
        impersonating["users"][0]["user"]["as-groups"] = list(groups)
        path.write_text(json.dumps(impersonating, indent=2))
        path.chmod(0o600)
    return kube


@pytest.fixture(scope="session")
def kube(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Kube]:
    """The control plane for this test session (see the module docstring)."""
    paths = cp.Paths()
    env_kubeconfig = os.environ.get("KUBECONFIG", "")
    if env_kubeconfig and Path(env_kubeconfig).resolve() != paths.kubeconfig.resolve():
        result = _external(paths, Path(env_kubeconfig), tmp_path_factory.mktemp("kubeconfigs"))
        request.config.stash[KUBE_KEY] = result
        yield result
        return

    lease = cp.UserLease(paths)
    try:
        info = cp.running(paths)
        if info is None:
            ensure_binary(paths)
            try:
                # ensure_binary built it already.
                info = cp.up(paths, rebuild=False)
            except cp.ControlPlaneError as e:
                pytest.fail(f"the control plane did not start: {e}", pytrace=False)
    except BaseException:
        # skip/fail included: no lease (and no open file) outlives the fixture.
        lease.release()
        raise
    result = Kube(
        kubeconfig=info.kubeconfig,
        tenant_kubeconfig=info.tenant_kubeconfig,
        operator_kubeconfig=info.operator_kubeconfig,
        server=info.server,
        kubectl_path=info.kubectl_path,
        log_paths=paths.logs,
        started=info.started,
    )
    request.config.stash[KUBE_KEY] = result
    try:
        yield result
    finally:
        alone = lease.release()
        if result.started:
            if alone:
                cp.down(paths)
            else:
                cp.log("another test session is using the control plane: leaving it running")


def _namespace_name(test_name: str) -> str:
    base = re.sub(r"[^a-z0-9-]+", "-", test_name.lower()).strip("-")[:40].strip("-")
    return f"t-{base}-{secrets.token_hex(3)}"


@pytest.fixture
def namespace(kube: Kube, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test; deleted afterwards without waiting."""
    name = _namespace_name(request.node.name)
    manifest = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {"settings-controller.test/temporary": "true"}},
    }
    kube.kubectl("create", "-f", "-", input=json.dumps(manifest))
    yield name
    kube.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed and "kube" in getattr(item, "fixturenames", ()):
        kube_obj = item.config.stash.get(KUBE_KEY, None)
        if kube_obj is not None and kube_obj.log_paths:
            text = kube_obj.log_tail()
            if text:
                report.sections.append(("control plane log (tail)", text))
    return report


@pytest.fixture(scope="session")
def helm(kube: Kube) -> Path:
    """.cluster/bin/helm next to the harness (tests/harness/helm); built only when missing,
    since every worktree's harness directory may share it."""
    paths = cp.Paths(Path(kube.kubectl_path).parent.parent)
    built = paths.bin / "helm"
    return built if built.is_file() else cp.build_helm(paths)
