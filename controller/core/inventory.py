"""The set of declarations as a whole, and the checks that need more than one object.

A singleton global, one Account per name and per namespace, one
IntegrationSettings per namespace and type, and overrides only where an account
lives. Conflicts block the namespaces involved: their adapters keep the last
good output rather than guess which declaration wins.

The set changes one group of declarations at a time (file mode: one file), and
only the names and namespaces a change touches are checked again, so that
editing one file among 100,000 accounts costs a few dictionary updates.
"""

from __future__ import annotations

import collections
from collections.abc import Hashable, Iterable
from typing import TypeVar

from controller.core import catalog, credentials, declarations, findings

Reason = findings.Reason
Finding = findings.Finding  # the class has a ``findings`` property: annotate with this
printable = credentials.printable_name

_DUPLICATE = "declared more than once; the account keeps its last good output until one is removed"
T = TypeVar("T")
_GLOBAL, _NO_GLOBAL = ("global", ""), ("no-global", "")


class Inventory:
    """Every declaration, by group, with the cross-object findings and what they block."""

    def __init__(self) -> None:
        self._groups: dict[Hashable, tuple[declarations.Declaration, ...]] = {}
        self._globals: list[declarations.GlobalSettings] = []
        self._by_name: dict[str, list[declarations.Account]] = collections.defaultdict(list)
        self._by_namespace: dict[str, list[declarations.Account]] = collections.defaultdict(list)
        self._by_key: dict[str, dict[str, list[declarations.IntegrationSettings]]] = (
            collections.defaultdict(lambda: collections.defaultdict(list))
        )  # namespace -> type -> copies
        self._findings: dict[tuple[str, str], tuple[Finding, ...]] = {}
        self._blocked: set[str] = set()
        self.global_: declarations.GlobalSettings | None = None
        self.accounts: dict[str, declarations.Account] = {}  # by namespace; conflicts left out
        self.overrides: dict[str, dict[str, declarations.IntegrationSettings]] = {}

    @property
    def blocked(self) -> frozenset[str]:
        """Namespaces whose declarations conflict."""
        return frozenset(self._blocked)

    @property
    def findings(self) -> tuple[Finding, ...]:
        return tuple(f for key in sorted(self._findings) for f in self._findings[key])

    def namespaces(self, group: Hashable) -> set[str]:
        """The namespaces that a group's declarations name."""
        return {
            d.namespace
            for d in self._groups.get(group, ())
            if not isinstance(d, declarations.GlobalSettings)
        }

    def replace(self, group: Hashable, declared: Iterable[declarations.Declaration]) -> None:
        """Make ``group``'s declarations ``declared`` (nothing: forget the group)."""
        names: set[str] = set()
        namespaces: set[str] = set()
        global_changed = False
        old = self._groups.pop(group, ())
        new = tuple(declared)
        if new:
            self._groups[group] = new
        for decl, add in [(d, False) for d in old] + [(d, True) for d in new]:
            if isinstance(decl, declarations.GlobalSettings):
                _change(self._globals, decl, add)
                global_changed = True
            elif isinstance(decl, declarations.Account):
                _change(self._by_name[decl.name], decl, add)
                _change(self._by_namespace[decl.namespace], decl, add)
                names.add(decl.name)
                namespaces.add(decl.namespace)
            else:
                _change(self._by_key[decl.namespace][decl.type], decl, add)
                namespaces.add(decl.namespace)
        for name in names:
            # A duplicated name blocks every namespace its copies claim.
            namespaces.update(a.namespace for a in self._by_name[name])
            self._check_name(name)
        for namespace in namespaces:
            self._check_namespace(namespace)
        if global_changed:
            self._check_global()
        self._set(
            _NO_GLOBAL,
            [
                findings.error(
                    Reason.NO_GLOBAL,
                    "no GlobalIntegrationSettings named 'default' is declared, "
                    "so no account can be rendered",
                )
            ]
            if not self._globals and self._by_namespace
            else [],
        )

    def _check_global(self) -> None:
        many = len(self._globals) > 1
        self._set(
            _GLOBAL,
            [
                findings.error(
                    Reason.SINGLETON,
                    "GlobalIntegrationSettings is a singleton, but it is declared more than once",
                    findings.ObjectRef(catalog.GLOBAL, g.name),
                    ("metadata", "name"),
                    g.source,
                )
                for g in self._globals
            ]
            if many
            else [],
        )
        self.global_ = self._globals[0] if len(self._globals) == 1 else None

    def _check_name(self, name: str) -> None:
        same = self._by_name[name]
        self._set(
            ("name", name),
            [
                findings.error(
                    Reason.DUPLICATE_OBJECT, _DUPLICATE, a.ref, ("metadata", "name"), a.source
                )
                for a in same
            ]
            if len(same) > 1
            else [],
        )
        if not same:
            del self._by_name[name]

    def _check_namespace(self, ns: str) -> None:
        same = self._by_namespace[ns]
        conflict = len({a.name for a in same}) > 1
        self._set(
            ("namespace", ns),
            [
                findings.error(
                    Reason.NAMESPACE_CONFLICT,
                    f"spec.namespace: namespace {printable(ns)!r} is claimed by more than one account "
                    f"({', '.join(sorted({printable(a.name) for a in same}))})",
                    a.ref,
                    ("spec", "namespace"),
                    a.source,
                )
                for a in same
            ]
            if conflict
            else [],
        )
        blocked = conflict or any(len(self._by_name[a.name]) > 1 for a in same)

        by_type = self._by_key[ns]
        found: list[Finding] = []
        types: dict[str, declarations.IntegrationSettings] = {}
        for type_name in sorted(by_type):
            copies = by_type[type_name]
            if not copies:
                del by_type[type_name]
            elif len(copies) > 1:
                blocked = True
                found.extend(
                    findings.error(
                        Reason.DUPLICATE_OBJECT, _DUPLICATE, o.ref, ("metadata", "name"), o.source
                    )
                    for o in copies
                )
            elif not same:
                o = copies[0]
                found.append(
                    findings.error(
                        Reason.ORPHAN_OVERRIDE,
                        f"metadata.namespace: no Account has spec.namespace {printable(ns)!r}, "
                        "so these overrides belong to no account",
                        o.ref,
                        ("metadata", "namespace"),
                        o.source,
                    )
                )
            else:
                types[type_name] = copies[0]
        self._set(("overrides", ns), found)

        _put(self._blocked, ns, blocked)
        _assign(self.overrides, ns, types if types and same else None)
        _assign(self.accounts, ns, same[0] if same and not blocked else None)
        if not same:
            del self._by_namespace[ns]
        if not by_type:
            del self._by_key[ns]

    def _set(self, key: tuple[str, str], found: list[Finding]) -> None:
        _assign(self._findings, key, tuple(found) if found else None)


def _change(bucket: list[T], decl: T, add: bool) -> None:
    if add:
        bucket.append(decl)
    else:
        # By identity: two files may declare equal objects, and each copy
        # carries its own source.
        del bucket[next(i for i, item in enumerate(bucket) if item is decl)]


def _put(items: set[str], item: str, present: bool) -> None:
    if present:
        items.add(item)
    else:
        items.discard(item)


def _assign(mapping: dict, key: object, value: object) -> None:  # type: ignore[type-arg]
    if value is None:
        mapping.pop(key, None)
    else:
        mapping[key] = value


def assemble(declared: Iterable[declarations.Declaration]) -> Inventory:
    """An inventory of ``declared``, as one group."""
    inv = Inventory()
    inv.replace(None, declared)
    return inv
