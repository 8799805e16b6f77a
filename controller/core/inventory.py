"""File mode's index of every declaration: the ``decisions.World`` it decides over.

The rules that look across objects (a singleton global, one Account per name
and per namespace, one IntegrationSettings per namespace and type, overrides
only where an account lives) are ``decisions``'; this module keeps the indexes
they read and the findings and blocked namespaces they answered, so that the
adapters keep the last good output of a namespace in conflict.

The set changes one group of declarations at a time (file mode: one file), and
only the names and namespaces a change touches are checked again, so that
editing one file among 100,000 accounts costs a few dictionary updates.
"""

from __future__ import annotations

import collections
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import TypeVar

from controller.core import decisions, declarations, findings

Reason = findings.Reason
Finding = findings.Finding  # the class has a ``findings`` property: annotate with this
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
            self._set(("name", name), list(decisions.duplicated_names(self._by_name[name])))
            if not self._by_name[name]:
                del self._by_name[name]
        if global_changed:
            chosen = decisions.choose_global(self._globals, accounts_declared=False)
            self._set(_GLOBAL, list(chosen.findings))
            self.global_ = chosen.chosen
        for namespace in namespaces:
            self._check_namespace(namespace)
        self._set(
            _NO_GLOBAL,
            list(decisions.choose_global((), accounts_declared=True).findings)
            if not self._globals and self._by_namespace
            else [],
        )

    # --- decisions.World --------------------------------------------------------

    def claimants(self, namespace: str) -> Sequence[declarations.Account]:
        return self._by_namespace.get(namespace, ())

    def namesakes(self, name: str) -> int:
        return len(self._by_name.get(name, ()))

    def overrides_in(
        self, namespace: str
    ) -> Mapping[str, Sequence[declarations.IntegrationSettings]]:
        return self._by_key.get(namespace, {})

    def decide(self, namespace: str) -> decisions.Decision:
        return decisions.decide(self, namespace, self.global_)

    def _check_namespace(self, ns: str) -> None:
        decision = self.decide(ns)
        self._set(("namespace", ns), list(decision.findings))
        blocked = (
            decision.verdict is decisions.Verdict.KEEP
            and decision.cause is not None
            and (decision.cause.reason is not Reason.NO_GLOBAL)
        )
        _put(self._blocked, ns, blocked)
        _assign(
            self.overrides,
            ns,
            dict(decision.overrides) if decision.claimants and decision.overrides else None,
        )
        _assign(self.accounts, ns, decision.account if decision.account and not blocked else None)
        if ns in self._by_namespace and not self._by_namespace[ns]:
            del self._by_namespace[ns]
        by_type = self._by_key.get(ns)
        if by_type is not None:
            for type_name in [t for t, copies in by_type.items() if not copies]:
                del by_type[type_name]
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
