"""The running operator's endpoints on the real control plane, as a Prometheus or a kubelet
meets them: /metrics over HTTPS only for a token the API server accepts (TokenReview) whose
identity may get /metrics (SubjectAccessReview); controller-runtime's and client-go's metric
names; /readyz of a leader and of a standby; --metrics-secure=false; --leader-elect=false."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time

import pytest

from tests.harness import console
from tests.harness.fixtures import Kube, kubectl_env
from tests.operator import support

pytestmark = pytest.mark.cluster


def _leading(operator: support.Operator) -> None:
    deadline = time.monotonic() + 60
    while not operator.ready() or "settings_controller_leader 1.0" not in operator.metrics():
        assert time.monotonic() < deadline, operator.log_tail()
        time.sleep(0.25)


def test_metrics_need_a_token_allowed_to_get_them(
    installed: Kube, operator: support.Operator
) -> None:
    _leading(operator)
    url = operator.metrics_url
    assert url.startswith("https://")
    # No token, a token the API server does not know, a garbage header: 401.
    status, body = support.fetch(url)
    assert status == 401 and "bearer token" in body
    assert support.fetch(url, "not-a-token-the-api-server-issued")[0] == 401
    assert support.fetch(url, headers={"Authorization": "Basic YWRtaW46YWRtaW4="})[0] == 401
    # A real ServiceAccount token without the metrics-reader binding: 403.
    stranger = support.service_account_token(installed, "metrics-stranger", reader=False)
    status, body = support.fetch(url, stranger)
    assert status == 403 and "forbidden" in body
    # Bound to settings-controller-metrics-reader: answered.
    reader = support.service_account_token(installed, support.SCRAPER, reader=True)
    status, body = support.fetch(url, reader)
    assert status == 200 and "settings_controller_leader 1.0" in body
    # A header of 64 KiB: refused by the HTTP parser, the operator keeps serving.
    status, _ = support.fetch(url, "z" * 65536)
    assert status in (400, 431)
    assert support.fetch(url, reader)[0] == 200
    # Plain HTTP to the HTTPS port is no way round it.
    with pytest.raises(OSError):
        support.fetch(url.replace("https:", "http:"))


def test_scrapes_are_cached_not_reviewed_each_time(
    installed: Kube, operator: support.Operator
) -> None:
    """rest_client_requests_total counts the operator's own POSTs: 20 scrapes with the same
    token within the cache's 10 s cost at most one review pair."""
    _leading(operator)
    reader = support.service_account_token(installed, support.SCRAPER, reader=True)

    def posts() -> float:
        status, body = support.fetch(operator.metrics_url, reader)
        assert status == 200
        total = 0.0
        for m in re.finditer(r"^rest_client_requests_total\{(.*)\} (\S+)$", body, re.MULTILINE):
            if 'method="POST"' in m.group(1):
                total += float(m.group(2))
        return total

    before = posts()
    for _ in range(20):
        after = posts()
    assert after - before <= 2


def test_controller_runtime_and_client_go_series(
    installed: Kube, operator: support.Operator, tenant_ns: str
) -> None:
    """Stock dashboards read these names: they are served, and they move with the work."""
    _leading(operator)
    support.apply_text(installed, support.account_manifest(tenant_ns, tenant_ns))
    support.wait_json(installed, ("configmap", "integration-settings", "-n", tenant_ns), bool)
    text = operator.metrics()
    for series in (
        'workqueue_depth{name="account"} ',
        'workqueue_adds_total{name="account"} ',
        'workqueue_queue_duration_seconds_bucket{le="1e-08",name="account"} ',
        'workqueue_work_duration_seconds_count{name="account"} ',
        'workqueue_retries_total{name="account"} ',
        'workqueue_unfinished_work_seconds{name="account"} ',
        'workqueue_longest_running_processor_seconds{name="account"} ',
        'controller_runtime_reconcile_errors_total{controller="account"} ',
        'controller_runtime_reconcile_time_seconds_count{controller="account"} ',
        'controller_runtime_active_workers{controller="account"} ',
        'controller_runtime_max_concurrent_reconciles{controller="account"} 16.0',
        'leader_election_master_status{name="settings-controller"} 1.0',
    ):
        assert series in text, series
    success = re.search(
        r'^controller_runtime_reconcile_total\{controller="account",result="success"\} (\S+)$',
        text,
        re.MULTILINE,
    )
    assert success and float(success.group(1)) >= 1
    host = installed.server.split("://", 1)[1]
    for method in ("GET", "PATCH"):
        assert f'rest_client_requests_total{{code="200",host="{host}",method="{method}"}}' in text
    assert "settings_controller_workqueue_depth " in text  # the domain series stay


def test_a_standby_is_ready_and_serves_every_interface(
    installed: Kube, operator: support.Operator, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A second replica stands by (the session's operator holds the Lease): /readyz 200,
    leader_election_master_status 0; its empty-host bind addresses answer on IPv4 and IPv6."""
    _leading(operator)
    log = tmp_path_factory.mktemp("standby") / "operator.log"
    standby = support.Operator(installed, log, ("--verify-interval=0",))
    standby.metrics_port = support.free_port()
    standby.args = (
        "--verify-interval=0",
        f"--metrics-bind-address=:{standby.metrics_port}",
    )
    standby.start()
    try:
        support.until(standby.ready, "the standby is ready")
        assert "standing by" in support.fetch(f"http://127.0.0.1:{standby.health_port}/readyz")[1]
        assert 'leader_election_master_status{name="settings-controller"} 0.0' in standby.metrics()
        reader = support.service_account_token(installed, support.SCRAPER, reader=True)
        for host in ("127.0.0.1", "[::1]"):
            status, _ = support.fetch(f"https://{host}:{standby.metrics_port}/metrics", reader)
            assert status == 200, host
        with socket.socket(socket.AF_INET6) as s:
            s.settimeout(2)
            s.connect(("::1", standby.metrics_port))
    finally:
        assert standby.stop() == 0, standby.log_tail()


def test_plain_http_metrics_and_no_leader_election(
    installed: Kube, operator: support.Operator, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """--metrics-secure=false: plain HTTP to anyone. --leader-elect=false: no Lease taken,
    ready once listed (the session's operator holds the Lease meanwhile)."""
    _leading(operator)
    holder = _holder(installed)
    log = tmp_path_factory.mktemp("unelected") / "operator.log"
    other = support.Operator(
        installed,
        log,
        ("--verify-interval=0", "--metrics-secure=false", "--leader-elect=false"),
    )
    other.start()
    try:
        support.until(other.ready, "ready without the Lease", timeout=60)
        assert other.metrics_url.startswith("http://")
        status, body = support.fetch(other.metrics_url)  # no token
        assert status == 200
        assert 'leader_election_master_status{name="settings-controller"} 1.0' in body
        assert "leader election off" in other.log_text()
        assert "standing by" not in other.log_text()
    finally:
        assert other.stop() == 0, other.log_tail()
    assert _holder(installed) == holder  # never taken, never released by the other
    _leading(operator)


def _holder(kube: Kube) -> str:
    lease = support.get_json(kube, "lease", "settings-controller", "-n", support.OPERATOR_NAMESPACE)
    return str(lease["spec"]["holderIdentity"])


def test_deploy_readme_reads_metrics_as_a_scraper(
    installed: Kube, operator: support.Operator
) -> None:
    """deploy/README's console block, each command exactly, ``$METRICS`` the session
    operator's URL, the outputs as shown."""
    _leading(operator)
    steps = console.console_block(
        support.REPO / "deploy" / "README.md", "Reading `/metrics` as a scraper"
    )
    env = {**kubectl_env(), "KUBECONFIG": str(installed.kubeconfig)}
    env["PATH"] = f"{os.path.dirname(installed.kubectl_path)}:{env['PATH']}"
    env["METRICS"] = operator.metrics_url
    try:
        for command, shown in steps:
            done = subprocess.run(
                ["bash", "-c", command], env=env, capture_output=True, text=True, timeout=60
            )
            assert done.returncode == 0, (command, done.stderr)
            assert done.stdout.splitlines() == shown, (command, done.stdout, done.stderr)
    finally:
        installed.kubectl("delete", "clusterrolebinding", "scraper-metrics", check=False)
        installed.kubectl("delete", "namespace", "monitoring", "--wait=false", check=False)
