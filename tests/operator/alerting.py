"""The shipped alerts and dashboard (deploy/prometheus) against real scrapes, with promtool.

A scrape of the operator's /metrics becomes the samples Prometheus would store: each
sample gets the target labels a ServiceMonitor adds (``job``, ``namespace``,
``instance``, ``pod``) and an ``up`` series (1 for an answered scrape, 0 for a refused
one, as Prometheus records it). A timeline of scrapes (each held for some minutes)
becomes ``promtool test rules`` input_series; the expected alerts of each state are
asserted at the end of the timeline.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import re
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import yaml
from prometheus_client import parser

from tests.operator import support

PROMETHEUS = support.REPO / "deploy" / "prometheus"
RULE = PROMETHEUS / "rules" / "prometheusrule.yaml"
DASHBOARD = PROMETHEUS / "dashboard" / "settings-controller.json"

# What a ServiceMonitor on the metrics Service of deploy/manager adds to every sample.
TARGET = {
    "job": "settings-controller-metrics",
    "namespace": support.OPERATOR_NAMESPACE,
    "instance": "10.0.0.1:8443",
    "pod": "settings-controller-0",
}
# Series Prometheus itself makes for each scrape (no target exposes them).
SYNTHETIC = frozenset({"up"})
# Grafana's variables, as the dashboard's defaults resolve them.
GRAFANA_VARIABLES = {"$__rate_interval": "2m", "$namespace": ".*"}

Labels = tuple[tuple[str, str], ...]
Samples = dict[tuple[str, Labels], float]


def samples(text: str, target: Mapping[str, str] = TARGET) -> Samples:
    """The samples of one answered scrape, as Prometheus stores them (``up`` included)."""
    out: Samples = {}
    for family in parser.text_string_to_metric_families(text):
        for sample in family.samples:
            # honor_labels false (a ServiceMonitor's default): a clash keeps the target's.
            labels = {(f"exported_{k}" if k in target else k): v for k, v in sample.labels.items()}
            labels.update(target)
            out[(sample.name, tuple(sorted(labels.items())))] = float(sample.value)
    out[("up", tuple(sorted(target.items())))] = 1.0
    return out


def refused(target: Mapping[str, str] = TARGET) -> Samples:
    """A scrape that got no answer: Prometheus records ``up`` 0 and nothing else."""
    return {("up", tuple(sorted(target.items()))): 0.0}


def _quote(value: str) -> str:
    # PromQL string literal: json's escaping of \\, " and control characters is valid there.
    return json.dumps(value, ensure_ascii=False)


def series_name(name: str, labels: Labels) -> str:
    inner = ",".join(f"{k}={_quote(v)}" for k, v in labels)
    return f"{name}{{{inner}}}"


def _value(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "Inf" if v > 0 else "-Inf"
    return repr(v)


@dataclasses.dataclass
class Timeline:
    """Scrapes, each held for ``minutes`` one-minute steps (a missing series: no sample)."""

    steps: list[tuple[Samples, int]] = dataclasses.field(default_factory=list)

    def hold(self, scrape: Samples, minutes: int) -> Timeline:
        self.steps.append((scrape, minutes))
        return self

    @property
    def minutes(self) -> int:
        return sum(m for _, m in self.steps)

    def input_series(self) -> list[dict[str, str]]:
        keys: dict[tuple[str, Labels], None] = {}
        for scrape, _ in self.steps:
            keys.update(dict.fromkeys(scrape))
        out = []
        for key in keys:
            values: list[str] = []
            for scrape, minutes in self.steps:
                v = scrape.get(key)
                values += [("_" if v is None else _value(v))] * minutes
            out.append({"series": series_name(*key), "values": " ".join(values)})
        return out


def rule_groups() -> dict[str, Any]:
    """The PrometheusRule's spec: a plain Prometheus rule file."""
    (doc,) = [d for d in yaml.safe_load_all(RULE.read_text()) if d]
    assert doc["kind"] == "PrometheusRule"
    spec: dict[str, Any] = doc["spec"]
    return spec


def alerts() -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for g in rule_groups()["groups"] for r in g["rules"] if "alert" in r}


def dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title, query) for every target of every panel, Grafana variables resolved."""
    out = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for var, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(var, value)
            out.append((panel["title"], expr))
    return out


_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless"}
    | {"offset", "bool", "inf", "nan", "atan2"}
)


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: every identifier left once strings, label
    matchers, label lists, ranges and numbers are gone, except functions and keywords."""
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', " ", expr)
    bare = re.sub(r"\{[^}]*\}", " ", bare)
    bare = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", bare)
    bare = re.sub(r"\[[^\]]*\]", " ", bare)
    bare = re.sub(r"\b\d[\w.]*", " ", bare)  # numbers and durations (5m, 1e3)
    names = set()
    for m in re.finditer(r"[a-zA-Z_:][\w:]*", bare):
        word = m.group(0)
        if word.lower() in _KEYWORDS or re.match(r"\s*\(", bare[m.end() :]):
            continue
        names.add(word)
    return names


def series_names(scrape: Samples) -> set[str]:
    return {name for name, _ in scrape}


# --- promtool ----------------------------------------------------------------------


def run(promtool: pathlib.Path, *args: str | pathlib.Path, stdin: str | None = None) -> str:
    done = subprocess.run(
        [str(promtool), *map(str, args)],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"promtool {args}:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


@dataclasses.dataclass(frozen=True)
class Firing:
    alert: str
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)


def write_rules(directory: pathlib.Path, extra: Iterable[dict[str, Any]] = ()) -> pathlib.Path:
    """The rule file for ``promtool test rules``: the shipped groups without their
    annotations (promtool compares annotations too; ``check rules`` checks their
    templates), and ``extra`` rules in a group of their own."""
    groups = []
    for group in rule_groups()["groups"]:
        rules = [{k: v for k, v in r.items() if k != "annotations"} for r in group["rules"]]
        groups.append({**group, "rules": rules})
    extra = list(extra)
    if extra:
        groups.append({"name": "extra", "rules": extra})
    path = directory / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    return path


def expect_alerts(
    promtool: pathlib.Path,
    directory: pathlib.Path,
    timeline: Timeline,
    firing: Sequence[Firing],
    names: Iterable[str] | None = None,
    extra_rules: Iterable[dict[str, Any]] = (),
) -> None:
    """``promtool test rules``: at the end of ``timeline``, of the alerts ``names`` (every
    shipped alert by default), exactly ``firing`` fire, each with its labels (the rule's
    own ``severity`` added here)."""
    shipped = alerts()
    names = list(names if names is not None else shipped)
    assert {f.alert for f in firing} <= set(names), firing
    tests = []
    for name in names:
        own = shipped.get(name, {}).get("labels", {})
        fires = [f for f in firing if f.alert == name]
        tests.append(
            {
                "eval_time": f"{timeline.minutes - 1}m",
                "alertname": name,
                "exp_alerts": [{"exp_labels": {**own, **f.labels}} for f in fires],
            }
        )
    spec = {
        "rule_files": [str(write_rules(directory, extra_rules))],
        "evaluation_interval": "1m",
        "tests": [
            {"interval": "1m", "input_series": timeline.input_series(), "alert_rule_test": tests}
        ],
    }
    path = directory / "test.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    run(promtool, "test", "rules", path)
