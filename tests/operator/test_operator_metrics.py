"""The running operator's /metrics on the real control plane: standard and new series, and
the bind-address flags keeping both servers on the address given (here 127.0.0.1)."""

from __future__ import annotations

import socket
import time

import pytest

from controller import version
from tests.operator import support

pytestmark = pytest.mark.cluster


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def test_metrics_of_the_running_operator(operator: support.Operator) -> None:
    # Past the standby: the Lease taken, kopf's own liveness endpoint up.
    deadline = time.monotonic() + 60
    while "settings_controller_leader 1.0" not in operator.metrics() or not operator.healthy():
        assert time.monotonic() < deadline, operator.log_tail()
        time.sleep(0.25)
    text = operator.metrics()
    for series in (
        "process_resident_memory_bytes ",
        "process_cpu_seconds_total ",
        "python_info{",
        f'settings_controller_build_info{{version="{version.VERSION}"}} 1.0',
        "settings_controller_workqueue_depth ",
        "settings_controller_accounts_not_ready ",
        "settings_controller_last_full_pass_timestamp_seconds ",
        "settings_controller_leader 1.0",
    ):
        assert series in text, series
    # A socket bound to 0.0.0.0 also answers on 127.0.0.2; one bound to 127.0.0.1 does not.
    for port in (operator.metrics_port, operator.health_port):
        assert _accepts("127.0.0.1", port), port
        assert not _accepts("127.0.0.2", port), port
