"""CustomResourceDefinitions generated from the catalog (``schemas/``), never written by hand.

The catalog's kind schemas are JSON Schema 2020-12; a CRD wants a *structural*
OpenAPI v3 subset. ``structural`` translates what has a CRD equivalent
(``const`` -> a one-value ``enum``, ``uniqueItems`` -> a ``set`` list,
``propertyNames`` and numeric ``exclusiveMinimum`` -> CEL or OpenAPI forms) and
drops what a structural schema cannot hold (``additionalProperties: false``:
the API server prunes unknown fields instead, and ``kubectl`` refuses them under
strict field validation). Rules the schema states elsewhere (the global's name,
the override's name) become CEL ``x-kubernetes-validations``, so the API
server refuses them at admission; everything about ``overrides`` is checked by
the admission policies ``controller.generators.policies`` builds.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

import jsonschema

from controller.core import catalog, errors, validation

GENERATED_HEADER = (
    "# DO NOT EDIT: generated from schemas/ by `settings-controller crds --output-dir deploy/crd "
    "--policy-file deploy/policy/generated.yaml`.\n"
)

# Keywords a structural schema accepts as they are.
_KEPT = frozenset(
    {
        "type",
        "description",
        "enum",
        "pattern",
        "format",
        "minimum",
        "maximum",
        "multipleOf",
        "minLength",
        "maxLength",
        "minItems",
        "maxItems",
        "minProperties",
        "maxProperties",
        "required",
        "nullable",
    }
)


def structural(node: Any, where: str = "") -> Any:
    """A structural-schema translation of one JSON Schema node (see the module docstring)."""
    if not isinstance(node, Mapping):
        return copy.deepcopy(node)
    out: dict[str, Any] = {}
    rules: list[dict[str, str]] = []
    for key, value in node.items():
        if key in _KEPT:
            out[key] = copy.deepcopy(value)
        elif key == "const":
            out["enum"] = [copy.deepcopy(value)]
        elif key == "default":
            _check_default(node, value, where)
            out["default"] = copy.deepcopy(value)
        elif key == "properties":
            out["properties"] = {
                name: structural(sub, f"{where}.{name}") for name, sub in value.items()
            }
        elif key == "items":
            out["items"] = structural(value, f"{where}[]")
        elif key == "additionalProperties":
            # `false` next to `properties` is what pruning does anyway; a
            # schema value makes the object a map.
            if isinstance(value, Mapping):
                out["additionalProperties"] = structural(value, f"{where}.*")
        elif key == "uniqueItems":
            if value:
                out["x-kubernetes-list-type"] = "set"
        elif key == "exclusiveMinimum" and not isinstance(value, bool):
            out["minimum"], out["exclusiveMinimum"] = value, True
        elif key == "exclusiveMaximum" and not isinstance(value, bool):
            out["maximum"], out["exclusiveMaximum"] = value, True
        elif key == "propertyNames":
            pattern = value.get("pattern") if isinstance(value, Mapping) else None
            if pattern is not None:
                rules.append(
                    {
                        "rule": f"self.all(k, k.matches({_cel_string(pattern)}))",
                        "message": f"every key must match {pattern}",
                    }
                )
        elif key.startswith("x-kubernetes-"):
            out[key] = copy.deepcopy(value)
        # Anything else ($schema, $id, title, x-credentials, ...) describes the
        # file, not the object: dropped.
    if "type" not in out and "enum" in out:
        kinds = {type(v) for v in out["enum"]}
        if kinds == {str}:
            out["type"] = "string"
    if rules:
        out.setdefault("x-kubernetes-validations", []).extend(rules)
    if "type" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
        raise errors.SchemaError(f"schemas: {where or 'root'} has no type; a CRD needs one")
    return out


def _check_default(node: Mapping[str, Any], value: Any, where: str) -> None:
    schema = {k: v for k, v in node.items() if k != "default"}
    try:
        jsonschema.validate(value, schema, cls=validation.Validator)
    except jsonschema.ValidationError as e:
        raise errors.SchemaError(f"schemas: {where}: default does not match its schema") from e


def _cel_string(text: str) -> str:
    # A JSON string literal is a valid CEL double-quoted string literal.
    return json.dumps(text)


def _cel_list(items: Any) -> str:
    return "[" + ", ".join(_cel_string(i) for i in items) + "]"


def _condition_column(name: str, condition: str) -> dict[str, Any]:
    return {
        "name": name,
        "type": "string",
        "jsonPath": f'.status.conditions[?(@.type=="{condition}")].status',
        "description": f"Status of the {condition} condition.",
    }


_AGE = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}

# Why an object is (not) Ready, next to READY; the message only with -o wide
# (priority 1): it can be long.
_READY_WHY: list[dict[str, Any]] = [
    {
        "name": "Reason",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
        "description": "Reason of the Ready condition.",
    },
    {
        "name": "Message",
        "type": "string",
        "priority": 1,
        "jsonPath": '.status.conditions[?(@.type=="Ready")].message',
        "description": "Message of the Ready condition.",
    },
]


def printer_columns(cat: catalog.Catalog, kind: str) -> list[dict[str, Any]]:
    if kind == catalog.ACCOUNT:
        columns: list[dict[str, Any]] = [
            {"name": "Plan", "type": "string", "jsonPath": ".spec.plan"},
            {"name": "Namespace", "type": "string", "jsonPath": ".spec.namespace"},
        ]
        columns += [
            {
                "name": f"{cat.integrations[t].object_name}-defaults",
                "type": "boolean",
                "jsonPath": f".status.usingGlobal.{t}",
                "description": f"Whether the account uses the platform defaults for {t} "
                "(no override applied).",
            }
            for t in cat.integrations
        ]
        columns += [
            {
                "name": f"{cat.integrations[t].object_name}-connected",
                "type": "boolean",
                "jsonPath": f".status.connected.{t}",
                "description": f"Whether the platform keys the account's {t} settings use are "
                "verified by their provider.",
            }
            for t in cat.integrations
        ]
        return [*columns, _condition_column("Ready", "Ready"), *_READY_WHY, _AGE]
    if kind == catalog.OVERRIDE:
        return [
            {
                "name": "Active",
                "type": "boolean",
                "jsonPath": ".spec.isActive",
                "description": "Whether the overrides are switched on.",
            },
            {
                "name": "Applied",
                "type": "string",
                "jsonPath": ".status.appliedFields",
                "description": "Override fields applied to the account's effective settings.",
            },
            {
                "name": "Connected",
                "type": "boolean",
                "jsonPath": ".status.connected",
                "description": "Whether the platform keys these settings use are verified.",
            },
            _condition_column("Ready", "Ready"),
            *_READY_WHY,
            _AGE,
        ]
    return [
        _condition_column("Ready", "Ready"),
        _condition_column("Credentials", "CredentialsReady"),
        _condition_column("Connected", "Connected"),
        *_READY_WHY,
        _AGE,
    ]


def _root_rules(cat: catalog.Catalog, kind: catalog.Kind) -> list[dict[str, str]]:
    if kind.singleton_name is not None:
        return [
            {
                "rule": f"self.metadata.name == {_cel_string(kind.singleton_name)}",
                "message": f"{kind.name} is a singleton: its name must be {kind.singleton_name!r}",
                "reason": "FieldValueInvalid",
            }
        ]
    if kind.name == catalog.OVERRIDE:
        names = [t.object_name for t in cat.integrations.values()]
        return [
            {
                "rule": f"self.metadata.name in {_cel_list(names)}",
                "message": "the name of an IntegrationSettings is the integration type it "
                f"overrides: one of {', '.join(names)}",
                "reason": "FieldValueInvalid",
            }
        ]
    return []


def openapi_schema(cat: catalog.Catalog, kind: catalog.Kind) -> dict[str, Any]:
    props = kind.schema["properties"]
    spec = structural(props["spec"], "spec")
    schema: dict[str, Any] = {
        "type": "object",
        "description": kind.schema.get("description", ""),
        "required": [r for r in kind.schema.get("required", ()) if r == "spec"],
        "properties": {
            "apiVersion": {
                "type": "string",
                "description": "APIVersion defines the versioned schema of this representation "
                "of an object.",
            },
            "kind": {
                "type": "string",
                "description": "Kind is a string value representing the REST resource this "
                "object represents.",
            },
            "metadata": {"type": "object"},
            "spec": spec,
            "status": structural(props["status"], "status"),
        },
    }
    rules = _root_rules(cat, kind)
    if rules:
        schema["x-kubernetes-validations"] = rules
    return schema


def crd(cat: catalog.Catalog, kind_name: str) -> dict[str, Any]:
    kind = cat.kinds[kind_name]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{kind.plural}.{catalog.GROUP}",
            "labels": {"app.kubernetes.io/name": "settings-controller"},
        },
        "spec": {
            "group": catalog.GROUP,
            "scope": kind.scope,
            "names": {
                "kind": kind.name,
                "listKind": f"{kind.name}List",
                "plural": kind.plural,
                "singular": kind.singular,
                "shortNames": list(kind.short_names),
                "categories": ["integrations"],
            },
            "versions": [
                {
                    "name": catalog.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": printer_columns(cat, kind.name),
                    "schema": {"openAPIV3Schema": openapi_schema(cat, kind)},
                }
            ],
        },
    }


def all_crds(cat: catalog.Catalog) -> list[dict[str, Any]]:
    return [crd(cat, name) for name in catalog.KINDS]


def file_name(cat: catalog.Catalog, kind_name: str) -> str:
    """kubebuilder's naming: ``<group>_<plural>.yaml``."""
    return f"{catalog.GROUP}_{cat.kinds[kind_name].plural}.yaml"
