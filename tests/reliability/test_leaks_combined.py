"""One fake key, planted everywhere a user could put it, in both modes; found nowhere after.

File mode: tests/filemode/test_leaks.py's declarations (the key literal in
overrides, defaults, accounts, nested, in every spelling) plus a key-shaped
value in a free-text field, through reconcile, validate, get and a watch that
is SIGKILLed and restarted; every output file (the SQLite record included) and
every line printed is searched.

Cluster mode, on the private control plane with the key admission policy
switched off (objects that bypassed admission): the key as the platform key
(rotated during the run), pasted by a tenant into both integrations in every
spelling and nesting, as a key-shaped value of an allowed field, and literal
in a second (ignored) global; the operator SIGKILLed and restarted half-way.
Key checks are on, against the provider simulator, whose 401 quotes the key the way
OpenAI's does. Then every ConfigMap, Event, Namespace, custom resource (status, annotations
including kopf's, labels), every Secret's metadata, and every operator log
line of the session is searched for the key, plain and base64. Keys may only
be in the data of the platform key Secret and of ``integration-credentials``.
"""

from __future__ import annotations

import base64
import json
import pathlib
import signal
import subprocess
import time
from typing import Any

import pytest

from tests.conftest import CLI, RunCli
from tests.connections import conftest as connections_conftest
from tests.filemode import test_leaks as filemode_leaks
from tests.harness.fixtures import Kube
from tests.operator import fixtures as operator_fixtures
from tests.operator import support
from tests.providers import simulator
from tests.reliability.conftest import Figures
from tests.reliability.private import PrivateCluster

KEY = support.FAKE_KEY  # the platform openai key, and what tenants paste
ROTATED = "sk-ROTATEDKEY-0xFEEDFACE-do-not-leak-11aa"
CHECKS = ("--verify-interval=30", "--verify-timeout=2")  # key checks on
KEY_POLICY = support.REPO / "deploy" / "policy" / "generated.yaml"
KEY_POLICY_BINDING = "settings-controller-overrides"
SPELLINGS = [
    "apiKey",
    "api_key",
    "OPENAI_API_KEY",
    "ApiKey",
    "clientSecret",
    "password",
    "auth_token",
]


def _forms(*keys: str) -> list[str]:
    out = []
    for k in keys:
        out += [k, base64.b64encode(k.encode()).decode(), json.dumps(k)[1:-1]]
    return out


def test_fake_key_reaches_nothing_in_file_mode(
    cli: RunCli, tmp_path: pathlib.Path, figures: Figures
) -> None:
    fkey = filemode_leaks.KEY
    decl, out = tmp_path / "decl", tmp_path / "out"
    filemode_leaks.write_tree(decl)
    (decl / "accounts" / "literal-global.yaml").unlink()  # keep one valid global
    extra = decl / "accounts" / "hostile.yaml"
    overrides = {name: fkey for name in SPELLINGS}
    overrides.update(model=fkey, sizes={"featured": fkey, "nested": {"api_key": fkey}})
    account = {
        "apiVersion": "integrations.igny8.com/v1alpha1",
        "kind": "Account",
        "metadata": {"name": "hostile"},
        "spec": {"plan": "pro", "namespace": "hostile"},
    }
    override = {
        "apiVersion": "integrations.igny8.com/v1alpha1",
        "kind": "IntegrationSettings",
        "metadata": {"name": "image_generation", "namespace": "hostile"},
        "spec": {"overrides": overrides},
    }
    extra.write_text(json.dumps(account) + "\n---\n" + json.dumps(override))
    printed: list[str] = []
    runs = 0
    for args in (
        ("reconcile", decl, "--output-dir", out),
        ("validate", decl),
        ("validate", "-o", "json", decl),
        ("get", "pro", "-d", decl, "-o", "json"),
        ("get", "pro", "-d", decl, "-o", "yaml"),
        ("get", "pro", "-d", decl),
    ):
        done = cli(*args)
        runs += 1
        printed += [done.stdout, done.stderr]
        assert "Traceback" not in done.stderr
    for round_ in range(2):  # a watch killed mid-pass, then one stopped cleanly
        log = tmp_path / f"watch-{round_}.log"
        with log.open("wb") as fh:
            proc = subprocess.Popen(
                [str(CLI), "watch", str(decl), "--output-dir", str(out)], stdout=fh, stderr=fh
            )
        time.sleep(1.5)
        extra.write_text(extra.read_text() + "\n")
        time.sleep(1.0)
        proc.send_signal(signal.SIGKILL if round_ == 0 else signal.SIGTERM)
        proc.wait(timeout=20)
        runs += 1
        printed.append(log.read_text(errors="replace"))
    assert (out / "hostile" / "image_generation.json").is_file()
    files = [p for p in out.rglob("*") if p.is_file()]
    leaked = [str(p) for p in files for form in _forms(fkey) if form.encode() in p.read_bytes()]
    leaked += [f"printed #{i}" for i, t in enumerate(printed) for f in _forms(fkey) if f in t]
    assert not leaked, leaked
    assert "stripped" in "".join(printed)  # the attempts were reported, by name
    figures["commands run"] = runs
    figures["output files searched"] = len(files)
    figures["places the key was planted"] = sum(
        p.read_text().count(fkey) for p in decl.rglob("*.yaml")
    )
    figures["leaks"] = len(leaked)


def _refused(kube: Kube) -> None:
    """The global says the openai key was refused (the provider's 401 quoted it)."""
    support.wait_json(
        kube,
        ("globalintegrationsettings", "default"),
        lambda o: any(
            c["credential"] == "apiKey" and c["reason"] == "InvalidKey"
            for c in o["status"]["connections"]
        ),
        60,
    )


def _policy_enforced(kube: Kube, namespace: str) -> bool:
    probe = support.override_manifest(namespace, "openai", {"api_key": "x"})
    proc = kube.kubectl(
        "apply", "--server-side", "--dry-run=server", "-f", "-", input=probe, check=False
    )
    return KEY_POLICY_BINDING in proc.stderr


@pytest.mark.cluster
def test_fake_key_reaches_nothing_in_cluster_mode(
    private: PrivateCluster, operator_factory: Any, figures: Figures
) -> None:
    kube = private.kube
    ns = "rel-leak"
    # Key checks on, against the simulator (TLS), refusing the key with a 401 quoting it.
    fake = simulator.Simulator().__enter__()
    fake.refuse.update({KEY, ROTATED})
    support.apply_text(kube, json.dumps(
        connections_conftest.global_body(connections_conftest.local_endpoints(fake))))  # fmt: skip
    op = operator_factory("leak-1", CHECKS, fake.env())
    started = [op]
    support.apply_text(kube, support.account_manifest(ns, ns, "pro"))
    support.wait_json(kube, ("configmap", "integration-settings", "-n", ns), lambda _: True, 120)
    kube.kubectl("delete", "validatingadmissionpolicybinding", KEY_POLICY_BINDING)
    try:
        support.until(lambda: not _policy_enforced(kube, ns), "key policy off", 60)
        openai = {name: KEY for name in SPELLINGS}
        openai.update(model="gpt-4o", nested={"deeper": {"api_key": KEY}}, temperature=KEY)
        image = {
            "model": KEY,  # a key-shaped value in a free-text field
            "sizes": {"featured": KEY, "x": {"secret": KEY}},
            "runware_api_key": KEY,
        }
        for name, overrides in (("openai", openai), ("image-generation", image)):
            kube.kubectl(
                "apply", "--server-side", "-f", "-",
                input=support.override_manifest(ns, name, overrides),
            )  # fmt: skip
        # An admin's mistake: a key literal in a second global's defaults. The
        # CRD schema refuses the unknown field: it is never stored.
        other = json.loads(
            kube.kubectl("get", "globalintegrationsettings", "default", "-o", "json").stdout
        )
        spec = other["spec"]
        spec["integrations"]["openai"]["defaults"]["openai_api_key"] = KEY
        refused = kube.kubectl(
            "apply", "--server-side", "-f", "-", check=False,
            input=json.dumps({"apiVersion": other["apiVersion"], "kind": other["kind"],
                              "metadata": {"name": "other"}, "spec": spec}),
        )  # fmt: skip
        assert refused.returncode != 0 and KEY not in refused.stderr, refused.stderr
        support.wait_json(
            kube,
            ("integrationsettings", "openai", "-n", ns),
            lambda o: (
                support.is_current(o)
                and support.condition(o)["reason"] == "CredentialFieldStripped"
            ),
            120,
        )
        _refused(kube)
        # SIGKILL the operator half-way, rotate the key while it is down, restart.
        op.proc.kill()  # type: ignore[union-attr]
        op.proc.wait()  # type: ignore[union-attr]
        operator_fixtures.apply_keys(kube, {**operator_fixtures.KEYS, "openai": ROTATED})
        op2 = operator_factory("leak-2", CHECKS, fake.env())
        started.append(op2)
        support.until(lambda: ("openai", ROTATED) in fake.received, "the rotated key checked")
        _refused(kube)
        support.wait_json(
            kube,
            ("secret", "integration-credentials", "-n", ns),
            lambda s: ROTATED in {base64.b64decode(v).decode() for v in s["data"].values()},
            120,
        )
        time.sleep(3)
        logs = op.log_text() + op2.log_text()
    finally:
        kube.kubectl("apply", "--server-side", "-f", str(KEY_POLICY))
        operator_fixtures.apply_keys(kube, operator_fixtures.KEYS)
        for running in started:  # before the global names the public endpoints again
            if running.proc is not None and running.proc.poll() is None:
                running.stop()
        kube.kubectl("apply", "-f", str(support.REPO / "examples" / "global.yaml"))
        fake.__exit__(None, None, None)
        kube.kubectl("delete", "globalintegrationsettings", "other", "--ignore-not-found")

    parts: dict[str, str] = {
        "configmaps": kube.kubectl("get", "configmaps", "-A", "-o", "json").stdout,
        "events": kube.kubectl("get", "events", "-A", "-o", "json").stdout,
        "namespaces": kube.kubectl("get", "namespaces", "-o", "json").stdout,
        "accounts, globals": kube.kubectl(
            "get", "accounts,globalintegrationsettings", "-o", "json"
        ).stdout,
        "logs of every operator in this session": logs
        + (private.paths.root / "operator-logs.txt").read_text(errors="replace")
        if (private.paths.root / "operator-logs.txt").exists()
        else logs,
    }
    for item in json.loads(kube.kubectl("get", "integrationsettings", "-A", "-o", "json").stdout)[
        "items"
    ]:
        # The tenant's own spec holds what it pasted; everything else of the object is searched.
        where = f"integrationsettings {item['metadata']['namespace']}/{item['metadata']['name']}"
        parts[where] = json.dumps({"metadata": item["metadata"], "status": item.get("status")})
    for secret in json.loads(kube.kubectl("get", "secrets", "-A", "-o", "json").stdout)["items"]:
        meta = secret["metadata"]
        parts[f"secret {meta['namespace']}/{meta['name']} metadata"] = json.dumps(meta)
        if meta["name"] not in ("integration-credentials", "platform-api-keys"):
            parts[f"secret {meta['namespace']}/{meta['name']} data"] = json.dumps(
                secret.get("data")
            )
    # kopf keeps nothing of its own on the objects.
    assert "kopf.zalando.org" not in "".join(parts.values())
    assert "last-handled-configuration" not in "".join(
        v for k, v in parts.items() if not k.startswith("logs")
    )
    assert "InvalidKey" in parts["events"]  # the connection Events are among what was searched
    fragments = [*_forms(KEY, ROTATED), simulator.quoted(KEY), simulator.quoted(ROTATED)]
    leaks = [where for where, text in parts.items() for f in fragments if f in text]
    assert not leaks, leaks
    figures["objects and logs searched"] = sum(
        len(json.loads(v)["items"]) if v.startswith("{") and '"items"' in v[:200] else 1
        for v in parts.values()
    )
    figures["key spellings pasted"] = len(SPELLINGS) + 6
    figures["leaks"] = len(leaks)
