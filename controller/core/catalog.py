"""The catalog: kinds and integration types, composed from the documents in ``schemas/``.

The schema files are the single source of truth. This module never restates a
field; it composes the kind schemas with the integration schemas (so a new
integration is one new file under ``schemas/integrations/``) and inlines every
``$ref``, because CRDs need self-contained structural schemas.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from controller.core import credentials, errors, validation

if TYPE_CHECKING:
    # Imported where the validators are built: a `reconcile` with nothing changed needs
    # only the schemas' fingerprint (``fingerprint_of``), not ~100 ms of validator libraries.
    import jsonschema

GROUP = "integrations.igny8.com"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

GLOBAL = "GlobalIntegrationSettings"
ACCOUNT = "Account"
OVERRIDE = "IntegrationSettings"
KINDS = (GLOBAL, ACCOUNT, OVERRIDE)

_KIND_FILES = {
    GLOBAL: "globalintegrationsettings.json",
    ACCOUNT: "account.json",
    OVERRIDE: "integrationsettings.json",
}
_COMMON = "common.json"
_INTEGRATIONS_DIR = "integrations/"

# Keys of the effective JSON that the controller owns; an integration may not
# define a field with one of these names.
RESERVED_FIELDS = frozenset({"id", "enabled", "using_global", "overridden", "choices"})

Schema = Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Provider:
    """An API that platform keys are checked against (``x-providers`` in common.json)."""

    name: str
    endpoint: str  # the public base URL, used when a credential names none
    description: str


@dataclasses.dataclass(frozen=True)
class CredentialSlot:
    """One key slot of an integration (``x-credentials``): which provider checks it, and
    which effective values make an account depend on it (none: always)."""

    name: str
    description: str
    provider: str | None
    used_when: Mapping[str, Any]

    def used_by(self, values: Mapping[str, Any]) -> bool:
        return all(values.get(field) == value for field, value in self.used_when.items())


@dataclasses.dataclass(frozen=True)
class IntegrationType:
    """One integration (openai, image_generation): its overridable fields and key slots."""

    name: str
    description: str
    fields: tuple[str, ...]  # in schema order: the order of the effective JSON
    schema: Schema  # the object schema of the fields (= of ``defaults``)
    credentials: Mapping[str, str]  # key slot -> description
    slots: Mapping[str, CredentialSlot]
    validators: Mapping[str, jsonschema.protocols.Validator]
    fast_validators: Mapping[str, Any]

    @property
    def object_name(self) -> str:
        """The name of its IntegrationSettings objects: Kubernetes names hold no ``_``."""
        return self.name.replace("_", "-")

    def check(self, field: str, value: Any) -> list[str]:
        """Why ``value`` is not acceptable for ``field``; empty when it is. Never quotes the value."""
        found = validation.problems(self.validators[field], value, self.fast_validators[field])
        return [p.message for p in found]


@dataclasses.dataclass(frozen=True)
class Kind:
    """One API kind and its composed, fully inlined schema."""

    name: str
    schema: Schema
    scope: str  # Cluster | Namespaced
    plural: str
    singular: str
    short_names: tuple[str, ...]
    singleton_name: str | None
    validator: jsonschema.protocols.Validator  # for messages
    fast_validator: Any  # jsonschema_rs: a ~100x faster yes/no for the common, valid case

    @property
    def namespaced(self) -> bool:
        return self.scope == "Namespaced"


@dataclasses.dataclass(frozen=True)
class Catalog:
    kinds: Mapping[str, Kind]
    integrations: Mapping[str, IntegrationType]
    providers: Mapping[str, Provider] = dataclasses.field(default_factory=dict)
    # A digest of the schema documents: a record of outputs made under other
    # schemas must not be trusted (file mode's no-change pass compares it).
    fingerprint: str = ""

    @property
    def overridable_fields(self) -> frozenset[str]:
        return frozenset(f for t in self.integrations.values() for f in t.fields)

    def type_for_object_name(self, name: str) -> str | None:
        """The integration an IntegrationSettings object name stands for (either spelling)."""
        for itype in self.integrations.values():
            if name in (itype.name, itype.object_name):
                return itype.name
        return None

    def looks_like_credential(self, name: str) -> bool:
        return credentials.looks_like_credential(name, exempt=self.overridable_fields)

    @classmethod
    def from_documents(cls, documents: Mapping[str, Schema]) -> Catalog:
        """Build from schema documents keyed by their path relative to ``schemas/``."""
        try:
            common = documents[_COMMON]
            integration_docs = sorted(
                (path, doc) for path, doc in documents.items() if path.startswith(_INTEGRATIONS_DIR)
            )
            integrations = {
                t.name: t for t in (_integration(path, doc) for path, doc in integration_docs)
            }
            kinds = {
                name: _kind(name, documents[_KIND_FILES[name]], common, integrations)
                for name in KINDS
            }
        except KeyError as e:
            raise errors.SchemaError(f"schemas: missing document or key {e}") from e
        if not integrations:
            raise errors.SchemaError("schemas: no integration types under integrations/")
        providers = {
            name: Provider(name, str(p["endpoint"]), str(p.get("description", "")))
            for name, p in common.get("x-providers", {}).items()
        }
        for itype in integrations.values():
            for slot in itype.slots.values():
                if slot.provider is not None and slot.provider not in providers:
                    raise errors.SchemaError(
                        f"schemas/integrations/{itype.name}.json: credential {slot.name}: "
                        f"unknown provider {slot.provider!r}"
                    )
        return cls(
            kinds=kinds,
            integrations=integrations,
            providers=providers,
            fingerprint=fingerprint_of(documents),
        )


def fingerprint_of(documents: Mapping[str, Schema]) -> str:
    """``Catalog.fingerprint`` of the catalog these documents make, without making it."""
    return hashlib.sha256(json.dumps(documents, sort_keys=True).encode()).hexdigest()


def _integration(path: str, doc: Schema) -> IntegrationType:
    import jsonschema
    import jsonschema_rs

    name = doc.get("title")
    if not isinstance(name, str) or f"{_INTEGRATIONS_DIR}{name}.json" != path:
        raise errors.SchemaError(f"schemas/{path}: title must equal the file name")
    properties: Mapping[str, Schema] = doc["properties"]
    reserved = RESERVED_FIELDS & set(properties)
    if reserved:
        raise errors.SchemaError(f"schemas/{path}: reserved field names {sorted(reserved)}")
    schema = _strip_meta(doc)
    jsonschema.Draft202012Validator.check_schema(schema)
    validation.check_patterns(schema)
    slots = {
        slot: _slot(path, slot, spec, properties)
        for slot, spec in doc.get("x-credentials", {}).items()
    }
    return IntegrationType(
        name=name,
        description=str(doc.get("description", "")),
        fields=tuple(properties),
        schema=schema,
        credentials={slot: s.description for slot, s in slots.items()},
        slots=slots,
        validators={field: validation.Validator(sub) for field, sub in properties.items()},
        fast_validators={
            field: jsonschema_rs.validator_for(dict(sub)) for field, sub in properties.items()
        },
    )


def _slot(path: str, slot: str, spec: Any, properties: Mapping[str, Schema]) -> CredentialSlot:
    """A slot from ``x-credentials``: a description alone, or ``{description, provider, usedWhen}``."""
    if isinstance(spec, str):
        return CredentialSlot(slot, spec, None, {})
    used_when = dict(spec.get("usedWhen", {}))
    unknown = set(used_when) - set(properties)
    if unknown:
        raise errors.SchemaError(
            f"schemas/{path}: credential {slot}: usedWhen names unknown fields {sorted(unknown)}"
        )
    return CredentialSlot(slot, str(spec.get("description", "")), spec.get("provider"), used_when)


def _kind(
    name: str, doc: Schema, common: Schema, integrations: Mapping[str, IntegrationType]
) -> Kind:
    import jsonschema
    import jsonschema_rs

    schema = _inline(_strip_meta(doc), {"": doc, _COMMON: common})
    if name == GLOBAL:
        _add_integration_blocks(schema, common, integrations)
    if name == OVERRIDE:
        # The object's name is the integration type it overrides, spelled as a
        # Kubernetes name (image-generation) or as the type (image_generation).
        spellings = {s for t in integrations.values() for s in (t.object_name, t.name)}
        schema["properties"]["metadata"]["properties"]["name"] = {
            "type": "string",
            "enum": sorted(spellings),
            "description": schema["properties"]["metadata"]["properties"]["name"]["description"],
        }
    jsonschema.Draft202012Validator.check_schema(schema)
    validation.check_patterns(schema)
    meta: Mapping[str, Any] = doc["x-kubernetes"]
    return Kind(
        name=name,
        schema=schema,
        scope=meta["scope"],
        plural=meta["plural"],
        singular=meta["singular"],
        short_names=tuple(meta.get("shortNames", ())),
        singleton_name=meta.get("singletonName"),
        validator=validation.Validator(schema),
        fast_validator=jsonschema_rs.validator_for(dict(schema)),
    )


def _add_integration_blocks(
    schema: dict[str, Any], common: Schema, integrations: Mapping[str, IntegrationType]
) -> None:
    """Give ``spec.integrations`` one property per integration type, built from its schema file."""
    holder = schema["properties"]["spec"]["properties"]["integrations"]
    template = holder.pop("x-integration-block")
    holder["properties"] = {}
    for name, itype in integrations.items():
        block = copy.deepcopy(template)
        block["description"] = itype.description
        props = block["properties"]
        props["credentials"]["properties"] = {
            slot: {**copy.deepcopy(common["$defs"]["secretKeyRef"]), "description": text}
            for slot, text in itype.credentials.items()
        }
        props["defaults"] = {
            **copy.deepcopy(dict(itype.schema)),
            "description": props["defaults"]["description"],
        }
        props["allowedValues"]["properties"] = {
            field: {
                "type": "array",
                "description": f"Values an account may choose for {field}.",
                "minItems": 1,
                "uniqueItems": True,
                "items": copy.deepcopy(dict(sub)),
            }
            for field, sub in itype.schema["properties"].items()
            if sub.get("type") in ("string", "integer", "number")
        }
        holder["properties"][name] = block


def _strip_meta(doc: Schema) -> dict[str, Any]:
    """The schema without the keys that describe the file rather than the object."""
    return {
        k: copy.deepcopy(v)
        for k, v in doc.items()
        if k not in ("$schema", "$id", "x-kubernetes", "x-credentials", "title")
    }


def _inline(node: Any, documents: Mapping[str, Schema], current: str = "") -> Any:
    """Replace every ``$ref`` by a copy of its target, merged with the sibling keywords."""
    if isinstance(node, list):
        return [_inline(item, documents, current) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: _inline(v, documents, current) for k, v in node.items() if k != "$ref"}
    ref = node.get("$ref")
    if ref is None:
        return out
    doc_name, _, pointer = str(ref).partition("#")
    doc_name = doc_name or current
    target: Any = documents[doc_name]
    for part in pointer.strip("/").split("/"):
        target = target[part]
    resolved = _inline(target, documents, doc_name)
    return _merge(resolved, out)


def _merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overlay.items():
        if key == "properties" and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged
