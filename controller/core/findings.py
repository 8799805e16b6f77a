"""Findings: what the controller tells a user about their declarations.

A finding names a field, never its value. Errors make ``validate`` and
``reconcile`` exit 1; notes (a free plan, an inactive override) describe
policy outcomes and do not.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Hashable

from controller.core import validation


class Severity(enum.Enum):
    ERROR = "error"
    NOTE = "note"


class Reason(enum.Enum):
    """CamelCase reasons, as Kubernetes conditions and events spell them."""

    INVALID_YAML = "InvalidYAML"
    SCHEMA_VIOLATION = "SchemaViolation"
    UNKNOWN_KIND = "UnknownKind"
    DUPLICATE_OBJECT = "DuplicateObject"
    NAMESPACE_CONFLICT = "NamespaceConflict"
    SINGLETON = "GlobalNotSingleton"
    NO_GLOBAL = "NoGlobalSettings"
    ORPHAN_OVERRIDE = "NoAccountForNamespace"
    CREDENTIAL_STRIPPED = "CredentialFieldStripped"
    FIELD_STRIPPED = "FieldStripped"
    VALUE_REJECTED = "ValueRejected"
    DEFAULT_NOT_ALLOWED = "DefaultNotInAllowedValues"
    KEY_SHAPED_VALUE = "KeyShapedValue"
    RESERVED_NAMESPACE = "ReservedNamespace"
    PLAN_FORBIDS = "PlanForbidsOverrides"
    UNKNOWN_PLAN = "UnknownPlan"
    INACTIVE = "OverrideInactive"
    NOT_CONFIGURED = "IntegrationNotConfigured"
    OUTPUT_FAILED = "OutputFailed"
    OUTPUT_CONFLICT = "OutputConflict"  # an object the operator would write is not its own


@dataclasses.dataclass(frozen=True)
class ObjectRef:
    kind: str
    name: str
    namespace: str | None = None

    def __str__(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind} {where}{self.name}"


@dataclasses.dataclass(frozen=True)
class Finding:
    severity: Severity
    reason: Reason
    message: str
    ref: ObjectRef | None = None
    path: validation.Path = ()  # inside the object, for the adapter to locate (a line, a field)
    source: Hashable = None  # adapter-defined: where the object came from (file mode: a document)

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR


def error(
    reason: Reason,
    message: str,
    ref: ObjectRef | None = None,
    path: validation.Path = (),
    source: Hashable = None,
) -> Finding:
    return Finding(Severity.ERROR, reason, message, ref, path, source)


def note(
    reason: Reason,
    message: str,
    ref: ObjectRef | None = None,
    path: validation.Path = (),
    source: Hashable = None,
) -> Finding:
    return Finding(Severity.NOTE, reason, message, ref, path, source)
