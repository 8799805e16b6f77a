"""The inventory kept file by file must equal the inventory built from scratch."""

from __future__ import annotations

from collections import Counter
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from controller import schemafiles
from controller.core import declarations, inventory
from tests.core import builders

CATALOG = schemafiles.load_catalog()


def decl(body: dict[str, Any], source: str) -> declarations.Declaration:
    parsed, problems = declarations.parse(CATALOG, body, source)
    assert parsed is not None, problems
    return parsed


# A small universe, so that duplicates, conflicts and orphans happen often.
objects = st.one_of(
    st.just(("global",)),
    st.tuples(st.just("account"), st.sampled_from("ab"), st.sampled_from("xyz")),
    st.tuples(
        st.just("override"), st.sampled_from(["openai", "image_generation"]), st.sampled_from("xyz")
    ),
)


def build(spec: tuple[Any, ...], source: str) -> declarations.Declaration:
    if spec[0] == "global":
        return decl(builders.global_body(), source)
    if spec[0] == "account":
        return decl(builders.account_body(spec[1], namespace=spec[2]), source)
    return decl(builders.override_body(spec[1], namespace=spec[2]), source)


def summary(inv: inventory.Inventory) -> tuple[Any, ...]:
    return (
        inv.global_ is not None,
        {ns: a.name for ns, a in inv.accounts.items()},
        {ns: sorted(t) for ns, t in inv.overrides.items()},
        inv.blocked,
        Counter((f.reason, f.message, f.ref, f.source) for f in inv.findings),
    )


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["f1", "f2", "f3"]), st.lists(objects, max_size=4)), max_size=12
    )
)
def test_incremental_equals_from_scratch(steps: list[tuple[str, list[tuple[Any, ...]]]]) -> None:
    inv = inventory.Inventory()
    files: dict[str, list[declarations.Declaration]] = {}
    for group, specs in steps:
        files[group] = [build(spec, group) for spec in specs]
        inv.replace(group, files[group])
        scratch = inventory.assemble(d for g in sorted(files) for d in files[g])
        assert summary(inv) == summary(scratch)
