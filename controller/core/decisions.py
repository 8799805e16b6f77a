"""What may be rendered where: every rule that looks across objects, decided once.

File mode (``inventory``) and cluster mode (``controller.cluster``) each keep
their own index of declarations and expose it as a ``World``; both ask
``decide`` about one account namespace at a time and only carry out the
answer (write files or API objects, report findings or statuses). A namespace
is the unit: it holds one account's outputs and overrides, and every conflict
(two accounts, two copies of one override) is a conflict inside one namespace.

The outcomes:

- ``RENDER``: exactly one account claims the namespace and there is one valid
  global: merge them with the overrides found there.
- ``KEEP``: the namespace is claimed but cannot be rendered (a conflict, no
  valid global): its outputs are left as they are, every object in it is told
  ``cause``.
- ``REMOVE``: no account claims it: outputs an account generated there before
  (it was deleted, or it moved to another namespace) go, and overrides left
  there belong to no one.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence
from typing import Protocol

from controller.core import catalog, credentials, declarations, findings

Reason = findings.Reason
printable = credentials.printable_name

DUPLICATE = "declared more than once; the account keeps its last good output until one is removed"


def no_global(singleton: str = "default") -> str:
    return (
        f"no valid GlobalIntegrationSettings named {singleton!r}, "
        "so no account can be rendered; outputs are left as they are"
    )


def namespace_conflict(namespace: str, names: Sequence[str]) -> str:
    return (
        f"spec.namespace: namespace {printable(namespace)!r} is claimed by more than one account "
        f"({', '.join(sorted({printable(n) for n in names}))}); outputs are left as they are"
    )


def orphan(namespace: str) -> str:
    return (
        f"metadata.namespace: no Account has spec.namespace {printable(namespace)!r}, "
        "so these overrides belong to no account"
    )


def not_the_singleton(singleton: str = "default") -> str:
    return f"only the GlobalIntegrationSettings named {singleton!r} is used"


SINGLETON_DECLARED_TWICE = (
    "GlobalIntegrationSettings is a singleton, but it is declared more than once"
)


class World(Protocol):
    """A read-only view of every valid declaration, as one mode indexes them."""

    def claimants(self, namespace: str) -> Sequence[declarations.Account]:
        """The Accounts whose ``spec.namespace`` is ``namespace`` (every copy, file mode)."""
        ...

    def namesakes(self, name: str) -> int:
        """How many Accounts carry ``name`` (more than one only in file mode)."""
        ...

    def overrides_in(
        self, namespace: str
    ) -> Mapping[str, Sequence[declarations.IntegrationSettings]]:
        """The IntegrationSettings in ``namespace``, by type (every copy, file mode)."""
        ...


class Verdict(enum.Enum):
    RENDER = "render"
    KEEP = "keep"
    REMOVE = "remove"


@dataclasses.dataclass(frozen=True)
class Cause:
    """Why a namespace is not rendered: what every object in it is told."""

    reason: Reason
    message: str


@dataclasses.dataclass(frozen=True)
class Decision:
    namespace: str
    verdict: Verdict
    account: declarations.Account | None  # the claimant, when exactly one account claims it
    claimants: tuple[declarations.Account, ...]
    overrides: Mapping[str, declarations.IntegrationSettings]  # by type, one copy each
    cause: Cause | None  # set for KEEP, and for REMOVE with overrides left behind
    findings: tuple[findings.Finding, ...]  # on the objects they concern, with place

    @property
    def subjects(self) -> tuple[declarations.Account | declarations.IntegrationSettings, ...]:
        """Every object in the namespace that a status or a report speaks about."""
        return (*self.claimants, *self.overrides.values())


@dataclasses.dataclass(frozen=True)
class GlobalDecision:
    chosen: declarations.GlobalSettings | None
    findings: tuple[findings.Finding, ...]


def choose_global(
    candidates: Sequence[declarations.GlobalSettings], accounts_declared: bool
) -> GlobalDecision:
    """The one global every account merges with: exactly one valid, or none.

    ``accounts_declared``: whether any account is waiting for it (a missing
    global is only a problem then).
    """
    if len(candidates) == 1:
        return GlobalDecision(candidates[0], ())
    if candidates:
        return GlobalDecision(
            None,
            tuple(
                findings.error(
                    Reason.SINGLETON,
                    SINGLETON_DECLARED_TWICE,
                    findings.ObjectRef(catalog.GLOBAL, g.name),
                    ("metadata", "name"),
                    g.source,
                )
                for g in candidates
            ),
        )
    found: tuple[findings.Finding, ...] = ()
    if accounts_declared:
        found = (findings.error(Reason.NO_GLOBAL, no_global()),)
    return GlobalDecision(None, found)


def decide(world: World, namespace: str, global_: declarations.GlobalSettings | None) -> Decision:
    """The fate of one account namespace."""
    claimants = tuple(world.claimants(namespace))
    by_type = world.overrides_in(namespace)
    found: list[findings.Finding] = []
    copies_clash = False
    kept: dict[str, declarations.IntegrationSettings] = {}
    for type_name in sorted(by_type):
        copies = by_type[type_name]
        if len(copies) > 1:
            copies_clash = True
            found.extend(
                findings.error(
                    Reason.DUPLICATE_OBJECT, DUPLICATE, o.ref, ("metadata", "name"), o.source
                )
                for o in copies
            )
        elif copies and not claimants:
            o = copies[0]
            found.append(
                findings.error(
                    Reason.ORPHAN_OVERRIDE,
                    orphan(namespace),
                    o.ref,
                    ("metadata", "namespace"),
                    o.source,
                )
            )
        if len(copies) == 1:
            kept[type_name] = copies[0]

    if not claimants:
        cause = Cause(Reason.ORPHAN_OVERRIDE, orphan(namespace)) if kept else None
        return Decision(namespace, Verdict.REMOVE, None, (), kept, cause, tuple(found))

    names = sorted({a.name for a in claimants})
    cause = None
    if len(names) > 1:
        cause = Cause(Reason.NAMESPACE_CONFLICT, namespace_conflict(namespace, names))
        found[:0] = [
            findings.error(cause.reason, cause.message, a.ref, ("spec", "namespace"), a.source)
            for a in claimants
        ] + [
            # Its overrides are not applied either: each hears why.
            findings.error(cause.reason, cause.message, o.ref, ("metadata", "namespace"), o.source)
            for o in kept.values()
        ]
    elif len(claimants) > 1 or world.namesakes(names[0]) > 1:
        # One name declared twice (file mode): the copies are reported where they
        # are declared (``duplicated_names``), and none of them wins.
        cause = Cause(Reason.DUPLICATE_OBJECT, DUPLICATE)
    elif copies_clash:
        cause = Cause(Reason.DUPLICATE_OBJECT, DUPLICATE)
    elif global_ is None:
        cause = Cause(Reason.NO_GLOBAL, no_global())
    account = claimants[0] if len(names) == 1 else None
    verdict = Verdict.RENDER if cause is None else Verdict.KEEP
    return Decision(namespace, verdict, account, claimants, kept, cause, tuple(found))


def duplicated_names(copies: Sequence[declarations.Account]) -> tuple[findings.Finding, ...]:
    """Findings for Accounts that share one name (file mode: two files declare it)."""
    if len(copies) < 2:
        return ()
    return tuple(
        findings.error(Reason.DUPLICATE_OBJECT, DUPLICATE, a.ref, ("metadata", "name"), a.source)
        for a in copies
    )
