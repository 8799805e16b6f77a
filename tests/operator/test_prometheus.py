"""deploy/prometheus: the alerts and the dashboard, checked by promtool (built from Go
modules: tests/harness/promtool) and evaluated against the running operator's real /metrics.

The operator is put into each state an alert is meant to catch (an Account in a namespace
conflict, a platform key missing, a key endpoint refusing connections, outputs it cannot
write, another holder of its Lease, the process gone) and scraped; each scrape, held for
some minutes after a healthy one, is what ``promtool test rules`` evaluates, asserting which
alerts fire and which stay silent.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import pathlib
import re
import shlex
import subprocess
import urllib.error
from collections.abc import Callable, Iterator

import pytest
import yaml

from tests.connections import conftest as connections_conftest
from tests.harness import controlplane
from tests.harness.fixtures import Kube
from tests.operator import alerting, fixtures, support
from tests.operator.alerting import Firing, Timeline
from tests.providers import simulator

GOOD = {"openai": "sk-good-openai-OBS0001aaaa", "dalle": "sk-good-dalle-OBS0002bbbb",
        "runware": "rw-good-runware-OBS0003cccc"}  # fmt: skip
NS = {"namespace": alerting.TARGET["namespace"]}
EVERY_KEY = {("openai", "apiKey"), ("image_generation", "dalle"), ("image_generation", "runware")}


@pytest.fixture(scope="module")
def promtool() -> pathlib.Path:
    """.cluster/bin/promtool (Go's build cache makes every build after the first quick)."""
    return controlplane.build_promtool()


# --- the files, without a cluster -----------------------------------------------------


def test_the_rule_file_passes_promtool_check(
    promtool: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(alerting.rule_groups()))
    out = alerting.run(promtool, "check", "rules", "--lint=all", "--lint-fatal", path)
    assert f"SUCCESS: {len(alerting.alerts())} rules found" in out, out
    assert set(alerting.alerts()) == {
        "SettingsControllerDown",
        "SettingsControllerNoLeader",
        "SettingsControllerAccountsNotReady",
        "SettingsControllerKeyNotConnected",
        "SettingsControllerReconcileErrors",
        "SettingsControllerWorkQueueSlow",
        "SettingsControllerWorkQueueNotDraining",
        "SettingsControllerWorkerStuck",
    }
    for name, rule in alerting.alerts().items():
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name


def test_a_broken_rule_fails_promtool_check(promtool: pathlib.Path, tmp_path: pathlib.Path) -> None:
    """The check above can fail: one bad expression in the shipped file is refused."""
    spec = alerting.rule_groups()
    spec["groups"][0]["rules"][0]["expr"] = "sum by (namespace) (up{job=~"
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(spec))
    done = subprocess.run(
        [str(promtool), "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode != 0, done.stdout
    assert "FAILED" in done.stderr + done.stdout, done.stderr


def test_every_alert_is_documented_with_a_runbook_line() -> None:
    readme = (support.REPO / "deploy" / "README.md").read_text()
    section = readme[readme.index("### Alerts") :]
    for name in alerting.alerts():
        assert f"| `{name}` |" in section, name


def test_label_values_survive_the_conversion(
    promtool: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    """What a scrape could carry (quotes, backslashes, newlines, braces, non-ASCII in label
    values; NaN, infinities, huge values) reaches promtool exactly as it was scraped."""
    hostile = ['say "hi"', "back\\slash", "two\nlines", "{}=~,", "Zürich ☃", ""]
    lines = ["# TYPE hostile gauge"]
    values = ["1", "NaN", "+Inf", "-Inf", "1e+300", "-0.5"]
    for i, (label, value) in enumerate(zip(hostile, values, strict=True)):
        escaped = label.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        lines.append(f'hostile{{v="{escaped}",i="{i}"}} {value}')
    scrape = alerting.samples("\n".join(lines) + "\n# EOF\n")
    # Each series selected by its exact label value (an empty value selects the series
    # without the label, as Prometheus stores it).
    rules = [
        {"alert": f"Seen{i}", "expr": f'count(hostile{{v={alerting._quote(label)}, i="{i}"}}) == 1'}
        for i, label in enumerate(hostile)
    ]
    rules.append(
        {"alert": "Values", "expr": 'hostile{i="4"} == 1e300 and on() hostile{i="5"} == -0.5'}
    )
    rules.append({"alert": "Infinite", "expr": 'hostile{i="2"} > 1e308'})
    rules.append({"alert": "NotANumber", "expr": 'hostile{i="1"} != hostile{i="1"}'})
    alerting.expect_alerts(
        promtool,
        tmp_path,
        Timeline().hold(scrape, 3),
        [
            *(Firing(f"Seen{i}") for i in range(len(hostile))),
            Firing("Values", {**alerting.TARGET, "i": "4", "v": "Zürich ☃"}),
            Firing("Infinite", {**alerting.TARGET, "i": "2", "v": "two\nlines"}),
            Firing("NotANumber", {**alerting.TARGET, "i": "1", "v": "back\\slash"}),
        ],
        names=[r["alert"] for r in rules],
        extra_rules=rules,
    )


@pytest.mark.cluster
def test_the_kustomizations_render_the_files(installed: Kube) -> None:
    """rules/ renders the PrometheusRule as it is in the file; dashboard/ a ConfigMap with
    the sidecar's label and the JSON file byte for byte; deploy/prometheus all three."""
    kube = installed
    prometheus = alerting.PROMETHEUS
    (rule,) = yaml.safe_load_all(kube.kubectl("kustomize", str(prometheus / "rules")).stdout)
    assert rule["spec"] == alerting.rule_groups()
    (cm,) = yaml.safe_load_all(kube.kubectl("kustomize", str(prometheus / "dashboard")).stdout)
    assert cm["kind"] == "ConfigMap" and cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == support.OPERATOR_NAMESPACE
    assert cm["data"] == {"settings-controller.json": alerting.DASHBOARD.read_text()}
    kube.kubectl("apply", "-k", str(prometheus / "dashboard"), "--server-side")
    got = support.get_json(
        kube, "configmap", "-n", support.OPERATOR_NAMESPACE, cm["metadata"]["name"]
    )
    assert json.loads(got["data"]["settings-controller.json"])["uid"] == "settings-controller"
    everything = list(yaml.safe_load_all(kube.kubectl("kustomize", str(prometheus)).stdout))
    assert sorted(d["kind"] for d in everything) == [
        "ConfigMap",
        "PrometheusRule",
        "ServiceMonitor",
    ]


def monitoring_commands() -> list[list[str]]:
    """The kubectl lines of deploy/README.md's "Monitoring" sh block."""
    text = (support.REPO / "deploy" / "README.md").read_text()
    section = text[text.index("## Monitoring") :]
    block = section[section.index("```sh\n") + 6 :]
    block = block[: block.index("```")]
    return [shlex.split(line) for line in block.splitlines() if line.startswith("kubectl ")]


@pytest.mark.cluster
def test_the_readme_commands(installed: Kube) -> None:
    """As deploy/README.md shows them, from the repository root: the dashboard alone applies
    on a cluster without the Prometheus Operator (this one); the whole directory is refused
    there for the CRDs it needs, and only for them."""
    kube = installed
    commands = monitoring_commands()
    assert [c[-1] for c in commands] == ["deploy/prometheus/", "deploy/prometheus/dashboard/"]
    everything, dashboard = (
        [str(support.REPO / a) if a.startswith("deploy/") else a for a in c[1:]] for c in commands
    )
    kube.kubectl(*dashboard)
    name = "settings-controller-dashboard"
    got = support.get_json(kube, "configmap", "-n", support.OPERATOR_NAMESPACE, name)
    assert got["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert got["data"]["settings-controller.json"] == alerting.DASHBOARD.read_text()
    refused = kube.kubectl(*everything, check=False)
    assert refused.returncode != 0
    missing = set(re.findall(r'no matches for kind "(\w+)"', refused.stderr))
    assert missing == {"PrometheusRule", "ServiceMonitor"}, refused.stderr
    kube.kubectl("delete", "configmap", "-n", support.OPERATOR_NAMESPACE, name)


def test_the_dashboard_is_sound() -> None:
    dash = json.loads(alerting.DASHBOARD.read_text())
    assert dash["uid"] == "settings-controller" and dash["title"] == "settings-controller"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dash["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"] and panel["description"], panel["title"]
    # No two panels overlap on Grafana's 24-column grid.
    cells: set[tuple[int, int]] = set()
    for panel in dash["panels"]:
        g = panel["gridPos"]
        mine = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not cells & mine and g["x"] + g["w"] <= 24, panel["title"]
        cells |= mine


# --- the operator in each state ------------------------------------------------------


@dataclasses.dataclass
class States:
    texts: dict[str, str] = dataclasses.field(default_factory=dict)
    scrapes: dict[str, alerting.Samples] = dataclasses.field(default_factory=dict)

    def after_healthy(self, state: str, healthy: int = 10, held: int = 20) -> Timeline:
        return Timeline().hold(self.scrapes["healthy"], healthy).hold(self.scrapes[state], held)


def _value(scrape: alerting.Samples, name: str, **labels: str) -> float | None:
    for (n, key), v in scrape.items():
        if n == name and labels.items() <= dict(key).items():
            return v
    return None


def _connected(scrape: alerting.Samples) -> set[tuple[str, str]]:
    return {
        (dict(key)["integration"], dict(key)["credential"])
        for (n, key), v in scrape.items()
        if n == "settings_controller_connected" and v == 1
    }


class Driver:
    def __init__(self, op: support.Operator) -> None:
        self.op = op
        self.text = ""

    def scrape_when(
        self, what: str, ok: Callable[[alerting.Samples], bool]
    ) -> tuple[str, alerting.Samples]:
        last: alerting.Samples = {}

        def answered() -> bool:
            nonlocal last
            try:
                text = self.op.metrics()
            except (urllib.error.URLError, OSError):
                return False
            last = alerting.samples(text)
            self.text = text
            return ok(last)

        try:
            support.until(answered, what, timeout=60)
        except AssertionError:
            shown = "\n".join(
                f"{n} {dict(k)} {v}" for (n, k), v in last.items() if n.startswith("settings_")
            )
            raise AssertionError(f"{what}: last scrape\n{shown}\n{self.op.log_tail(30)}") from None
        return self.text, last


def _depth(scrape: alerting.Samples, queue: str) -> float | None:
    for (n, key), v in scrape.items():
        if n == "workqueue_depth" and dict(key).get("name") == queue:
            return v
    return None


def _healthy(scrape: alerting.Samples) -> bool:
    # Settled too: a key check that flips fans the accounts out on the reconciler's queue,
    # and a scrape taken then holds a depth no healthy operator keeps for 30 minutes.
    return (
        _value(scrape, "settings_controller_leader") == 1
        and _connected(scrape) == EVERY_KEY
        and _value(scrape, "settings_controller_accounts_not_ready") == 0
        and _depth(scrape, "account") == 0
    )


def _lease(holder: str, renewed: datetime.datetime, seconds: int) -> str:
    return json.dumps(
        {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": "settings-controller", "namespace": support.OPERATOR_NAMESPACE},
            "spec": {
                "holderIdentity": holder,
                "leaseDurationSeconds": seconds,
                "renewTime": renewed.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "acquireTime": renewed.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            },
        }
    )


@pytest.fixture(scope="module")
def states(
    operator: support.Operator,
    installed: Kube,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[States]:
    kube = installed
    operator.stop()  # one leader at a time: the session's operator checks no key
    tmp = pathlib.Path(tmp_path_factory.mktemp("prometheus"))
    out = States()
    suffix = tmp.name.rsplit("-", 1)[-1].lower().replace("_", "")[-6:]
    tenant, quota_ns = f"obs-tenant-{suffix}", f"obs-quota-{suffix}"
    for ns in (tenant, quota_ns):
        kube.kubectl("create", "namespace", ns)
    with simulator.Simulator(hang=5.0) as fake:
        op = support.Operator(
            kube, tmp / "operator.log", ("--verify-interval=30", "--verify-timeout=2"), fake.env()
        )
        drive = Driver(op)
        endpoints = connections_conftest.local_endpoints(fake)

        def declare(slots: dict[str, str]) -> None:
            body = connections_conftest.global_body(slots)
            support.apply_text(kube, json.dumps(body))

        def record(state: str, what: str, ok: Callable[[alerting.Samples], bool]) -> None:
            out.texts[state], out.scrapes[state] = drive.scrape_when(what, ok)

        try:
            fixtures.apply_keys(kube, GOOD)
            declare(endpoints)
            support.apply_text(kube, support.account_manifest(tenant, tenant))
            op.start()
            record("healthy", "leader, every key connected, every account Ready", _healthy)

            # Two Accounts claim one namespace: both blocked (NamespaceConflict).
            support.apply_text(kube, support.account_manifest(f"{tenant}-b", tenant))
            record(
                "conflict",
                "an account blocked",
                lambda s: (_value(s, "settings_controller_accounts_not_ready") or 0) >= 1,
            )
            kube.kubectl("delete", "account", f"{tenant}-b")
            record("healthy-again", "healthy after the conflict", _healthy)

            # A platform key the account uses is missing from the Secret.
            fixtures.apply_keys(kube, {k: v for k, v in GOOD.items() if k != "runware"})
            record(
                "missing-key",
                "runware missing: not connected, the account not Ready",
                lambda s: (
                    _connected(s) == EVERY_KEY - {("image_generation", "runware")}
                    and (_value(s, "settings_controller_accounts_not_ready") or 0) >= 1
                ),
            )
            fixtures.apply_keys(kube, GOOD)
            record("healthy-again", "healthy after the missing key", _healthy)

            # A key's endpoint refuses connections (nothing listens on that port).
            declare({**endpoints, "runware": f"http://127.0.0.1:{support.free_port()}/v1"})
            record(
                "unreachable",
                "runware unreachable: not connected",
                lambda s: _connected(s) == EVERY_KEY - {("image_generation", "runware")},
            )
            declare(endpoints)
            record("healthy-again", "healthy after the unreachable endpoint", _healthy)

            # Outputs it cannot write: a quota of no ConfigMaps in the account's namespace.
            quota = {
                "apiVersion": "v1",
                "kind": "ResourceQuota",
                "metadata": {"name": "no-configmaps", "namespace": quota_ns},
                "spec": {"hard": {"count/configmaps": "0", "count/secrets": "0"}},
            }
            support.apply_text(kube, json.dumps(quota))
            support.apply_text(kube, support.account_manifest(quota_ns, quota_ns))
            record(
                "failing",
                "writes failing, retried",
                lambda s: (
                    (_value(s, "settings_controller_errors_total", stage="write") or 0) >= 2
                    and (_value(s, "settings_controller_accounts_not_ready") or 0) >= 1
                ),
            )
            kube.kubectl("delete", "account", quota_ns)
            record("healthy-again", "healthy after the failing writes", _healthy)

            # Someone else holds the Lease: the operator stands by.
            op.stop()
            now = datetime.datetime.now(datetime.UTC)
            support.apply_text(kube, _lease("someone-else", now, 3600))
            op.start()  # /healthz answers from the start, standby or not
            record(
                "standby",
                "standing by",
                lambda s: _value(s, "settings_controller_leader") == 0,
            )
            op.stop()
            support.apply_text(kube, _lease("", now - datetime.timedelta(hours=2), 1))

            # The process is gone: the scrape is refused.
            with pytest.raises((urllib.error.URLError, OSError)):
                op.metrics()
            out.scrapes["down"] = alerting.refused()
            yield out
        finally:
            if op.proc is not None:
                op.stop()
            for ns in (tenant, quota_ns):
                kube.kubectl("delete", "account", ns, f"{ns}-b", "--ignore-not-found", check=False)
                kube.kubectl("delete", "namespace", ns, "--wait=false", check=False)
            kube.kubectl("apply", "-f", str(support.REPO / "examples" / "global.yaml"))
            fixtures.apply_keys(kube, fixtures.KEYS)
            operator.start()


@pytest.mark.cluster
def test_every_metric_the_rules_and_the_dashboard_use_is_served(states: States) -> None:
    served = alerting.series_names(states.scrapes["healthy"]) | alerting.SYNTHETIC
    used = {n for r in alerting.alerts().values() for n in alerting.metric_names(r["expr"])}
    used |= {n for _, e in alerting.dashboard_exprs() for n in alerting.metric_names(e)}
    assert used - served == set(), sorted(used - served)


@pytest.mark.cluster
def test_no_scrape_carries_a_key_fragment(states: States) -> None:
    """Labels name integrations and credentials, never a key: no 8-character run of any
    platform key in any state's scrape."""
    assert set(states.texts) >= {"healthy", "missing-key", "unreachable", "failing", "standby"}
    for state, text in states.texts.items():
        for key in GOOD.values():
            for i in range(len(key) - 7):
                assert key[i : i + 8] not in text, (state, key[:4])


@pytest.mark.cluster
def test_the_scrape_passes_promtool_lint(states: States, promtool: pathlib.Path) -> None:
    alerting.run(promtool, "check", "metrics", stdin=states.texts["healthy"])


@pytest.mark.cluster
def test_healthy_nothing_fires(
    states: States, promtool: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    timeline = Timeline().hold(states.scrapes["healthy"], 40)
    alerting.expect_alerts(promtool, tmp_path, timeline, [])


@pytest.mark.cluster
def test_every_dashboard_query_shows_data(
    states: States, promtool: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    """Each panel's query, on the healthy operator's series, returns something (an empty
    panel would fire its absent() rule)."""
    exprs = alerting.dashboard_exprs()
    rules = [{"alert": f"Empty{i}", "expr": f"absent({e})"} for i, (_, e) in enumerate(exprs)]
    timeline = Timeline().hold(states.scrapes["healthy"], 10)
    try:
        alerting.expect_alerts(
            promtool, tmp_path, timeline, [], names=[r["alert"] for r in rules], extra_rules=rules
        )
    except AssertionError as e:
        panels = "\n".join(f"Empty{i}: {title}: {expr}" for i, (title, expr) in enumerate(exprs))
        raise AssertionError(f"{e}\n{panels}") from None


@pytest.mark.cluster
def test_conflict_fires_accounts_not_ready(
    states: States, promtool: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    alerting.expect_alerts(
        promtool,
        tmp_path,
        states.after_healthy("conflict"),
        [Firing("SettingsControllerAccountsNotReady", NS)],
    )
    # Held for less than its 15 minutes, it does not fire yet.
    alerting.expect_alerts(promtool, tmp_path, states.after_healthy("conflict", held=14), [])


@pytest.mark.cluster
def test_missing_key_fires_accounts_not_ready_and_key_not_connected(
    states: States, promtool: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    alerting.expect_alerts(
        promtool,
        tmp_path,
        states.after_healthy("missing-key"),
        [
            Firing("SettingsControllerAccountsNotReady", NS),
            Firing(
                "SettingsControllerKeyNotConnected",
                {**NS, "integration": "image_generation", "credential": "runware"},
            ),
        ],
    )


@pytest.mark.cluster
def test_unreachable_endpoint_fires_key_not_connected_only(
    states: States, promtool: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    alerting.expect_alerts(
        promtool,
        tmp_path,
        states.after_healthy("unreachable"),
        [
            Firing(
                "SettingsControllerKeyNotConnected",
                {**NS, "integration": "image_generation", "credential": "runware"},
            )
        ],
    )


@pytest.mark.cluster
def test_failing_writes_fire_accounts_not_ready_and_count_reconcile_errors(
    states: States, promtool: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    failing, healthy = states.scrapes["failing"], states.scrapes["healthy"]
    alerting.expect_alerts(
        promtool,
        tmp_path,
        states.after_healthy("failing"),
        [Firing("SettingsControllerAccountsNotReady", NS)],
        names=[n for n in alerting.alerts() if n != "SettingsControllerReconcileErrors"],
    )
    # What the error alert reads grew in this state (its threshold: the next test).
    errors = "controller_runtime_reconcile_errors_total"
    assert (_value(failing, errors, controller="account") or 0) > (
        _value(healthy, errors, controller="account") or 0
    )


@pytest.mark.cluster
def test_reconcile_errors_fire_while_they_keep_coming(
    states: States, promtool: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    """The error counter of the failing state, as served (its labels), growing at one error
    a minute for 30 minutes fires; a burst that stopped 16 minutes ago does not."""
    failing = states.scrapes["failing"]
    keys = [
        k
        for k in failing
        if k[0] == "controller_runtime_reconcile_errors_total" and ("controller", "account") in k[1]
    ]
    assert len(keys) == 1, keys
    start = failing[keys[0]]
    growing = Timeline([({keys[0]: start + i}, 1) for i in range(31)])
    alerting.expect_alerts(
        promtool,
        tmp_path,
        growing,
        [Firing("SettingsControllerReconcileErrors", {**NS, "controller": "account"})],
        names=["SettingsControllerReconcileErrors"],
    )
    burst = Timeline([({keys[0]: start}, 5), ({keys[0]: start + 5}, 17)])
    alerting.expect_alerts(
        promtool, tmp_path, burst, [], names=["SettingsControllerReconcileErrors"]
    )


@pytest.mark.cluster
def test_standby_without_leader_fires_no_leader(
    states: States, promtool: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    alerting.expect_alerts(
        promtool,
        tmp_path,
        states.after_healthy("standby"),
        [Firing("SettingsControllerNoLeader", NS)],
        # A standby syncs nothing: whatever it says of accounts and keys is not a fault.
        names=["SettingsControllerNoLeader", "SettingsControllerDown"],
    )


@pytest.mark.cluster
def test_refused_scrapes_fire_down(
    states: States, promtool: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    alerting.expect_alerts(
        promtool,
        tmp_path,
        states.after_healthy("down", held=10),
        [Firing("SettingsControllerDown", NS)],
    )
    alerting.expect_alerts(promtool, tmp_path, states.after_healthy("down", held=4), [])
    # No target at all (the ServiceMonitor selects nothing): absent() fires, without labels.
    nothing: alerting.Samples = {("unrelated", (("job", "other"),)): 1.0}
    alerting.expect_alerts(
        promtool, tmp_path, Timeline().hold(nothing, 10), [Firing("SettingsControllerDown")]
    )


@pytest.mark.cluster
def test_queue_alerts_fire_on_the_served_queue_series(
    states: States, promtool: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    """The queue alerts' thresholds, on the series the operator serves (their labels, the
    healthy values), with the values a stuck queue would show."""
    healthy = states.scrapes["healthy"]

    def key(metric: str, **labels: str) -> tuple[str, alerting.Labels]:
        (k,) = [k for k in healthy if k[0] == metric and labels.items() <= dict(k[1]).items()]
        return k

    depth = key("workqueue_depth", name="account")
    longest = key("workqueue_longest_running_processor_seconds", name="account")
    slow = {
        k: v
        for k, v in healthy.items()
        if k[0] == "workqueue_queue_duration_seconds_bucket" and ("name", "account") in k[1]
    }
    assert slow, "no workqueue_queue_duration_seconds_bucket{name=account}"
    # Depth never 0 for 35 minutes; one item worked on for 10 minutes and more.
    stuck = Timeline([({**healthy, depth: 3.0, longest: 600.0 + 60 * i}, 1) for i in range(36)])
    # Every item waits 10 minutes: the buckets below 600 s stay, the rest grow 1 a minute.
    slow_timeline = Timeline(
        [
            ({k: v + (i if float(dict(k[1])["le"]) >= 600 else 0) for k, v in slow.items()}, 1)
            for i in range(31)
        ]
    )
    account = {**NS, "name": "account"}
    alerting.expect_alerts(
        promtool,
        tmp_path,
        stuck,
        [
            Firing("SettingsControllerWorkQueueNotDraining", account),
            Firing("SettingsControllerWorkerStuck", account),
        ],
        names=["SettingsControllerWorkQueueNotDraining", "SettingsControllerWorkerStuck"],
    )
    alerting.expect_alerts(
        promtool,
        tmp_path,
        slow_timeline,
        [Firing("SettingsControllerWorkQueueSlow", account)],
        names=["SettingsControllerWorkQueueSlow"],
    )
