"""Keys: refused at admission, stripped by the operator, never leaked; rotation reaches accounts."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import pytest

from tests.harness.fixtures import Kube
from tests.operator import fixtures, support
from tests.operator.support import condition, settings, wait_json

pytestmark = pytest.mark.cluster

# A key a tenant pastes into an override: found nowhere afterwards.
PASTED_KEY = "sk-PASTEDKEY-0xDEADBEEF-must-never-be-stored-4c1e"
KEY_POLICY = support.REPO / "deploy" / "policy" / "generated.yaml"
KEY_POLICY_BINDING = "settings-controller-overrides"


@pytest.fixture
def account(installed: Kube, operator: support.Operator, tenant_ns: str) -> Iterator[str]:
    support.apply_text(installed, support.account_manifest(tenant_ns, tenant_ns))
    wait_json(installed, ("configmap", "integration-settings", "-n", tenant_ns), lambda cm: True)
    yield tenant_ns
    installed.kubectl("delete", "account", tenant_ns, "--ignore-not-found", "--wait=false")


def _key_policy_enforced(kube: Kube, namespace: str) -> bool:
    """Whether the API server (its policy cache, not just etcd) refuses a key right now."""
    probe = support.override_manifest(namespace, "openai", {"api_key": "x"})
    proc = kube.kubectl(
        "apply", "--server-side", "--dry-run=server", "-f", "-", input=probe, check=False
    )
    return KEY_POLICY_BINDING in proc.stderr


@pytest.fixture
def without_key_policy(installed: Kube, account: str) -> Iterator[None]:
    """The cluster without the admission rule: only the operator stands in the way."""
    installed.kubectl("delete", "validatingadmissionpolicybinding", KEY_POLICY_BINDING)
    support.until(lambda: not _key_policy_enforced(installed, account), "key policy switched off")
    yield
    installed.kubectl("apply", "--server-side", "-f", str(KEY_POLICY))
    support.until(lambda: _key_policy_enforced(installed, account), "key policy back on")


def test_key_in_an_override_is_refused_by_kubectl_apply(installed: Kube, account: str) -> None:
    manifest = support.override_manifest(
        account, "openai", {"model": "gpt-4o", "openai_api_key": PASTED_KEY}
    )
    proc = support.apply_text(installed, manifest, check=False)
    assert proc.returncode != 0
    assert "openai_api_key looks like a platform key" in proc.stderr
    assert "come from the GlobalIntegrationSettings credentials" in proc.stderr
    gone = installed.kubectl("get", "integrationsettings", "openai", "-n", account, check=False)
    assert "NotFound" in gone.stderr


def _everything_but_the_override_spec(kube: Kube) -> str:
    """Every place a key must never reach, as one text to search."""
    parts = [
        kube.kubectl("get", "configmaps", "-A", "-o", "json").stdout,
        kube.kubectl("get", "events", "-A", "-o", "json").stdout,
        kube.kubectl("get", "accounts,globalintegrationsettings", "-o", "json").stdout,
    ]
    overrides = json.loads(kube.kubectl("get", "integrationsettings", "-A", "-o", "json").stdout)
    for item in overrides["items"]:
        parts.append(json.dumps(item.get("status", {})))
        parts.append(json.dumps(item["metadata"].get("annotations", {})))
    for secret in json.loads(kube.kubectl("get", "secrets", "-A", "-o", "json").stdout)["items"]:
        if secret["metadata"]["namespace"] != support.OPERATOR_NAMESPACE:
            # Where keys live: the data of the platform and credential Secrets,
            # never their metadata.
            parts.append(json.dumps(secret["metadata"]))
    return "\n".join(parts)


@pytest.mark.usefixtures("without_key_policy")
def test_key_in_an_override_is_stripped_and_never_leaks(
    installed: Kube, operator: support.Operator, account: str
) -> None:
    manifest = support.override_manifest(
        account, "openai", {"model": "gpt-4o", "apiKey": PASTED_KEY}
    )
    # Server-side apply: no client-side last-applied annotation holding the body.
    installed.kubectl("apply", "--server-side", "-f", "-", input=manifest)
    override = wait_json(
        installed,
        ("integrationsettings", "openai", "-n", account),
        lambda o: support.is_current(o) and condition(o)["reason"] == "CredentialFieldStripped",
        what="the override reported as an attempt to set a key",
    )
    assert condition(override)["status"] == "False"
    assert "apiKey" in condition(override)["message"]
    assert override["status"]["appliedFields"] == ["model"]
    cm = wait_json(
        installed,
        ("configmap", "integration-settings", "-n", account),
        lambda cm: settings(cm, "openai")["model"] == "gpt-4o",
    )
    assert "apiKey" not in settings(cm, "openai")
    events = wait_json(
        installed,
        ("events", "-n", account, "--field-selector", "involvedObject.name=openai"),
        lambda e: any(i["reason"] == "CredentialFieldStripped" for i in e["items"]),
    )
    assert all(i["type"] == "Warning" for i in events["items"])
    # kopf keeps nothing on the object: no diff base, no progress, no finalizer.
    assert not override["metadata"].get("finalizers")
    assert not any(
        "kopf" in k or "last-handled" in k for k in override["metadata"].get("annotations", {})
    )

    haystack = _everything_but_the_override_spec(installed) + operator.log_text()
    assert PASTED_KEY not in haystack
    assert base64.b64encode(PASTED_KEY.encode()).decode() not in haystack


def test_platform_keys_stay_in_secrets(
    installed: Kube, operator: support.Operator, account: str
) -> None:
    wait_json(
        installed,
        ("secret", "integration-credentials", "-n", account),
        lambda s: "openai.apiKey" in s["data"],
    )
    haystack = _everything_but_the_override_spec(installed) + operator.log_text()
    for value in fixtures.KEYS.values():
        assert value not in haystack
        assert base64.b64encode(value.encode()).decode() not in haystack


def _decoded(secret: support.Json, slot: str) -> str | None:
    value = secret.get("data", {}).get(slot)
    return base64.b64decode(value).decode() if value else None


def test_rotation_reaches_every_account(
    installed: Kube, operator: support.Operator, account: str
) -> None:
    other = f"{account}-b"
    installed.kubectl("create", "namespace", other)
    support.apply_text(installed, support.account_manifest(other, other))
    try:
        for ns in (account, other):
            wait_json(
                installed,
                ("secret", "integration-credentials", "-n", ns),
                lambda s: "openai.apiKey" in s["data"],
            )
        fixtures.apply_keys(installed, {**fixtures.KEYS, "openai": "sk-rotated-0002"})
        for ns in (account, other):
            wait_json(
                installed,
                ("secret", "integration-credentials", "-n", ns),
                lambda s: _decoded(s, "openai.apiKey") == "sk-rotated-0002",
                what=f"the rotated key in {ns}",
            )
        # A key removed from the Secret: the global says which, never its value.
        missing = {k: v for k, v in fixtures.KEYS.items() if k != "dalle"}
        fixtures.apply_keys(installed, missing)
        glob = wait_json(
            installed,
            ("globalintegrationsettings", "default"),
            lambda g: condition(g, "CredentialsReady")["status"] == "False",
        )
        message = condition(glob, "CredentialsReady")["message"]
        assert "platform-api-keys/dalle" in message
        assert fixtures.KEYS["dalle"] not in message
        wait_json(
            installed,
            ("secret", "integration-credentials", "-n", account),
            lambda s: "image_generation.dalle" not in s["data"],
        )
    finally:
        fixtures.apply_keys(installed, fixtures.KEYS)
        installed.kubectl("delete", "account", other, "--ignore-not-found", "--wait=false")
        installed.kubectl("delete", "namespace", other, "--ignore-not-found", "--wait=false")
    wait_json(
        installed,
        ("globalintegrationsettings", "default"),
        lambda g: condition(g, "CredentialsReady")["status"] == "True",
    )
    wait_json(
        installed,
        ("secret", "integration-credentials", "-n", account),
        lambda s: (
            _decoded(s, "openai.apiKey") == fixtures.KEYS["openai"]
            and _decoded(s, "image_generation.dalle") == fixtures.KEYS["dalle"]
        ),
        what="the original keys back",
    )
