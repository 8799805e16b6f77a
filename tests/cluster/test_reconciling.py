"""The reconciler and kopf wiring without a cluster: a fake writer, dict indexes."""

from __future__ import annotations

import asyncio
import copy
import logging
import pathlib
from typing import Any

import pytest
import yaml

from controller.cluster import conditions, metrics, reconciling
from controller.cluster.runtime import records, secrets
from controller.core import catalog as catalog_
from controller.core import rendering
from tests.cluster import fakes

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"


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
        globals={"default": records.observe(cat, _body(global_doc, "g"))},
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
        observed = records.observe(cat, _body(doc, f"uid-{i}"))
        views.accounts[name] = observed  # type: ignore[index]
        views.tenants[name] = {name: observed}  # type: ignore[index]
    return views


KEYS = Keys({("platform-api-keys", "openai"): "b3BlbmFp", ("platform-api-keys", "dalle"): "ZA=="})


def reconciler(
    cat: catalog_.Catalog,
    views: reconciling.Views,
    writer: fakes.RecordingWriter,
    concurrency: int = 4,
) -> reconciling.Reconciler:
    return reconciling.Reconciler(cat, writer, KEYS, views, metrics.Metrics(), concurrency)


def test_fan_out_is_one_bounded_pass(catalog: catalog_.Catalog) -> None:
    views = views_for(catalog, 40)
    writer = fakes.RecordingWriter(views, delay=0.001)

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
    writer = fakes.RecordingWriter(views)

    async def main() -> None:
        r = reconciler(catalog, views, writer)
        await r.account("acct-0")
        synced = r.renders
        # What the watches report after those writes (the RecordingWriter updated the views).
        r.namespaces_changed(["acct-0"])
        for kind, seen in (("ConfigMap", views.configmaps), ("Secret", views.secrets)):
            r.generated_changed(kind, [("acct-0", seen["acct-0"])])
        assert r.queue.depth == 0
        await r.drained()
        assert r.renders == synced
        # Someone else relabels the namespace: that is synced.
        views.namespaces["acct-0"] = ("free", "acct-0")  # type: ignore[index]
        r.namespaces_changed(["acct-0"])
        await r.drained()
        assert r.renders == synced + 1

    asyncio.run(main())


def test_unchanged_accounts_are_not_rewritten(catalog: catalog_.Catalog) -> None:
    views = views_for(catalog, 3)
    writer = fakes.RecordingWriter(views)

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
    writer = fakes.RecordingWriter(views)
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
    writer = fakes.RecordingWriter(views)
    asyncio.run(reconciler(catalog, views, writer).account("acct-0"))
    assert writer.applied == []
    ((_, _, status),) = writer.statuses
    assert conditions.find(status, "Ready")["reason"] == "NoGlobalSettings"  # type: ignore[index]
    assert writer.events and writer.events[0].reason == "NoGlobalSettings"


def test_unreferenced_secret_changes_do_nothing(catalog: catalog_.Catalog) -> None:
    views = views_for(catalog, 2)
    writer = fakes.RecordingWriter(views)

    async def main() -> None:
        r = reconciler(catalog, views, writer)
        assert not r.keys_changed({"some-other-secret"})
        assert r.queue.depth == 0
        assert r.keys_changed({"platform-api-keys"})
        assert r.queue.pending[0] == reconciling.GLOBAL  # its status first, then the fan-out
        assert sorted(map(str, r.queue.pending[1:])) == ["acct-0", "acct-1"]
        await r.close()

    asyncio.run(main())
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
    store = secrets.SecretStore()
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
    views.globals["default"] = records.observe(catalog, _body(doc, "g"))  # type: ignore[index]
    writer = fakes.RecordingWriter(views)
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
    assert records.observe(catalog, doc).declaration is not None
    refused = records.observe(catalog, doc, reserved=("platform-tools", "kube-system"))
    assert refused.declaration is None
    assert [p.reason.value for p in refused.problems] == ["ReservedNamespace"]


def _written_body(writer: fakes.RecordingWriter, kind: str) -> dict[str, Any]:
    return copy.deepcopy(next(m for m in writer.applied if m["kind"] == kind))


def _ready_reason(writer: fakes.RecordingWriter) -> str:
    account = [s for k, _, s in writer.statuses if k == "Account"][-1]
    return str(next(c for c in account["conditions"] if c["type"] == "Ready")["reason"])


@pytest.mark.parametrize(
    ("edit", "ours"),
    [
        pytest.param(
            lambda b: b["metadata"]["labels"].pop(rendering.LABEL_MANAGED_BY),
            True,
            id="label-removed",
        ),
        pytest.param(lambda b: None, True, id="untouched"),
        # A label is cheap to set: without this Account's uid it proves nothing.
        pytest.param(lambda b: b["metadata"].pop("ownerReferences"), False, id="no-owner"),
        # The namespace's former account's output (deleted, or moved away): taken over.
        pytest.param(
            lambda b: b["metadata"]["ownerReferences"][0].update(uid="former", name="former"),
            True,
            id="a-former-accounts",
        ),
        pytest.param(
            lambda b: b["metadata"]["ownerReferences"][0].update(
                kind="Deployment", apiVersion="apps/v1"
            ),
            False,
            id="owned-by-something-else",
        ),
        pytest.param(
            lambda b: (
                b["metadata"]["labels"].pop(rendering.LABEL_MANAGED_BY),
                b["metadata"].pop("managedFields"),
            ),
            False,
            id="neither-label-nor-manager",
        ),
    ],
)
def test_ours_is_proven_by_the_accounts_uid(
    catalog: catalog_.Catalog, edit: Any, ours: bool
) -> None:
    views = views_for(catalog, 1)
    writer = fakes.RecordingWriter(views)

    async def main() -> None:
        r = reconciler(catalog, views, writer)
        await r.account("acct-0")
        body = _written_body(writer, "ConfigMap")
        # As the API server shows it: our field manager holds its fields.
        body["metadata"]["managedFields"] = [
            {"manager": "settings-controller", "operation": "Apply"}
        ]
        body["data"]["openai.json"] = "{}"  # drifted: a rewrite is due
        edit(body)
        views.configmaps["acct-0"] = records.digest(body)  # type: ignore[index]
        writer.applied.clear()
        await r.account("acct-0")
        if ours:
            written = _written_body(writer, "ConfigMap")
            assert (
                written["metadata"]["labels"][rendering.LABEL_MANAGED_BY] == "settings-controller"
            )
            assert _ready_reason(writer) != "OutputConflict"
        else:
            assert [m for m in writer.applied if m["kind"] == "ConfigMap"] == []
            assert _ready_reason(writer) == "OutputConflict"

    asyncio.run(main())


@pytest.mark.parametrize("kind", ["ConfigMap", "Secret"])
def test_keys_added_by_hand_are_removed_and_named_only_when_safe(
    catalog: catalog_.Catalog, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    views = views_for(catalog, 1)
    writer = fakes.RecordingWriter(views)
    pasted = "sk-proj-AbCdEf0123456789xyzABCDEF"

    async def main() -> None:
        r = reconciler(catalog, views, writer)
        await r.account("acct-0")
        await r.account("acct-0")
        assert writer.removed_keys == []  # nothing foreign: no write at all
        body = _written_body(writer, kind)
        body["data"]["extra.json"] = "e30="
        body["data"][pasted] = "eA=="
        body["binaryData"] = {"planted": "eA=="}
        index = views.configmaps if kind == "ConfigMap" else views.secrets
        index["acct-0"] = records.digest(body)  # type: ignore[index]
        writer.applied.clear()
        with caplog.at_level("INFO"):
            await r.account("acct-0")
        assert writer.removed_keys == [(kind, "acct-0", ("extra.json", pasted, "planted"))]
        assert "extra.json" in caplog.text and pasted[:8] not in caplog.text
        assert "<name that looks like a key>" in caplog.text
        writer.removed_keys.clear()
        await r.account("acct-0")
        assert writer.removed_keys == []

    asyncio.run(main())


def test_an_override_of_an_account_in_output_conflict_says_so(catalog: catalog_.Catalog) -> None:
    """Was: the override kept Ready=True Applied of an older generation."""
    views = views_for(catalog, 1)
    writer = fakes.RecordingWriter(views)
    doc = {
        "apiVersion": catalog_.API_VERSION,
        "kind": "IntegrationSettings",
        "metadata": {"name": "openai", "namespace": "acct-0"},
        "spec": {"overrides": {"model": "gpt-4o"}},
    }
    views.overrides["acct-0"] = {"openai": records.observe(catalog, _body(doc, "o-0"))}  # type: ignore[index]
    foreign = {
        "metadata": {"name": rendering.CONFIGMAP_NAME, "namespace": "acct-0"},
        "data": {"mine.txt": "hello"},
    }
    views.configmaps["acct-0"] = records.digest(foreign)  # type: ignore[index]

    async def main() -> None:
        await reconciler(catalog, views, writer).account("acct-0")

    asyncio.run(main())
    assert _ready_reason(writer) == "OutputConflict"
    override = [s for k, _, s in writer.statuses if k == "IntegrationSettings"][-1]
    ready = next(c for c in override["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "AccountNotReady")
    assert "OutputConflict" in ready["message"] and override["appliedFields"] == []
    stalled = next(c for c in override["conditions"] if c["type"] == "Stalled")
    assert stalled["status"] == "False"  # nothing in its spec to fix


def test_a_forced_resync_is_honoured_once_per_namespace_per_window(
    catalog: catalog_.Catalog,
) -> None:
    """Breakit2 observation: 40 new values of the force re-sync annotation in 4.6 s cost
    120 writes (a tenant may patch its IntegrationSettings, so it set the operator's write
    rate). At most one forced sync per namespace per FORCE_INTERVAL; later ones are a
    normal sync, which writes nothing when nothing changed; the window is per namespace."""
    views = views_for(catalog, 2)
    writer = fakes.RecordingWriter(views)
    now = [1000.0]

    async def main() -> None:
        r = reconciler(catalog, views, writer)
        r.clock = lambda: now[0]
        await r.everything("first")
        written = len(writer.applied)
        assert r.force("acct-0") is True
        await r.drained()
        assert len(writer.applied) == written + 3  # ConfigMap, Secret, namespace labels
        renders = r.renders
        for _ in range(40):  # one a second for 9 s... and faster
            now[0] += 0.2
            assert r.force("acct-0") is False
            await r.drained()
        assert len(writer.applied) == written + 3  # nothing changed: nothing written
        assert r.renders > renders  # each was still a normal sync
        assert r.force("acct-1") is True  # another namespace has its own window
        await r.drained()
        assert len(writer.applied) == written + 6
        now[0] += reconciling.FORCE_INTERVAL
        assert r.force("acct-0") is True
        await r.drained()
        assert len(writer.applied) == written + 9
        # A normal sync inside the window still writes what did change.
        views.namespaces["acct-0"] = ("free", "acct-0")  # type: ignore[index]
        assert r.force("acct-0") is False
        await r.drained()
        assert [m["kind"] for m in writer.applied[written + 9 :]] == ["Namespace"]
        # The window is per object asking: the Account and each IntegrationSettings of one
        # namespace (deploy/README's three annotate commands, seconds apart) each get one.
        now[0] += reconciling.FORCE_INTERVAL
        assert r.force("acct-1", "Account/acct-1") is True
        assert r.force("acct-1", "IntegrationSettings/acct-1/openai") is True
        assert r.force("acct-1", "IntegrationSettings/acct-1/openai") is False
        assert r.force("acct-1", "global") is True

    asyncio.run(main())


def test_a_fan_out_logs_one_line_for_its_writes(
    catalog: catalog_.Catalog, caplog: pytest.LogCaptureFixture
) -> None:
    """A fan-out's writes are counted in one INFO line once its pass drained (each is a DEBUG
    line); outside a pass, each write is an INFO line."""
    views = views_for(catalog, 5)
    writer = fakes.RecordingWriter(views)
    caplog.set_level(logging.DEBUG, logger=reconciling.__name__)

    def lines(level: int) -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno == level]

    async def main() -> None:
        r = reconciler(catalog, views, writer)
        await r.everything("first")
        info = lines(logging.INFO)
        assert not [m for m in info if ": wrote " in m and m.startswith("account ")], info
        assert sum("synced every namespace (first)" in m for m in info) == 1, info
        (summary,) = [m for m in info if m.startswith("synced every namespace")]
        assert summary.endswith("wrote 5 ConfigMap, 5 Secret"), summary
        assert len([m for m in lines(logging.DEBUG) if ": wrote " in m]) == 10
        # Nothing changed: the next pass says so, and writes nothing.
        caplog.clear()
        await r.everything("again")
        (again,) = [m for m in lines(logging.INFO) if m.startswith("synced every")]
        assert again.endswith("wrote nothing"), again
        # Outside a pass, a write is its own INFO line again.
        caplog.clear()
        views.configmaps.pop("acct-2")  # type: ignore[attr-defined]
        await r.account("acct-2")
        assert lines(logging.INFO) == ["account acct-2: wrote acct-2/integration-settings"]

    asyncio.run(main())
