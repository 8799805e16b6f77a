"""resources.Resources without a cluster: what a listing and each event change, and the views.

The same store against the real API server is every test in tests/operator
that applies a custom resource; this pins the bookkeeping (moves, deletions,
relists, status echoes) that those tests reach only by chance.
"""

from __future__ import annotations

import functools
from typing import Any

import pytest

from controller.cluster.runtime import generated, records, resources
from controller.core import catalog as catalog_


def account(
    name: str, namespace: str, version: str = "1", generation: int = 1, **status: Any
) -> dict[str, Any]:
    return {
        "apiVersion": catalog_.API_VERSION,
        "kind": "Account",
        "metadata": {
            "name": name,
            "uid": f"uid-{name}",
            "generation": generation,
            "resourceVersion": version,
        },
        "spec": {"plan": "pro", "namespace": namespace},
        "status": status,
    }


def store(catalog: catalog_.Catalog) -> resources.Resources:
    return resources.Resources(
        catalog_.ACCOUNT, functools.partial(records.observe, catalog), group=lambda o: o.claims
    )


def test_the_first_listing_reports_every_object_and_groups_them(
    catalog: catalog_.Catalog,
) -> None:
    accounts = store(catalog)
    listed = [accounts.observe(account("a", "ns-a")), accounts.observe(account("b", "ns-b"))]
    changes = accounts.replace(listed)
    assert [(before, after and after.name) for before, after in changes] == [
        (None, "a"),
        (None, "b"),
    ]
    assert sorted(accounts.named) == ["a", "b"] and len(accounts.named) == 2
    assert accounts.named["a"].claims == "ns-a"
    assert list(accounts.grouped["ns-b"]) == ["b"]


def test_a_move_regroups_and_reports_both_sides(catalog: catalog_.Catalog) -> None:
    accounts = store(catalog)
    accounts.replace([accounts.observe(account("a", "ns-1"))])
    ((before, after),) = accounts.apply("MODIFIED", account("a", "ns-2", version="2", generation=2))
    assert before is not None and after is not None
    assert (before.claims, after.claims) == ("ns-1", "ns-2")
    assert "ns-1" not in accounts.grouped  # an empty group is not kept
    assert list(accounts.grouped["ns-2"]) == ["a"]


def test_two_accounts_claiming_one_namespace_are_both_there(catalog: catalog_.Catalog) -> None:
    accounts = store(catalog)
    accounts.replace([])
    accounts.apply("ADDED", account("a", "shared"))
    accounts.apply("ADDED", account("b", "shared"))
    assert sorted(accounts.grouped["shared"]) == ["a", "b"]
    ((before, after),) = accounts.apply("DELETED", account("a", "shared"))
    assert before is not None and before.name == "a" and after is None
    assert list(accounts.grouped["shared"]) == ["b"] and accounts.get("a") is None


def test_a_status_echo_is_a_change_that_reconciles_nothing(catalog: catalog_.Catalog) -> None:
    accounts = store(catalog)
    accounts.replace([accounts.observe(account("a", "ns"))])
    ((before, after),) = accounts.apply(
        "MODIFIED", account("a", "ns", version="2", observedGeneration=1)
    )
    assert after is not None and after.status == {"observedGeneration": 1}
    assert accounts.get("a") is after  # the reporter compares with what is current
    assert records.same_but_status(before, after)
    edited = account("a", "ns", version="3", generation=2)
    edited["spec"]["plan"] = "free"
    ((before, after),) = accounts.apply("MODIFIED", edited)
    assert not records.same_but_status(before, after)
    assert accounts.apply("MODIFIED", edited) == []  # the same object again: nothing


def test_a_relist_reports_what_happened_while_the_watch_was_down(
    catalog: catalog_.Catalog,
) -> None:
    accounts = store(catalog)
    accounts.replace([accounts.observe(account(n, f"ns-{n}")) for n in "abc"])
    changes = accounts.replace(
        [
            accounts.observe(account("a", "ns-a")),  # unchanged
            accounts.observe(account("b", "ns-moved", version="2", generation=2)),
            accounts.observe(account("d", "ns-d")),
        ]
    )
    summary = [
        (before and before.name, after and (after.name, after.claims)) for before, after in changes
    ]
    assert summary == [("b", ("b", "ns-moved")), ("c", None), (None, ("d", "ns-d"))]
    assert sorted(accounts.grouped) == ["ns-a", "ns-d", "ns-moved"]


def test_only_the_operators_own_annotations_are_kept(catalog: catalog_.Catalog) -> None:
    body = account("a", "ns")
    body["metadata"]["annotations"] = {
        f"{catalog_.GROUP}/test-connection": "now",
        "kubectl.kubernetes.io/last-applied-configuration": "{... a pasted key ...}",
    }
    observed = records.observe(catalog, body)
    assert observed.annotations == {f"{catalog_.GROUP}/test-connection": "now"}


def test_a_status_echo_is_not_parsed_again(
    catalog: catalog_.Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    accounts = store(catalog)
    accounts.replace([accounts.observe(account("a", "ns"))])
    parsed: list[str] = []
    real = records.declarations.parse

    def counting(*args: Any, **kwargs: Any) -> Any:
        parsed.append("x")
        return real(*args, **kwargs)

    monkeypatch.setattr(records.declarations, "parse", counting)
    accounts.apply("MODIFIED", account("a", "ns", version="2", observedGeneration=1))
    assert parsed == []  # same uid and generation: the spec cannot have changed
    assert accounts.named["a"].status == {"observedGeneration": 1}
    edited = account("a", "ns-2", version="3")
    edited["metadata"]["generation"] = 2
    accounts.apply("MODIFIED", edited)
    assert parsed == ["x"] and accounts.named["a"].claims == "ns-2"
    recreated = account("a", "ns-2", version="4")
    recreated["metadata"]["uid"] = "another"  # deleted and created again meanwhile
    accounts.apply("MODIFIED", recreated)
    assert parsed == ["x", "x"] and accounts.named["a"].uid == "another"


def test_the_views_get_what_indexing_gets(catalog: catalog_.Catalog) -> None:
    """The views' own ``get`` and ``in`` (not Mapping's, through ``__getitem__``) agree with
    indexing, for present and absent keys alike."""
    s = store(catalog)
    s.replace([s.observe(account("a", "ns-1")), s.observe(account("b", "ns-1"))])
    assert s.grouped.get("ns-1") == s.grouped["ns-1"] == {"a": s.get("a"), "b": s.get("b")}
    assert s.grouped.get("ns-2") is None and s.grouped.get("ns-2", {}) == {}
    assert "ns-1" in s.grouped and "ns-2" not in s.grouped
    assert s.named.get("a") is s.named["a"] is s.get("a")
    assert s.named.get("c") is None and s.named.get("c", "none") == "none"
    assert "a" in s.named and "c" not in s.named


def test_the_generated_views_get_what_indexing_gets() -> None:
    digests = generated.Digests("ConfigMap")
    body = {"metadata": {"name": "integration-settings", "namespace": "ns-1"}, "data": {"a": "1"}}
    digests.apply("ADDED", body)
    assert digests.get("ns-1") is digests["ns-1"] and "ns-1" in digests
    assert digests.get("ns-2") is None and digests.get("ns-2", 0) == 0 and "ns-2" not in digests
    labelled = generated.Namespaces()
    labelled.replace([("ns-1", ("pro", "a"))])
    assert labelled.get("ns-1") == labelled["ns-1"] == ("pro", "a") and "ns-1" in labelled
    assert labelled.get("ns-2") is None and "ns-2" not in labelled
