"""The reconciler and kopf wiring without a cluster: a fake writer, dict indexes."""

from __future__ import annotations

import asyncio
import copy
import pathlib
from collections.abc import Mapping
from typing import Any

import yaml

from controller.cluster import bodies, conditions, generated, handlers, keys, metrics, reconciling
from controller.core import catalog as catalog_
from controller.core import rendering

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"


class FakeWriter:
    def __init__(self, views: reconciling.Views | None = None, delay: float = 0.0) -> None:
        self.applied: list[dict[str, Any]] = []
        self.statuses: list[tuple[str, str, dict[str, Any]]] = []
        self.events: list[tuple[str, str]] = []
        self.deleted: list[tuple[str, str | None, str]] = []
        self.unlabelled: list[str] = []
        self.delay = delay
        self.running = 0
        self.peak = 0
        self.views = views

    async def apply(self, manifest: Mapping[str, Any]) -> None:
        self.running += 1
        self.peak = max(self.peak, self.running)
        await asyncio.sleep(self.delay)
        self.running -= 1
        self.applied.append(copy.deepcopy(dict(manifest)))
        if self.views is not None and manifest["kind"] in ("ConfigMap", "Secret"):
            # What the watch would bring back into generated.Digests.
            index = self.views.configmaps if manifest["kind"] == "ConfigMap" else self.views.secrets
            index[manifest["metadata"]["namespace"]] = bodies.digest(manifest)  # type: ignore[index]
        if self.views is not None and manifest["kind"] == "Namespace":
            name, labels = generated.namespace_labels(manifest)
            self.views.namespaces[name] = labels  # type: ignore[index]

    async def delete(self, kind: str, namespace: str | None, name: str) -> None:
        self.deleted.append((kind, namespace, name))
        if self.views is not None and namespace is not None:
            index = self.views.configmaps if kind == "ConfigMap" else self.views.secrets
            index.pop(namespace, None)  # type: ignore[attr-defined]

    async def remove_labels(self, kind: str, name: str, labels: Any) -> None:
        self.unlabelled.append(name)
        if self.views is not None:
            self.views.namespaces.pop(name, None)  # type: ignore[attr-defined]

    async def patch_status(
        self, kind: str, name: str, namespace: str | None, status: Mapping[str, Any]
    ) -> None:
        self.statuses.append((kind, name, dict(status)))

    async def post_event(
        self, involved: Mapping[str, Any], type_: str, reason: str, message: str
    ) -> None:
        self.events.append((reason, message))


class Keys:
    def __init__(self, values: dict[tuple[str, str], str]) -> None:
        self.values = values

    def value(self, secret_name: str, key: str) -> str | None:
        return self.values.get((secret_name, key))


def _body(doc: dict[str, Any], uid: str) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    doc["metadata"].update(uid=uid, generation=1)
    if doc["kind"] == "IntegrationSettings":
        doc["metadata"]["name"] = doc["metadata"]["name"].replace("_", "-")
    return doc


def views_for(cat: catalog_.Catalog, accounts: int) -> reconciling.Views:
    global_doc = yaml.safe_load((EXAMPLES / "global.yaml").read_text())
    views = reconciling.Views(
        globals={"default": bodies.observe(cat, _body(global_doc, "g"))},
        accounts={},
        tenants={},
        overrides={},
        configmaps={},
        secrets={},
    )
    for i in range(accounts):
        name = f"acct-{i}"
        doc = {
            "apiVersion": catalog_.API_VERSION,
            "kind": "Account",
            "metadata": {"name": name},
            "spec": {"plan": "pro", "namespace": name},
        }
        observed = bodies.observe(cat, _body(doc, f"uid-{i}"))
        views.accounts[name] = observed  # type: ignore[index]
        views.tenants[name] = {name: observed}  # type: ignore[index]
    return views


KEYS = Keys({("platform-api-keys", "openai"): "b3BlbmFp", ("platform-api-keys", "dalle"): "ZA=="})


def reconciler(
    cat: catalog_.Catalog, views: reconciling.Views, writer: FakeWriter, concurrency: int = 4
) -> reconciling.Reconciler:
    return reconciling.Reconciler(cat, writer, KEYS, views, metrics.Metrics(), concurrency)


def test_kopf_runs_the_process_and_follows_no_resource() -> None:
    registry = handlers.registry
    assert handlers.startup in [h.fn for h in registry._activities.get_all_handlers()]
    assert registry._changing.get_all_handlers() == []  # no diff base, no progress annotations
    assert registry._spawning.get_all_handlers() == []  # no daemons/timers: no finalizers
    assert registry._webhooks.get_all_handlers() == []
    assert registry._indexing.get_all_handlers() == []  # resources.Resources instead
    assert registry._watching.get_all_handlers() == []


def test_fan_out_is_one_bounded_pass(catalog: catalog_.Catalog) -> None:
    views = views_for(catalog, 40)
    writer = FakeWriter(views, delay=0.001)

    async def main() -> None:
        await reconciler(catalog, views, writer, concurrency=4).global_changed()

    asyncio.run(main())
    kinds = [m["kind"] for m in writer.applied]
    assert kinds.count("ConfigMap") == 40 and kinds.count("Secret") == 40
    assert kinds.count("Namespace") == 40
    # Four accounts at once, each writing its ConfigMap and Secret together.
    assert writer.peak <= 2 * 4


def test_the_echoes_of_its_own_writes_sync_nothing_again(catalog: catalog_.Catalog) -> None:
    """A new account's namespace labels, ConfigMap and Secret each come back on a watch:
    none of them is a reason to sync the account a second time; a drift is."""
    views = views_for(catalog, 1)
    writer = FakeWriter(views)

    async def main() -> None:
        r = reconciler(catalog, views, writer)
        await r.account("acct-0")
        synced = r.renders
        # What the watches report after those writes (FakeWriter updated the views).
        await r.namespaces_changed(["acct-0"])
        for kind, seen in (("ConfigMap", views.configmaps), ("Secret", views.secrets)):
            await r.generated_changed(kind, [("acct-0", seen["acct-0"])])
        assert r.queue.depth == 0
        await r.drained()
        assert r.renders == synced
        # Someone else relabels the namespace: that is synced.
        views.namespaces["acct-0"] = ("free", "acct-0")  # type: ignore[index]
        await r.namespaces_changed(["acct-0"])
        await r.drained()
        assert r.renders == synced + 1

    asyncio.run(main())


def test_unchanged_accounts_are_not_rewritten(catalog: catalog_.Catalog) -> None:
    views = views_for(catalog, 3)
    writer = FakeWriter(views)

    async def main() -> None:
        r = reconciler(catalog, views, writer)
        await r.everything("first")
        first = len(writer.applied)
        await r.everything("again")
        assert len(writer.applied) == first
        # The same global again is not a reason to fan out.
        await r.global_changed()
        assert len(writer.applied) == first

    asyncio.run(main())


def test_credential_secret_holds_only_enabled_integrations_keys(catalog: catalog_.Catalog) -> None:
    views = views_for(catalog, 1)
    writer = FakeWriter(views)
    asyncio.run(reconciler(catalog, views, writer).account("acct-0"))
    secret = next(m for m in writer.applied if m["kind"] == "Secret")
    assert secret["data"] == {"image_generation.dalle": "ZA==", "openai.apiKey": "b3BlbmFp"}
    assert "annotations" not in secret["metadata"]  # not even a digest of a key
    cm = next(m for m in writer.applied if m["kind"] == "ConfigMap")
    assert cm["metadata"]["ownerReferences"][0]["uid"] == "uid-0"
    assert cm["metadata"]["annotations"][rendering.ANNOTATION_HASH].startswith("sha256:")


def test_missing_global_blocks_without_writing(catalog: catalog_.Catalog) -> None:
    views = views_for(catalog, 1)
    views.globals.clear()  # type: ignore[attr-defined]
    writer = FakeWriter(views)
    asyncio.run(reconciler(catalog, views, writer).account("acct-0"))
    assert writer.applied == []
    ((_, _, status),) = writer.statuses
    assert conditions.find(status, "Ready")["reason"] == "NoGlobalSettings"  # type: ignore[index]
    assert writer.events and writer.events[0][0] == "NoGlobalSettings"


def test_unreferenced_secret_changes_do_nothing(catalog: catalog_.Catalog) -> None:
    views = views_for(catalog, 2)
    writer = FakeWriter(views)
    asyncio.run(reconciler(catalog, views, writer).keys_changed({"some-other-secret"}))
    assert writer.applied == [] and writer.statuses == []


def test_conditions_keep_their_transition_time() -> None:
    first = conditions.condition("Ready", True, "A", "m", 1)
    again = conditions.condition("Ready", True, "B", "n", 2, [{**first, "lastTransitionTime": "x"}])
    assert again["lastTransitionTime"] == "x"
    flipped = conditions.condition(
        "Ready", False, "B", "n", 2, [{**first, "lastTransitionTime": "x"}]
    )
    assert flipped["lastTransitionTime"] != "x"


def test_key_store_reports_only_real_changes() -> None:
    store = keys.KeyStore()
    secret = {"metadata": {"name": "s"}, "data": {"a": "MQ=="}}
    assert store.apply("ADDED", secret) == {"s"}
    assert store.apply("MODIFIED", secret) == frozenset()  # same data: no fan-out
    assert store.value("s", "a") == "MQ=="
    assert store.apply("DELETED", secret) == {"s"}
    assert store.value("s", "a") is None
    empty = {"metadata": {"name": "t"}, "data": {"k": ""}}
    assert store.replace([secret, empty]) == {"s", "t"}
    assert store.value("t", "k") is None  # an empty key is a missing key
    assert store.replace([secret]) == {"t"}


def test_a_plan_may_keep_the_keys_out_of_its_namespaces(catalog: catalog_.Catalog) -> None:
    views = views_for(catalog, 1)
    doc = yaml.safe_load((EXAMPLES / "global.yaml").read_text())
    doc["spec"]["plans"]["pro"]["projectKeys"] = False
    views.globals["default"] = bodies.observe(catalog, _body(doc, "g"))  # type: ignore[index]
    writer = FakeWriter(views)
    asyncio.run(reconciler(catalog, views, writer).account("acct-0"))
    secret = next(m for m in writer.applied if m["kind"] == "Secret")
    assert secret["data"] == {}
    assert any(m["kind"] == "ConfigMap" for m in writer.applied)


def test_the_operator_refuses_its_own_reserved_namespaces(catalog: catalog_.Catalog) -> None:
    """``--reserved-namespaces`` reaches the core's Account check (the operator's namespace too)."""
    doc = {
        "apiVersion": catalog_.API_VERSION,
        "kind": "Account",
        "metadata": {"name": "a", "uid": "u", "generation": 1},
        "spec": {"plan": "pro", "namespace": "platform-tools"},
    }
    assert bodies.observe(catalog, doc).declaration is not None
    refused = bodies.observe(catalog, doc, reserved=("platform-tools", "kube-system"))
    assert refused.declaration is None
    assert [p.reason.value for p in refused.problems] == ["ReservedNamespace"]
