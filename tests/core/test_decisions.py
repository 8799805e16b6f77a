"""``decisions.decide``: the cross-object rules, once, for any mode's index."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from controller.core import catalog as catalog_
from controller.core import decisions, declarations
from tests.core import builders

Verdict = decisions.Verdict


class World:
    """A dict-backed ``decisions.World``, as an adapter's index would be."""

    def __init__(self, decls: Sequence[declarations.Declaration]) -> None:
        self.decls = decls

    def claimants(self, namespace: str) -> Sequence[declarations.Account]:
        return [
            d
            for d in self.decls
            if isinstance(d, declarations.Account) and d.namespace == namespace
        ]

    def namesakes(self, name: str) -> int:
        return sum(1 for d in self.decls if isinstance(d, declarations.Account) and d.name == name)

    def overrides_in(
        self, namespace: str
    ) -> Mapping[str, Sequence[declarations.IntegrationSettings]]:
        found: dict[str, list[declarations.IntegrationSettings]] = {}
        for d in self.decls:
            if isinstance(d, declarations.IntegrationSettings) and d.namespace == namespace:
                found.setdefault(d.type, []).append(d)
        return found


def parsed(catalog: catalog_.Catalog, *bodies: dict) -> list[declarations.Declaration]:  # type: ignore[type-arg]
    return [builders.parsed(catalog, b) for b in bodies]


def test_one_account_and_a_global_render(catalog: catalog_.Catalog) -> None:
    g, a, o = parsed(
        catalog,
        builders.global_body(),
        builders.account_body("a"),
        builders.override_body(namespace="a"),
    )
    d = decisions.decide(World([a, o]), "a", g)  # type: ignore[arg-type]
    assert d.verdict is Verdict.RENDER and d.account == a and d.overrides == {"openai": o}
    assert d.cause is None and d.findings == ()


def test_no_global_keeps_the_outputs_and_says_why(catalog: catalog_.Catalog) -> None:
    a, o = parsed(catalog, builders.account_body("a"), builders.override_body(namespace="a"))
    d = decisions.decide(World([a, o]), "a", None)
    assert d.verdict is Verdict.KEEP and d.cause is not None
    assert d.cause.reason is decisions.Reason.NO_GLOBAL
    assert d.subjects == (a, o)


def test_two_accounts_on_one_namespace_conflict_and_their_overrides_hear_it(
    catalog: catalog_.Catalog,
) -> None:
    g, a, b, o = parsed(
        catalog,
        builders.global_body(),
        builders.account_body("a", namespace="shared"),
        builders.account_body("b", namespace="shared"),
        builders.override_body(namespace="shared"),
    )
    d = decisions.decide(World([a, b, o]), "shared", g)  # type: ignore[arg-type]
    assert d.verdict is Verdict.KEEP and d.account is None
    assert [(f.ref, f.reason.value) for f in d.findings] == [
        (a.ref, "NamespaceConflict"),  # type: ignore[union-attr]
        (b.ref, "NamespaceConflict"),  # type: ignore[union-attr]
        (o.ref, "NamespaceConflict"),  # type: ignore[union-attr]
    ]
    assert "(a, b)" in d.findings[0].message


def test_a_namespace_no_account_claims_is_removed_and_its_overrides_orphaned(
    catalog: catalog_.Catalog,
) -> None:
    g, o = parsed(catalog, builders.global_body(), builders.override_body(namespace="gone"))
    d = decisions.decide(World([o]), "gone", g)  # type: ignore[arg-type]
    assert d.verdict is Verdict.REMOVE and d.cause is not None
    assert d.cause.reason.value == "NoAccountForNamespace"
    assert [f.ref for f in d.findings] == [o.ref]  # type: ignore[union-attr]
    empty = decisions.decide(World([]), "gone", g)  # type: ignore[arg-type]
    assert empty.verdict is Verdict.REMOVE and empty.cause is None and empty.findings == ()


def test_only_one_global_is_ever_chosen(catalog: catalog_.Catalog) -> None:
    (g,) = parsed(catalog, builders.global_body())
    assert decisions.choose_global([g], True).chosen is g  # type: ignore[list-item]
    two = decisions.choose_global([g, g], True)  # type: ignore[list-item]
    assert (
        two.chosen is None and [f.reason.value for f in two.findings] == ["GlobalNotSingleton"] * 2
    )
    none = decisions.choose_global([], accounts_declared=True)
    assert none.chosen is None and [f.reason.value for f in none.findings] == ["NoGlobalSettings"]
    assert decisions.choose_global([], accounts_declared=False).findings == ()
