"""The set of declarations as a whole, and the checks that need more than one object.

A singleton global, one Account per name and per namespace, one
IntegrationSettings per namespace and type, and overrides only where an account
lives. Conflicts block the namespaces involved: their adapters keep the last
good output rather than guess which declaration wins.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterable, Mapping

from controller.core import catalog, credentials, declarations, findings

Reason = findings.Reason
printable = credentials.printable_name


@dataclasses.dataclass(frozen=True)
class Inventory:
    global_: declarations.GlobalSettings | None
    accounts: Mapping[str, declarations.Account]  # by namespace; conflicts left out
    overrides: Mapping[str, Mapping[str, declarations.IntegrationSettings]]  # namespace -> type ->
    blocked: frozenset[str]  # namespaces whose declarations conflict
    findings: tuple[findings.Finding, ...]


def assemble(declared: Iterable[declarations.Declaration]) -> Inventory:
    globals_: list[declarations.GlobalSettings] = []
    by_name: dict[str, list[declarations.Account]] = collections.defaultdict(list)
    by_namespace: dict[str, list[declarations.Account]] = collections.defaultdict(list)
    by_key: dict[tuple[str, str], list[declarations.IntegrationSettings]] = collections.defaultdict(
        list
    )
    for item in declared:
        if isinstance(item, declarations.GlobalSettings):
            globals_.append(item)
        elif isinstance(item, declarations.Account):
            by_name[item.name].append(item)
            by_namespace[item.namespace].append(item)
        else:
            by_key[(item.namespace, item.type)].append(item)

    found: list[findings.Finding] = []
    blocked: set[str] = set()

    for g in globals_ if len(globals_) > 1 else ():
        found.append(
            findings.error(
                Reason.SINGLETON,
                "GlobalIntegrationSettings is a singleton, but it is declared more than once",
                findings.ObjectRef(catalog.GLOBAL, g.name),
                ("metadata", "name"),
                g.source,
            )
        )
    for same in by_name.values():
        if len(same) > 1:
            blocked.update(a.namespace for a in same)
            found.extend(
                findings.error(
                    Reason.DUPLICATE_OBJECT,
                    "declared more than once; the account keeps its last good output until one is removed",
                    a.ref,
                    ("metadata", "name"),
                    a.source,
                )
                for a in same
            )
    for namespace, same in by_namespace.items():
        if len({a.name for a in same}) > 1:
            blocked.add(namespace)
            found.extend(
                findings.error(
                    Reason.NAMESPACE_CONFLICT,
                    f"spec.namespace: namespace {printable(namespace)!r} is claimed by more than one account "
                    f"({', '.join(sorted({printable(a.name) for a in same}))})",
                    a.ref,
                    ("spec", "namespace"),
                    a.source,
                )
                for a in same
            )
    overrides: dict[str, dict[str, declarations.IntegrationSettings]] = collections.defaultdict(
        dict
    )
    for (namespace, type_name), copies in sorted(by_key.items()):
        if len(copies) > 1:
            blocked.add(namespace)
            found.extend(
                findings.error(
                    Reason.DUPLICATE_OBJECT,
                    "declared more than once; the account keeps its last good output until one is removed",
                    o.ref,
                    ("metadata", "name"),
                    o.source,
                )
                for o in copies
            )
        elif namespace not in by_namespace:
            o = copies[0]
            found.append(
                findings.error(
                    Reason.ORPHAN_OVERRIDE,
                    f"metadata.namespace: no Account has spec.namespace {printable(namespace)!r}, "
                    "so these overrides belong to no account",
                    o.ref,
                    ("metadata", "namespace"),
                    o.source,
                )
            )
        else:
            overrides[namespace][type_name] = copies[0]

    accounts = {ns: same[0] for ns, same in sorted(by_namespace.items()) if ns not in blocked}
    global_ = globals_[0] if len(globals_) == 1 else None
    if not globals_ and accounts:
        found.append(
            findings.error(
                Reason.NO_GLOBAL,
                "no GlobalIntegrationSettings named 'default' is declared, so no account can be rendered",
            )
        )
    return Inventory(
        global_=global_,
        accounts=accounts,
        overrides={ns: dict(sorted(types.items())) for ns, types in sorted(overrides.items())},
        blocked=frozenset(blocked),
        findings=tuple(found),
    )
