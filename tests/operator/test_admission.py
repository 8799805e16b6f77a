"""Admission refuses every bad override, key and reserved namespace, in agreement with the core.

Each case of ``OVERRIDE_CASES`` is created with kubectl on the real control
plane (deploy/policy installed) and run through the core
(``merging.screen_overrides``, what the operator does with an object that got
in); both must give the declared verdict. Before the generated policies
(``controller.generators.policies``) every refused case here except the key-like
names (the old deny-list) was admitted and stored: unknown fields, spelling
tricks (issue 10 item 7), wrong types and ranges, values outside
``allowedValues``, key-shaped values (issue 16 item 1), the ~1,200-level
object (issue 10 item 1), keys in the global (item 4) and Accounts in
kube-system (item 11).
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from controller import schemafiles
from controller.core import credentials, declarations, merging
from controller.generators import policies
from tests.core import keyshapes
from tests.harness.fixtures import Kube
from tests.operator import support
from tests.operator.support import condition, wait_json

pytestmark = pytest.mark.cluster

CATALOG = schemafiles.load_catalog()
GLOBAL = yaml.safe_load((support.REPO / "examples" / "global.yaml").read_text())
GENERATED = support.REPO / "deploy" / "policy" / "generated.yaml"
KEY = "sk-proj-AbCdEf0123456789PastedKey"

OK, REFUSED = True, False


def case(name: str, overrides: dict[str, Any], admitted: bool, field: str | None = None) -> Any:
    return pytest.param(name, overrides, admitted, field, id=f"{name}:{json.dumps(overrides)[:60]}")


OVERRIDE_CASES = [
    case("openai", {"model": "gpt-4o"}, OK),
    case("openai", {"temperature": 0.8, "max_tokens": 100}, OK),
    case("openai", {"temperature": 0, "max_tokens": 1000000}, OK),
    case("openai", {"temperature": 2}, OK),
    case("openai", {}, OK),
    case("openai", {"temperature": 5}, REFUSED, "temperature"),
    case("openai", {"temperature": -0.1}, REFUSED, "temperature"),
    case("openai", {"temperature": "hot"}, REFUSED, "temperature"),
    case("openai", {"temperature": True}, REFUSED, "temperature"),
    case("openai", {"max_tokens": -1}, REFUSED, "max_tokens"),
    case("openai", {"max_tokens": 0}, REFUSED, "max_tokens"),
    case("openai", {"max_tokens": 1.5}, REFUSED, "max_tokens"),
    case("openai", {"max_tokens": 2000000}, REFUSED, "max_tokens"),
    case("openai", {"max_tokens": "100"}, REFUSED, "max_tokens"),
    case("openai", {"model": "gpt-3"}, REFUSED, "model"),  # not in the global's allowedValues
    case("openai", {"model": ""}, REFUSED, "model"),
    case("openai", {"model": {"a": "b"}}, REFUSED, "model"),
    case("openai", {"model": ["gpt-4o"]}, REFUSED, "model"),
    case("openai", {"model": KEY}, REFUSED, "spec.overrides.model"),
    case("openai", {"service": "openai"}, REFUSED, "service"),  # image_generation's field
    case("openai", {"unknown": 1}, REFUSED, "unknown"),
    # Issue 10 item 7: the deny-list let all of these through.
    case("openai", {"apiKey": "x"}, REFUSED, "apiKey"),
    case("openai", {"openai_api_key": "x"}, REFUSED, "openai_api_key"),
    case("openai", {"api.key": "x"}, REFUSED, "api.key"),
    case("openai", {"api__key": "x"}, REFUSED, "api__key"),
    case("openai", {"private.key": "x"}, REFUSED, "private.key"),
    case("openai", {"access.key": "x"}, REFUSED, "access.key"),
    case("openai", {"API KEY": "x"}, REFUSED, "API KEY"),
    case("openai", {"\u0430piKey": "x"}, REFUSED, "piKey"),  # Cyrillic a
    case("openai", {"\uff41\uff50\uff49\uff2b\uff45\uff59": "x"}, REFUSED, "spec.overrides"),
    case("openai", {"api\u200bKey": "x"}, REFUSED, "Key"),
    case("openai", {" sk-live-abc123": "x"}, REFUSED, "spec.overrides"),  # a key as a name
    case("image-generation", {"service": "runware", "image_quality": "hd"}, OK),
    case("image-generation", {"sizes": {"featured": "512x512", "inline_2": "64x48"}}, OK),
    case("image-generation", {"model": "runware:97@1", "image_style": "natural"}, OK),
    case("image-generation", {"model": "org/sk-abcdef0123456789"}, REFUSED, "spec.overrides.model"),
    case("image-generation", {"service": "midjourney"}, REFUSED, "service"),
    case("image-generation", {"image_style": "bold"}, REFUSED, "image_style"),
    case("image-generation", {"sizes": {"featured": "big"}}, REFUSED, "sizes"),
    case("image-generation", {"sizes": {"featured": "1024*1024"}}, REFUSED, "sizes"),
    case("image-generation", {"sizes": {"featured": "0x10"}}, REFUSED, "sizes"),
    case("image-generation", {"sizes": {"Featured": "10x10"}}, REFUSED, "sizes"),
    case("image-generation", {"sizes": {}}, REFUSED, "sizes"),
    case("image-generation", {"sizes": "1024x1024"}, REFUSED, "sizes"),
    case("image-generation", {"sizes": {"featured": {"api_key": "x"}}}, REFUSED, "sizes"),
    case("image-generation", {"sizes": {"api_key": "10x10"}}, REFUSED, "sizes"),  # item 7
    case("image-generation", {"sizes": {"sk_live_abcdef123": "10x10"}}, REFUSED, "sizes"),
    case("image-generation", {"temperature": 1}, REFUSED, "temperature"),
]


def core_admits(name: str, overrides: dict[str, Any]) -> bool:
    """What the operator does with the same object: every field kept, nothing reported."""
    global_, problems = declarations.parse(CATALOG, GLOBAL)
    assert isinstance(global_, declarations.GlobalSettings), problems
    body = json.loads(support.override_manifest("acct", name, overrides))
    override, problems = declarations.parse(CATALOG, body)
    if not isinstance(override, declarations.IntegrationSettings):
        return False
    itype = CATALOG.integrations[override.type]
    accepted, found = merging.screen_overrides(
        CATALOG, itype, global_.integrations[override.type], override
    )
    return not found and accepted == overrides


def secrets_in(overrides: Any) -> list[str]:
    """Every key-shaped string in ``overrides``: never in a refusal message."""
    found = [*credentials.nested_names(overrides), *credentials.nested_values(overrides)]
    return [s for s in found if credentials.looks_like_key_value(s)]


def create(kube: Kube, namespace: str, name: str, overrides: Any) -> Any:
    return kube.kubectl(
        "create", "-f", "-", input=support.override_manifest(namespace, name, overrides),
        check=False,
    )  # fmt: skip


@pytest.mark.parametrize(("name", "overrides", "admitted", "field"), OVERRIDE_CASES)
def test_admission_and_core_agree(
    installed: Kube,
    namespace: str,
    name: str,
    overrides: dict[str, Any],
    admitted: bool,
    field: str | None,
) -> None:
    assert core_admits(name, overrides) is admitted, "the core's verdict"
    proc = create(installed, namespace, name, overrides)
    stored = installed.kubectl("get", "integrationsettings", name, "-n", namespace, check=False)
    if admitted:
        assert proc.returncode == 0, proc.stderr
        installed.kubectl("delete", "integrationsettings", name, "-n", namespace)
        return
    assert proc.returncode != 0, "admitted, but the core refuses it"
    assert "ValidatingAdmissionPolicy" in proc.stderr, proc.stderr
    assert "NotFound" in stored.stderr, "refused, yet stored"
    assert field is not None and field in proc.stderr, proc.stderr
    for secret in secrets_in(overrides):
        assert secret.strip() not in proc.stderr


@pytest.mark.parametrize("value", keyshapes.KEY_SHAPED + keyshapes.NOT_KEY_SHAPED)
def test_key_shapes_agree(installed: Kube, namespace: str, value: str) -> None:
    """The core's key-shape patterns, as generated CEL, on the same strings as tests/core."""
    overrides = {"model": value}
    admitted = core_admits("image-generation", overrides)
    assert admitted is not credentials.looks_like_key_value(value) or not admitted
    proc = create(installed, namespace, "image-generation", overrides)
    assert (proc.returncode == 0) is admitted, proc.stderr
    if credentials.looks_like_key_value(value):
        assert "looks like an API key" in proc.stderr and value.strip() not in proc.stderr


def test_messages_say_what_is_allowed(installed: Kube, namespace: str) -> None:
    expected = [
        ("openai", "temperature", 5, "spec.overrides.temperature: must be a number from 0 to 2"),
        ("openai", "max_tokens", -1, "must be an integer from 1 to 1000000"),
        ("openai", "model", "gpt-3",
         "spec.overrides.model: must be one of the allowed values: gpt-4o-mini, gpt-4o, gpt-4.1"),
        ("openai", "api.key", "x",
         "spec.overrides: api.key looks like a platform key and is refused: platform keys "
         "cannot be set in an account's overrides; they come from the "
         "GlobalIntegrationSettings credentials"),
        ("openai", "top_p", 1,
         "spec.overrides: top_p: not an overridable field of openai (overridable: model, "
         "temperature, max_tokens)"),
        ("image-generation", "sizes", {"a": "1"},
         "spec.overrides.sizes: must be a map of 1 to 32 names matching ^[a-z][a-z0-9_]{0,62}$ "
         "to a string matching ^[1-9][0-9]{0,4}x[1-9][0-9]{0,4}$ (WIDTHxHEIGHT in pixels"),
        ("image-generation", "service", "x",
         "spec.overrides.service: must be one of openai, runware"),
    ]  # fmt: skip
    for name, field, value, text in expected:
        proc = create(installed, namespace, name, {field: value})
        assert text in proc.stderr, proc.stderr


def _nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


@pytest.mark.parametrize(
    ("name", "template"),
    [
        pytest.param("openai", '{"deep":%s}', id="unknown-name"),
        pytest.param("openai", '{"model":%s}', id="under-model"),
        pytest.param("image-generation", '{"sizes":{"featured":%s}}', id="under-sizes"),
    ],
)
def test_deep_nesting_is_refused_for_the_tenant(
    installed: Kube, namespace: str, tmp_path: pathlib.Path, name: str, template: str
) -> None:
    """Issue 10 item 1: ~1,200 levels created with ``kubectl create --raw`` as the tenant were
    stored, and crash-looped the operator. Now admission refuses them; nothing is stored."""
    installed.kubectl(
        "-n", namespace, "create", "rolebinding", "tenant-settings",
        "--clusterrole=settings-controller-tenant", "--user=tenant",
    )  # fmt: skip
    body = (
        '{"apiVersion":"integrations.igny8.com/v1alpha1","kind":"IntegrationSettings",'
        f'"metadata":{{"name":"{name}","namespace":"{namespace}"}},'
        f'"spec":{{"overrides":{template % _nested(1200)}}}}}'
    )
    assert 6000 < len(body) < 9000
    path = tmp_path / "deep.json"
    path.write_text(body)
    url = f"/apis/{support.GROUP}/v1alpha1/namespaces/{namespace}/integrationsettings"
    proc = installed.kubectl(
        "create", "--raw", url, "-f", str(path), kubeconfig=installed.tenant_kubeconfig, check=False
    )
    assert proc.returncode != 0
    assert "settings-controller-overrides" in proc.stderr, proc.stderr[:2000]
    stored = installed.kubectl("get", "integrationsettings", "-n", namespace, "-o", "name")
    assert stored.stdout.strip() == ""


def _global_with(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    body = json.loads(json.dumps(GLOBAL))
    holder = body["spec"]["integrations"]
    for part in path[:-1]:
        holder = holder[part]
    holder[path[-1]] = value
    return body


GLOBAL_CASES = [
    pytest.param(("image_generation", "defaults", "model"), KEY, id="default"),
    pytest.param(("openai", "defaults", "model"), "org/sk-abcdef0123456789", id="default-inside"),
    pytest.param(("image_generation", "defaults", "sizes"), {"sk_live_abc123": "1x1"}, id="size-name"),
    pytest.param(("openai", "allowedValues", "model"), ["gpt-4o-mini", KEY], id="allowed-value"),
    pytest.param(("openai", "credentials", "apiKey", "key"), KEY, id="secret-key-name"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "value"), GLOBAL_CASES)
def test_key_in_the_global_is_refused_at_admission(
    installed: Kube, path: tuple[str, ...], value: Any
) -> None:
    """Issue 10 items 4 and 10: these were stored; the defaults reached every ConfigMap."""
    body = _global_with(path, value)
    _, problems = declarations.parse(CATALOG, body)
    assert "KeyShapedValue" in [p.reason.value for p in problems]
    proc = installed.kubectl(
        "apply", "--server-side", "--force-conflicts", "--dry-run=server", "-f", "-", input=json.dumps(body),
        check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert policies.GLOBAL in proc.stderr, proc.stderr
    assert f"spec.integrations.{path[0]}.{path[1]}.{path[2]}" in proc.stderr
    for secret in secrets_in(value):
        assert secret not in proc.stderr


ENDPOINT_KEY = "sk-proj-AbCdEfGhIjKlMnOpQrStUvWx0123456789"


@pytest.mark.parametrize(
    ("endpoint", "problem"),
    [
        pytest.param(f"https://gw.internal/v1/{ENDPOINT_KEY}", "looks like it holds", id="path"),
        pytest.param(f"https://gw.internal/v1?key={ENDPOINT_KEY}", "looks like it holds", id="query"),
        pytest.param(
            "https://gw.internal/AbCdEfGhIjKlMnOpQrStUvWx0123456789/v1", "looks like it holds",
            id="runware-shaped",
        ),
        pytest.param(f"https://u:{ENDPOINT_KEY}@gw.internal/v1", "holds userinfo", id="userinfo"),
        pytest.param(
            "https://gw.internal/" + "".join(f"%{b:02x}" for b in ENDPOINT_KEY.encode()) + "/v1",
            "holds a percent escape", id="percent-encoded",
        ),
    ],
)  # fmt: skip
def test_an_endpoint_holding_a_key_is_refused_at_admission_without_echo(
    installed: Kube, endpoint: str, problem: str
) -> None:
    """Issue 20 break 4: a key in an endpoint's path was admitted, sent with every check and
    shown in the global's status. Refused by the policy (and the core), by field; neither
    the key nor the URL is quoted (userinfo too: the CRD pattern no longer refuses '@', so
    the API server's own message, which quotes the value, never fires)."""
    body = _global_with(("openai", "credentials", "apiKey", "endpoint"), endpoint)
    _, found = declarations.parse(CATALOG, body)
    assert [p.reason.value for p in found] == ["KeyShapedValue"]
    proc = installed.kubectl(
        "apply", "--server-side", "--force-conflicts", "--dry-run=server", "-f", "-", input=json.dumps(body),
        check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert policies.GLOBAL in proc.stderr, proc.stderr
    assert f"spec.integrations.openai.credentials.apiKey.endpoint: {problem}" in proc.stderr
    assert "gw.internal" not in proc.stderr
    secret = ENDPOINT_KEY if ENDPOINT_KEY in endpoint else endpoint.split("/")[3]
    assert not [
        secret[i : i + 8] for i in range(len(secret) - 7) if secret[i : i + 8] in proc.stderr
    ]


def test_an_ordinary_endpoint_is_admitted(installed: Kube) -> None:
    body = _global_with(
        ("openai", "credentials", "apiKey", "endpoint"),
        "https://myres.openai.azure.com/openai/deployments/gpt-4o-mini",
    )
    installed.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--dry-run=server",
        "-f",
        "-",
        input=json.dumps(body),
    )


@pytest.mark.parametrize("namespace_name", declarations.RESERVED_NAMESPACES)
def test_reserved_namespace_is_refused_at_admission(installed: Kube, namespace_name: str) -> None:
    """Issue 10 item 11: an Account claiming kube-system was accepted; keys were copied there."""
    proc = support.apply_text(
        installed, support.account_manifest("reserved-probe", namespace_name), check=False
    )
    assert proc.returncode != 0
    assert policies.ACCOUNTS in proc.stderr
    assert f"spec.namespace: {namespace_name} is reserved" in proc.stderr
    gone = installed.kubectl("get", "account", "reserved-probe", check=False)
    assert "NotFound" in gone.stderr


def _enforced(kube: Kube, binding: str, probe: str) -> bool:
    proc = kube.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--dry-run=server",
        "-f",
        "-",
        input=probe,
        check=False,
    )
    return binding in proc.stderr


@pytest.fixture
def without_binding(installed: Kube, request: pytest.FixtureRequest) -> Iterator[None]:
    """The cluster without one generated policy: only the operator's own checks stand."""
    binding, probe = request.param
    installed.kubectl("delete", "validatingadmissionpolicybinding", binding)
    support.until(lambda: not _enforced(installed, binding, probe), f"{binding} off", 60)
    yield
    installed.kubectl("apply", "--server-side", "-f", str(GENERATED))
    support.until(lambda: _enforced(installed, binding, probe), f"{binding} back on", 60)


RESERVED_PROBE = support.account_manifest("reserved-probe", "kube-system")


@pytest.mark.parametrize("without_binding", [(policies.ACCOUNTS, RESERVED_PROBE)], indirect=True)
@pytest.mark.usefixtures("without_binding")
def test_operator_refuses_a_reserved_namespace(installed: Kube, operator: support.Operator) -> None:
    """The core check the operator runs, on a cluster without the accounts policy."""
    support.apply_text(installed, RESERVED_PROBE)
    try:
        account = wait_json(
            installed,
            ("account", "reserved-probe"),
            lambda a: support.is_current(a) and condition(a)["reason"] == "ReservedNamespace",
        )
        assert condition(account)["status"] == "False"
        assert "spec.namespace: kube-system is reserved" in condition(account)["message"]
        for kind in ("configmap/integration-settings", "secret/integration-credentials"):
            proc = installed.kubectl("get", kind, "-n", "kube-system", check=False)
            assert "NotFound" in proc.stderr, kind
        labels = support.get_json(installed, "namespace", "kube-system")["metadata"]["labels"]
        assert f"{support.GROUP}/plan" not in labels
    finally:
        installed.kubectl("delete", "account", "reserved-probe", "--ignore-not-found")


GLOBAL_PROBE = json.dumps(_global_with(("image_generation", "defaults", "model"), KEY))


@pytest.mark.parametrize("without_binding", [(policies.GLOBAL, GLOBAL_PROBE)], indirect=True)
@pytest.mark.usefixtures("without_binding")
def test_operator_refuses_a_key_in_the_global(
    installed: Kube, operator: support.Operator, tenant_ns: str
) -> None:
    """Issue 10 item 4, in the operator: the global is not Ready, by field, and its key
    reaches no ConfigMap (the accounts keep their last good settings)."""
    support.apply_text(installed, support.account_manifest(tenant_ns, tenant_ns))
    wait_json(installed, ("configmap", "integration-settings", "-n", tenant_ns), lambda cm: True)
    try:
        installed.kubectl(
            "apply", "--server-side", "--force-conflicts", "-f", "-", input=GLOBAL_PROBE
        )
        glob = wait_json(
            installed,
            ("globalintegrationsettings", "default"),
            lambda g: support.is_current(g) and condition(g)["reason"] == "KeyShapedValue",
        )
        message = condition(glob)["message"]
        assert "spec.integrations.image_generation.defaults.model" in message
        assert KEY not in message
        support.apply_text(installed, support.account_manifest(f"{tenant_ns}-b", f"{tenant_ns}-b"))
        account = wait_json(
            installed,
            ("account", f"{tenant_ns}-b"),
            lambda a: support.is_current(a) and condition(a)["status"] == "False",
        )
        assert KEY not in json.dumps(account)
        everything = installed.kubectl("get", "configmaps,events", "-A", "-o", "json").stdout
        assert KEY not in everything
    finally:
        installed.kubectl(
            "apply", "--server-side", "--force-conflicts", "-f",
            str(support.REPO / "examples" / "global.yaml"),
        )  # fmt: skip
        installed.kubectl("delete", "account", tenant_ns, f"{tenant_ns}-b", "--ignore-not-found")
        installed.kubectl(
            "delete", "namespace", f"{tenant_ns}-b", "--ignore-not-found", "--wait=false"
        )
    wait_json(
        installed,
        ("globalintegrationsettings", "default"),
        lambda g: support.is_current(g) and condition(g)["status"] == "True",
    )
