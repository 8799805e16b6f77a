"""The operator's metrics registry: standard collectors, build_info, the gauges this issue
added, HELP texts that name every label value the code uses, and the bind-address flag."""

from __future__ import annotations

import pathlib
import re

import prometheus_client as prom
import pytest

from controller import version
from controller.cluster import metrics

CLUSTER = pathlib.Path(metrics.__file__).parent


def _scrape(meter: metrics.Metrics) -> str:
    return prom.generate_latest(meter.registry).decode()


def _value(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not exposed")


def test_standard_collectors_and_build_info() -> None:
    text = _scrape(metrics.Metrics())
    assert _value(text, "process_resident_memory_bytes") > 0
    assert "python_info{" in text and "python_gc_collections_total{" in text
    assert f'settings_controller_build_info{{version="{version.VERSION}"}} 1.0' in text
    metrics.Metrics()  # a second registry in the same process does not collide


def test_not_ready_queue_depth_and_last_full_pass() -> None:
    meter = metrics.Metrics()
    queue = ["a", "b", "c"]
    meter.count_queue(lambda: len(queue), lambda: 2.5 if queue else 0.0)
    text = _scrape(meter)
    assert _value(text, "settings_controller_workqueue_depth") == 3
    assert _value(text, "settings_controller_workqueue_oldest_seconds") == 2.5
    queue.clear()
    assert _value(_scrape(meter), "settings_controller_workqueue_depth") == 0

    meter.reconciled("acct-1", "blocked")
    meter.reconciled("acct-2", "failed")
    meter.reconciled("acct-3", "written")
    assert _value(_scrape(meter), "settings_controller_accounts_not_ready") == 2
    meter.reconciled("acct-1", "unchanged")
    meter.reconciled("acct-2", "removed")
    text = _scrape(meter)
    assert _value(text, "settings_controller_accounts_not_ready") == 0
    assert 'settings_controller_reconciles_total{outcome="blocked"} 1.0' in text

    assert _value(text, "settings_controller_last_full_pass_timestamp_seconds") == 0
    meter.full_pass_done()
    assert _value(_scrape(meter), "settings_controller_last_full_pass_timestamp_seconds") > 1e9


def test_help_texts_name_every_label_value_the_code_uses() -> None:
    source = "\n".join(p.read_text() for p in CLUSTER.glob("*.py") if p.name != "metrics.py")
    used = {
        "settings_controller_errors_total": set(re.findall(r'errors\.labels\("(\w+)"\)', source)),
        "settings_controller_writes_total": set(
            re.findall(r'(?:writes\.labels|metrics\.wrote)\("(\w+)"\)', source)
        ),
        # _account's outcomes: `return "blocked"`, `return "written" if wrote else "unchanged"`
        "settings_controller_reconciles_total": set(
            re.findall(r'(?:return|else) "(\w+)"', (CLUSTER / "reconciling.py").read_text())
        ),
    }
    helps = {
        line.split()[2]: line
        for line in _scrape(metrics.Metrics()).splitlines()
        if line.startswith("# HELP")
    }
    for name, values in used.items():
        assert values, name
        for value in values:
            assert re.search(rf"\b{value}\b", helps[name]), (name, value, helps[name])


@pytest.mark.parametrize(
    ("flag", "expected"),
    [
        pytest.param(":8443", ("", 8443), id="every-interface"),
        pytest.param("0.0.0.0:8443", ("0.0.0.0", 8443), id="ipv4-only"),
        pytest.param("127.0.0.1:8081", ("127.0.0.1", 8081), id="loopback"),
        pytest.param("[::1]:8080", ("::1", 8080), id="ipv6"),
        pytest.param("0", None, id="off"),
    ],
)
def test_bind_address(flag: str, expected: tuple[str, int] | None) -> None:
    assert metrics.parse_bind_address(flag) == expected


def test_bind_address_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        metrics.parse_bind_address("localhost")


def test_an_account_written_without_a_key_it_needs_counts_as_not_ready() -> None:
    """Was: its Ready condition said False (KeysMissing) while the sync's outcome was
    "written", so settings_controller_accounts_not_ready, and the alert on it, said 0."""
    meter = metrics.Metrics()
    meter.keys_missing("acct-1", True)
    meter.reconciled("acct-1", "written")
    meter.keys_missing("acct-2", False)
    meter.reconciled("acct-2", "written")
    assert _value(_scrape(meter), "settings_controller_accounts_not_ready") == 1
    meter.reconciled("acct-1", "blocked")  # blocked and missing a key: counted once
    assert _value(_scrape(meter), "settings_controller_accounts_not_ready") == 1
    meter.keys_missing("acct-1", False)
    meter.reconciled("acct-1", "unchanged")
    assert _value(_scrape(meter), "settings_controller_accounts_not_ready") == 0
    meter.keys_missing("acct-2", True)
    meter.reconciled("acct-2", "removed")  # no account claims it any more
    assert _value(_scrape(meter), "settings_controller_accounts_not_ready") == 0
