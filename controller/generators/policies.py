"""The ValidatingAdmissionPolicies generated from the catalog (``schemas/``), never written by hand.

``make manifests`` writes them to ``deploy/policy/generated.yaml``; a test
fails when the committed file drifts. Each refusal message names the field and
what is allowed, never the refused value (it may be a pasted key). The
operator enforces the same rules itself (``controller.core``): a cluster may
lack these policies, and the global may change after an object was admitted.

* ``overrides``: an IntegrationSettings' ``spec.overrides`` holds only the
  integration's overridable fields (an allow-list: no spelling of a key name
  gets through), each of its schema's type, range and format, with no value
  shaped like a provider key. Nothing is left to nest: every admitted value is
  a scalar or a map of scalars, so the ~1,200-level object that crashed the
  operator is refused here. ``overrides`` keeps preserving unknown fields in
  the CRD on purpose: pruning would drop a bad name silently (the apply
  "succeeds"), while this policy refuses it with a message.
* ``overrides-allowed-values``: the values the live global allows
  (``allowedValues``), the GlobalIntegrationSettings ``default`` as parameter.
* ``global``: no key-shaped value in the global's defaults or allowedValues
  (it would be copied into every account's ConfigMap), none as a Secret
  reference (it would be echoed in the global's status).
* ``accounts``: no Account claims a reserved namespace.
* ``operator-*``: the operator's own writes, matched by its ServiceAccount's name in
  whichever namespace it is installed (``MATCHES_OPERATOR``):
  only the Opaque Secret ``integration-credentials`` and the ConfigMap
  ``integration-settings``, owned by an Account, outside reserved namespaces and
  its own;
  on Namespaces only the plan and account labels. RBAC cannot limit ``create``
  by name; this closes what it leaves open (deploy/README.md, "What the
  operator can write, where").
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from controller.core import catalog, credentials, declarations, rendering
from controller.generators import celrules

PREFIX = "settings-controller"
OVERRIDES = f"{PREFIX}-overrides"
ALLOWED_VALUES = f"{PREFIX}-overrides-allowed-values"
GLOBAL = f"{PREFIX}-global"
ACCOUNTS = f"{PREFIX}-accounts"
OPERATOR_SECRETS = f"{PREFIX}-operator-secrets"
OPERATOR_CONFIGMAPS = f"{PREFIX}-operator-configmaps"
OPERATOR_NAMESPACES = f"{PREFIX}-operator-namespaces"

# The identity deploy/ runs the operator as (rbac/service_account.yaml).
OPERATOR_NAMESPACE = "settings-controller-system"
OPERATOR_SERVICEACCOUNT = "settings-controller"
OPERATOR_USER = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_SERVICEACCOUNT}"

# The operator policies match its ServiceAccount in *any* namespace, not one
# namespace written into the policy: an install in another namespace (a
# kustomize overlay's `namespace:`, a Helm release namespace) is held without
# any edit. kustomize `replacements` cannot do this for an overlay: they run in
# the kustomization that declares them, before an overlay's namespace
# transformer. Matching a ServiceAccount of that name in another namespace only
# adds refusals (these policies only deny), and the operator proves at start-up
# that it is matched (controller/cluster/confinement.py). A ServiceAccount
# username is system:serviceaccount:<namespace>:<name>; namespaces are DNS labels.
#
# Every write of a matched resource by anyone pays this condition (issue 24, "the cluster
# tax"), so the cheapest test comes first: a suffix comparison refuses almost every other
# identity before the regular expression runs (CEL's && stops at the first false).
_USER = "request.userInfo.username"
MATCHES_OPERATOR = (
    f"{_USER}.endsWith({celrules.string(':' + OPERATOR_SERVICEACCOUNT)}) && "
    f"{_USER}.matches("
    + celrules.string(
        f"^system:serviceaccount:[a-z0-9]([-a-z0-9]*[a-z0-9])?:{OPERATOR_SERVICEACCOUNT}$"
    )
    + ")"
)


def _own_namespace(namespace: str) -> str:
    """CEL: ``namespace`` is the operator's own (the namespace in its username)."""
    return (
        f"{_USER} == {celrules.string('system:serviceaccount:')} + {namespace} + "
        f"{celrules.string(':' + OPERATOR_SERVICEACCOUNT)}"
    )


NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"  # set by the API server itself

KEY_HINT = (
    "platform keys cannot be set in an account's overrides; they come from the "
    "GlobalIntegrationSettings credentials (a Secret in the controller's namespace)"
)
REDACTED = "<name that looks like a key>"

Json = dict[str, Any]


def all_policies(
    cat: catalog.Catalog, reserved: Collection[str] = declarations.RESERVED_NAMESPACES
) -> list[Json]:
    """Every generated policy with its binding, in a stable order."""
    return [
        *overrides_policy(cat),
        *allowed_values_policy(cat),
        *global_policy(cat),
        *accounts_policy(reserved),
        *operator_policies(reserved),
    ]


def _policy(
    name: str,
    resources: list[Json],
    validations: list[Json],
    variables: list[Json] | None = None,
    param_kind: Json | None = None,
    match_conditions: list[Json] | None = None,
) -> list[Json]:
    spec: Json = {"failurePolicy": "Fail"}
    if param_kind is not None:
        spec["paramKind"] = param_kind
    # Exact: the rules name every group and version they mean (apiVersions "*"); none of
    # these resources is served under another group, so the API server's search for
    # equivalent resources, run for every write a rule does not match, finds nothing.
    spec["matchConstraints"] = {"matchPolicy": "Exact", "resourceRules": resources}
    if match_conditions:
        spec["matchConditions"] = match_conditions
    if variables:
        spec["variables"] = variables
    spec["validations"] = validations
    meta = {"name": name, "labels": {"app.kubernetes.io/name": PREFIX}}
    binding: Json = {"policyName": name, "validationActions": ["Deny"]}
    if param_kind is not None:
        # Without a global there is nothing to check against; the operator renders nothing then.
        binding["paramRef"] = {"name": "default", "parameterNotFoundAction": "Allow"}
    return [
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": meta,
            "spec": spec,
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": dict(meta),
            "spec": binding,
        },
    ]


def _rule(
    group: str, resources: list[str], operations: list[str], names: list[str] | None = None
) -> Json:
    rule: Json = {
        "apiGroups": [group],
        "apiVersions": ["*"],
        "operations": operations,
        "resources": resources,
    }
    if names:
        rule["resourceNames"] = names
    return rule


def _output_rules(resource: str, name: str) -> list[Json]:
    """Creates, updates and deletes of ``name`` only: RBAC (deploy/rbac/role.yaml) grants the
    operator ``create``, ``patch`` and ``delete`` on this resource for that name alone and
    ``update`` not at all. A server-side apply that creates is authorized (and admitted)
    with the name in its URL; a POST create has no name there and matches no RBAC rule with
    ``resourceNames``. So a write of another name is refused before admission
    (tests/operator/test_admission_operator.py), and another writer's create, update or
    delete of any other name matches nothing and costs nothing here (a create matched
    every name before: 94 µs in the plugin per create of another writer's ConfigMap)."""
    return [_rule("", [resource], ["CREATE", "UPDATE", "DELETE"], [name])]


def _integration_is(itype: catalog.IntegrationType) -> str:
    names = sorted({itype.object_name, itype.name})
    return f"object.metadata.name in {celrules.strings(names)}"


_OVERRIDES_VARIABLE = {
    "name": "overrides",
    "expression": "has(object.spec) && has(object.spec.overrides) ? object.spec.overrides : {}",
}


def overrides_policy(cat: catalog.Catalog) -> list[Json]:
    validations: list[Json] = []
    o = "variables.overrides"
    for itype in cat.integrations.values():
        when = _integration_is(itype)
        allowed = celrules.strings(itype.fields)
        # Key-like names first, so they get the message that says where keys go.
        credential = f"!(k in {allowed}) && {celrules.credential_name('k', cat.overridable_fields)}"
        validations.append(
            {
                "expression": f"!({when}) || !{o}.exists(k, {credential})",
                "messageExpression": f"{celrules.string('spec.overrides: ')} + "
                f"{_printable_names(f'{o}.filter(k, {credential})')} + "
                f"{celrules.string(' looks like a platform key and is refused: ' + KEY_HINT)}",
                "reason": "Forbidden",
            }
        )
        validations.append(
            {
                "expression": f"!({when}) || {o}.all(k, k in {allowed})",
                "messageExpression": f"{celrules.string('spec.overrides: ')} + "
                f"{_printable_names(f'{o}.filter(k, !(k in {allowed}))')} + "
                + celrules.string(
                    f": not an overridable field of {itype.name} "
                    f"(overridable: {', '.join(itype.fields)})"
                ),
                "reason": "Invalid",
            }
        )
        for field in itype.fields:
            schema, value = itype.schema["properties"][field], f"{o}[{celrules.string(field)}]"
            tests = [
                t
                for t in (
                    celrules.holds_key(schema, value),
                    celrules.names_holding_credentials(schema, value, cat.overridable_fields),
                )
                if t is not None
            ]
            if tests:
                validations.append(
                    {
                        "expression": f"!({when}) || !({celrules.string(field)} in {o}) || "
                        f"!({' || '.join(tests)})",
                        "message": f"spec.overrides.{field}: the value (or a name inside it) "
                        "looks like an API key and is refused: " + KEY_HINT,
                        "reason": "Forbidden",
                    }
                )
        for field in itype.fields:
            schema = itype.schema["properties"][field]
            value = f"{o}[{celrules.string(field)}]"
            validations.append(
                {
                    "expression": f"!({when}) || !({celrules.string(field)} in {o}) || "
                    + celrules.valid(schema, value),
                    "message": f"spec.overrides.{field}: must be {celrules.describe(schema)} "
                    f"({itype.name})",
                    "reason": "Invalid",
                }
            )
    return _policy(
        OVERRIDES,
        [_rule(catalog.GROUP, [cat.kinds[catalog.OVERRIDE].plural], ["CREATE", "UPDATE"])],
        validations,
        variables=[_OVERRIDES_VARIABLE],
    )


def _printable_names(names: str) -> str:
    """CEL: the names in list ``names`` joined, a key-shaped one replaced (it may be a key)."""
    return (
        f"{names}.map(k, {celrules.key_shaped('k')} ? {celrules.string(REDACTED)} : k).join(', ')"
    )


def allowed_values_policy(cat: catalog.Catalog) -> list[Json]:
    validations: list[Json] = []
    o = "variables.overrides"
    for itype in cat.integrations.values():
        block = f"params.spec.integrations.{itype.name}"
        for field, schema in itype.schema["properties"].items():
            if schema.get("type") not in ("string", "integer", "number"):
                continue  # allowedValues covers scalars only (catalog._add_integration_blocks)
            choices = f"{block}.allowedValues.{field}"
            has_choices = f"has({block}) && has({block}.allowedValues) && has({choices})"
            validations.append(
                {
                    "expression": f"!({_integration_is(itype)}) || "
                    f"!({celrules.string(field)} in {o}) || !({has_choices}) || "
                    f"{o}[{celrules.string(field)}] in {choices}",
                    "messageExpression": celrules.string(
                        f"spec.overrides.{field}: must be one of the allowed values: "
                    )
                    + f" + {choices}.map(v, string(v)).join(', ')",
                    "reason": "Invalid",
                }
            )
    return _policy(
        ALLOWED_VALUES,
        [_rule(catalog.GROUP, [cat.kinds[catalog.OVERRIDE].plural], ["CREATE", "UPDATE"])],
        validations,
        variables=[_OVERRIDES_VARIABLE],
        param_kind={"apiVersion": catalog.API_VERSION, "kind": catalog.GLOBAL},
    )


def global_policy(cat: catalog.Catalog) -> list[Json]:
    validations: list[Json] = []
    for itype in cat.integrations.values():
        block = f"object.spec.integrations.{itype.name}"
        for field, schema in itype.schema["properties"].items():
            path = f"{block}.defaults.{field}"
            test = celrules.holds_key(schema, path)
            if test is not None:
                validations.append(
                    {
                        "expression": f"!has({block}) || !has({path}) || !{test}",
                        "message": f"spec.integrations.{itype.name}.defaults.{field}: "
                        + declarations.KEY_VALUE_HINT,
                        "reason": "Forbidden",
                    }
                )
            path = f"{block}.allowedValues.{field}"
            if schema.get("type") == "string":
                validations.append(
                    {
                        "expression": f"!has({block}) || !has({block}.allowedValues) || "
                        f"!has({path}) || !{path}.exists(v, {celrules.key_shaped('v')})",
                        "message": f"spec.integrations.{itype.name}.allowedValues.{field}: "
                        + declarations.KEY_VALUE_HINT,
                        "reason": "Forbidden",
                    }
                )
        for slot in itype.credentials:
            ref = f"{block}.credentials.{slot}"
            validations.append(
                {
                    "expression": f"!has({block}) || !has({block}.credentials) || !has({ref}) || "
                    f"!({celrules.key_shaped(ref + '.key')} || "
                    f"{celrules.key_shaped(ref + '.secretName')})",
                    "message": f"spec.integrations.{itype.name}.credentials.{slot}: looks like an "
                    "API key, not the name of a Secret or of a key in it; put the key in the "
                    "Secret and name it here",
                    "reason": "Forbidden",
                }
            )
            endpoint = f"{ref}.endpoint"
            for test, problem in (
                (celrules.endpoint_userinfo(endpoint), credentials.ENDPOINT_USERINFO),
                (celrules.endpoint_escape(endpoint), credentials.ENDPOINT_ESCAPE),
                (celrules.endpoint_key(endpoint), credentials.ENDPOINT_KEY),
            ):
                validations.append(
                    {
                        "expression": f"!has({block}) || !has({block}.credentials) || "
                        f"!has({ref}) || !has({endpoint}) || !({test})",
                        "message": f"spec.integrations.{itype.name}.credentials.{slot}.endpoint: "
                        + problem,
                        "reason": "Forbidden",
                    }
                )
    return _policy(
        GLOBAL,
        [_rule(catalog.GROUP, [cat.kinds[catalog.GLOBAL].plural], ["CREATE", "UPDATE"])],
        validations,
    )


def accounts_policy(reserved: Collection[str]) -> list[Json]:
    names = celrules.strings(sorted(reserved))
    return _policy(
        ACCOUNTS,
        [_rule(catalog.GROUP, ["accounts"], ["CREATE", "UPDATE"])],
        [
            {
                "expression": f"!(object.spec.namespace in {names})",
                "messageExpression": "'spec.namespace: ' + object.spec.namespace + "
                + celrules.string(
                    " is reserved and cannot be an account's namespace (reserved: "
                    f"{', '.join(sorted(reserved))})"
                ),
                "reason": "Forbidden",
            }
        ],
    )


def _as_operator() -> list[Json]:
    return [
        {
            "name": "operator",
            "expression": MATCHES_OPERATOR,
        }
    ]


def _per_operation(test: Callable[[str], str]) -> str:
    """CEL: ``test`` of the object written (the old one for a DELETE). Each branch reads
    ``object`` or ``oldObject`` directly: a conditional attribute in every reference, or
    the object as a variable, cost the operator's writes more in the policy plugin
    (tests/bench/admission.py)."""
    return f"(request.operation == 'DELETE' ? {test('oldObject')} : {test('object')})"


def _owned_output(
    name: str, reserved: Collection[str], extra: Callable[[str], str] | None = None
) -> list[Json]:
    """Validations for one output kind: its fixed name, an Account owner, no reserved namespace."""
    account_label = celrules.string(rendering.LABEL_ACCOUNT)
    labels = "namespaceObject.metadata.labels"

    def named(obj: str) -> str:
        return f"{obj}.metadata.name == {celrules.string(name)}" + (
            f" && {extra(obj)}" if extra else ""
        )

    def owned(obj: str) -> str:
        # Exactly one ownerReference, so "all of them" and "one of them" are that one.
        owner = f"{obj}.metadata.ownerReferences[0]"
        return (
            f"has({obj}.metadata.ownerReferences) && size({obj}.metadata.ownerReferences) == 1 "
            f"&& {owner}.apiVersion == {celrules.string(catalog.API_VERSION)} && "
            f"{owner}.kind == {celrules.string(catalog.ACCOUNT)} && "
            f"has({owner}.controller) && {owner}.controller && "
            f"!(has({labels}) && {account_label} in {labels} && "
            f"{owner}.name != {labels}[{account_label}])"
        )

    return [
        {
            "expression": _per_operation(named),
            "message": "the settings-controller operator may write only the Opaque Secret "
            f"{rendering.CREDENTIALS_SECRET_NAME} and the ConfigMap {rendering.CONFIGMAP_NAME}",
            "reason": "Forbidden",
        },
        {
            "expression": f"!(request.namespace in {celrules.strings(sorted(reserved))}) && "
            f"!({_own_namespace('request.namespace')})",
            "message": "the settings-controller operator may not write in a reserved namespace "
            f"({', '.join(sorted(reserved))}, and its own)",
            "reason": "Forbidden",
        },
        {
            "expression": _per_operation(owned),
            "message": f"the settings-controller operator may write {name} only as the output "
            "of the Account that claims the namespace (its one controller ownerReference)",
            "reason": "Forbidden",
        },
    ]


def operator_policies(reserved: Collection[str]) -> list[Json]:
    secrets = _policy(
        OPERATOR_SECRETS,
        _output_rules("secrets", rendering.CREDENTIALS_SECRET_NAME),
        _owned_output(
            rendering.CREDENTIALS_SECRET_NAME,
            reserved,
            extra=lambda obj: f"has({obj}.type) && {obj}.type == 'Opaque'",
        ),
        match_conditions=_as_operator(),
    )
    configmaps = _policy(
        OPERATOR_CONFIGMAPS,
        _output_rules("configmaps", rendering.CONFIGMAP_NAME),
        _owned_output(rendering.CONFIGMAP_NAME, reserved),
        match_conditions=_as_operator(),
    )
    ours = celrules.strings([rendering.LABEL_PLAN, rendering.LABEL_ACCOUNT])
    new = "(has(object.metadata.labels) ? object.metadata.labels : {})"
    old = "(has(oldObject.metadata.labels) ? oldObject.metadata.labels : {})"
    new_notes = "(has(object.metadata.annotations) ? object.metadata.annotations : {})"
    old_notes = "(has(oldObject.metadata.annotations) ? oldObject.metadata.annotations : {})"
    # No DELETE: RBAC grants the operator no ``delete`` on Namespaces (and no ``update``:
    # its writes are patches), so it is refused before admission
    # (tests/operator/test_admission_operator.py); another writer's namespace deletions
    # match nothing here.
    namespaces = _policy(
        OPERATOR_NAMESPACES,
        [_rule("", ["namespaces"], ["CREATE", "UPDATE"])],
        [
            {
                "expression": "!(object.metadata.name in "
                f"{celrules.strings(sorted(reserved))}) && "
                f"!({_own_namespace('object.metadata.name')})",
                "message": "the settings-controller operator may not create or label a reserved "
                f"namespace ({', '.join(sorted(reserved))}, and its own)",
                "reason": "Forbidden",
            },
            {
                "expression": "request.operation != 'CREATE' || ("
                f"{new}.all(k, k in {ours} || k == {celrules.string(NAMESPACE_NAME_LABEL)}) && "
                f"size({new_notes}) == 0)",
                "message": "the settings-controller operator may create a namespace only with "
                f"the labels {rendering.LABEL_PLAN} and {rendering.LABEL_ACCOUNT}",
                "reason": "Forbidden",
            },
            {
                "expression": "request.operation != 'UPDATE' || ("
                f"{new}.all(k, k in {ours} || (k in {old} && {old}[k] == {new}[k])) && "
                f"{old}.all(k, k in {ours} || k in {new}) && {new_notes} == {old_notes})",
                "message": "the settings-controller operator may change only the labels "
                f"{rendering.LABEL_PLAN} and {rendering.LABEL_ACCOUNT} of a namespace",
                "reason": "Forbidden",
            },
        ],
        match_conditions=_as_operator(),
    )
    return [*secrets, *configmaps, *namespaces]
