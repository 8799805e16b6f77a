"""Two writers of one status on the real API server: neither drops the other's fields.

The account reconciler (``reporting``: Ready, Reconciling, Stalled, CredentialsReady, its
other fields, and the Accounts' ``status.connected``) and the key checker (``connections``:
the global's Connected condition and ``status.connections``) write the global's status.
Each applies only its own fields under its own field manager
(``clients.Client.apply_status``), and ``status.conditions`` is a map list keyed by
``type`` (schemas/common.json), so an apply computed from a stale view cannot remove the
other's entry. The first test shows the loss with the way both wrote before (a merge
patch of the whole conditions list, from each writer's view of it); the second races the
two managers, many writes at once, and watches every event. On an Account the second
manager stands for any other writer of its status (the checker wrote ``connected``
there before the reconciler did): the reconciler's writes never drop its fields.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from controller import schemafiles
from controller.cluster import conditions, connections, metrics, reporting
from controller.cluster.runtime import clients, records
from controller.core import catalog
from tests.harness.fixtures import Kube, until_async
from tests.operator import support

pytestmark = pytest.mark.cluster

RECONCILER = frozenset({"Ready", "Reconciling", "Stalled", "CredentialsReady"})
CHECKER = frozenset({"Connected"})
ROUNDS = 40


def _reconciler_status(round_: int, kind: str) -> dict[str, Any]:
    """What the reconciler applies (its values change every round: each apply is a write)."""
    ok = round_ % 2 == 0
    reason = "Reconciled" if ok else "KeysMissing"
    found = conditions.readiness(ok, reason, f"round {round_}", 1)
    status: dict[str, Any] = {"observedGeneration": 1, "conditions": found}
    if kind == catalog.GLOBAL:
        status["conditions"].append(
            conditions.condition(
                conditions.CREDENTIALS_READY, ok, "KeysPresent", f"round {round_}", 1
            )
        )
    else:
        status["usingGlobal"] = {"openai": ok}
    return status


def _checker_status(round_: int, kind: str) -> dict[str, Any]:
    ok = round_ % 3 != 0
    connected = conditions.condition(
        "Connected", ok, "Verified" if ok else "InvalidKey", f"round {round_}", 1
    )
    if kind == catalog.GLOBAL:
        entry = {
            "integration": "openai",
            "credential": "apiKey",
            "provider": "openai",
            "connected": ok,
            "reason": connected["reason"],
            "message": f"round {round_}",
        }
        return {"conditions": [connected], "connections": [entry]}
    return {"connected": {"openai": ok, "dalle": not ok}}


def _types(status: Mapping[str, Any]) -> set[str]:
    return {str(c.get("type")) for c in status.get("conditions") or ()}


def _intact(kind: str, status: Mapping[str, Any]) -> bool:
    """Both writers' fields are there."""
    types = _types(status)
    mine = RECONCILER if kind == catalog.GLOBAL else RECONCILER - {"CredentialsReady"}
    if not mine <= types:
        return False
    if kind == catalog.GLOBAL:
        return types >= CHECKER and bool(status.get("connections"))
    return "connected" in status and "usingGlobal" in status


class Writers:
    """The two status writers, each as the operator runs it, and the old way of both."""

    def __init__(self, client: clients.Client) -> None:
        self.client = client
        self.paths = clients.Paths(schemafiles.load_catalog())

    async def get(self, kind: str, name: str) -> dict[str, Any]:
        return await self.client.session.get(self.paths(kind, None, name), {})

    async def apply(self, who: str, kind: str, name: str, round_: int) -> None:
        if who == reporting.FIELD_MANAGER:
            status = _reconciler_status(round_, kind)
        else:
            status = _checker_status(round_, kind)
        await self.client.apply_status(kind, name, None, status, who)

    async def merge_patch(
        self, who: str, kind: str, view: Mapping[str, Any], name: str, round_: int
    ) -> None:
        """How both wrote before: the writer's own conditions merged into the conditions
        of its view, the whole list sent as a JSON merge patch (which replaces a list)."""
        status = (
            _reconciler_status(round_, kind)
            if who == reporting.FIELD_MANAGER
            else _checker_status(round_, kind)
        )
        mine = {c["type"] for c in status.get("conditions") or ()}
        kept = [
            c for c in (view.get("status") or {}).get("conditions") or () if c["type"] not in mine
        ]
        status["conditions"] = [*(status.get("conditions") or ()), *kept]
        await self.client.session.request(
            "PATCH",
            self.paths(kind, None, name, "status"),
            {"status": status},
            "application/merge-patch+json",
            {"fieldManager": who},
        )


@pytest.fixture(scope="module")
def quiet(operator: support.Operator) -> Iterator[None]:
    """No operator meanwhile: its reconciler writes Ready under the same manager as the
    writers here (the messages asserted would be its own); started again at the end."""
    if operator.proc is not None:
        assert operator.stop() == 0, operator.log_tail()
    yield
    operator.start()


@pytest.fixture
def account(installed: Kube, tenant_ns: str, quiet: None) -> Iterator[str]:
    support.apply_text(installed, support.account_manifest(tenant_ns, tenant_ns))
    yield tenant_ns
    installed.kubectl("delete", "account", tenant_ns, "--ignore-not-found", "--wait=false")


@pytest.fixture
def global_status(installed: Kube, quiet: None) -> Iterator[str]:
    """The example global; its status is put back as the tests found it."""
    before = support.get_json(installed, "globalintegrationsettings", "default").get("status") or {}
    yield "default"

    async def restore() -> None:
        # A merge patch of the whole status: an apply removing what the tests' managers
        # own would leave the entries they share with the merge patches half-removed
        # (a Connected without a reason: refused by the schema).
        client = clients.Client.connect(installed.kubeconfig, schemafiles.load_catalog())
        status = {k: before.get(k) for k in ("conditions", "connections", "observedGeneration")}
        try:
            await client.session.request(
                "PATCH",
                clients.Paths(schemafiles.load_catalog())(
                    catalog.GLOBAL, None, "default", "status"
                ),
                {"status": status},
                "application/merge-patch+json",
            )
        finally:
            await client.close()

    asyncio.run(restore())


def _objects(account: str, global_: str) -> list[tuple[str, str]]:
    return [(catalog.ACCOUNT, account), (catalog.GLOBAL, global_)]


def test_a_merge_patch_from_a_stale_view_drops_the_other_writers_condition(
    installed: Kube, account: str, global_status: str
) -> None:
    """The old way loses the checker's Connected (and the reconciler's Ready) when the
    two read, then write in turn; applying each writer's own fields in the same order
    loses nothing."""

    async def main() -> None:
        writers = Writers(
            clients.Client.connect(installed.operator_kubeconfig, schemafiles.load_catalog())
        )
        try:
            for kind, name in _objects(account, global_status):
                # The old way: both read, the checker writes, the reconciler writes
                # from its older view.
                await writers.merge_patch(reporting.FIELD_MANAGER, kind, {}, name, 0)
                view = await writers.get(kind, name)
                await writers.merge_patch(connections.FIELD_MANAGER, kind, view, name, 1)
                assert (kind == catalog.ACCOUNT) or _types(
                    (await writers.get(kind, name))["status"]
                ) >= CHECKER
                await writers.merge_patch(reporting.FIELD_MANAGER, kind, view, name, 2)
                lost = (await writers.get(kind, name))["status"]
                if kind == catalog.GLOBAL:
                    assert "Connected" not in _types(lost), lost  # the loss
                    # And the other way round: the checker's stale view drops Ready.
                    view = await writers.get(kind, name)
                    await writers.merge_patch(reporting.FIELD_MANAGER, kind, view, name, 3)
                    await writers.merge_patch(connections.FIELD_MANAGER, kind, view, name, 4)
                    lost = (await writers.get(kind, name))["status"]
                    ready = next(c for c in lost["conditions"] if c["type"] == "Ready")
                    assert ready["message"] == "round 2", lost  # round 3's Ready undone

                # The same order of writes, each applying its own fields.
                for who, round_ in (
                    (reporting.FIELD_MANAGER, 5),
                    (connections.FIELD_MANAGER, 6),
                    (reporting.FIELD_MANAGER, 7),
                    (connections.FIELD_MANAGER, 8),
                ):
                    await writers.apply(who, kind, name, round_)
                    status = (await writers.get(kind, name))["status"]
                    assert _intact(kind, status) or round_ == 5, status
                ready = next(c for c in status["conditions"] if c["type"] == "Ready")
                assert ready["message"] == "round 7"
                if kind == catalog.GLOBAL:
                    connected = next(c for c in status["conditions"] if c["type"] == "Connected")
                    assert connected["message"] == "round 8"
                    assert status["connections"][0]["message"] == "round 8"
                else:
                    assert status["connected"] == {"openai": True, "dalle": False}
        finally:
            await writers.client.close()

    asyncio.run(main())


def test_two_writers_racing_never_drop_each_others_fields(
    installed: Kube, account: str, global_status: str
) -> None:
    """ROUNDS applies from each manager at once on an Account and the global, every
    event watched: once both writers' fields first appear, every later event has both;
    each manager owns its own condition entries, and the last write of each stays."""

    async def main() -> None:
        client = clients.Client.connect(installed.operator_kubeconfig, schemafiles.load_catalog())
        try:
            for kind, name in _objects(account, global_status):
                await _race(Writers(client), kind, name)
        finally:
            await client.close()

    asyncio.run(main())


def test_a_writer_leaving_a_field_out_removes_only_its_own(installed: Kube, account: str) -> None:
    """An apply owns exactly what it names: a ``connected`` map applied by one manager loses
    a type it leaves out (no null needed), an empty apply removes what it wrote, and
    the other manager's fields stay; a status applied to an object that is gone is no error
    and creates nothing."""

    async def main() -> None:
        client = clients.Client.connect(installed.operator_kubeconfig, schemafiles.load_catalog())
        writers = Writers(client)
        try:
            await writers.apply(reporting.FIELD_MANAGER, catalog.ACCOUNT, account, 0)
            await writers.apply(connections.FIELD_MANAGER, catalog.ACCOUNT, account, 1)
            await client.apply_status(
                catalog.ACCOUNT,
                account,
                None,
                {"connected": {"openai": True}},
                connections.FIELD_MANAGER,
            )
            status = (await writers.get(catalog.ACCOUNT, account))["status"]
            assert status["connected"] == {"openai": True}
            await client.apply_status(catalog.ACCOUNT, account, None, {}, connections.FIELD_MANAGER)
            status = (await writers.get(catalog.ACCOUNT, account))["status"]
            assert "connected" not in status
            assert _types(status) == RECONCILER - {"CredentialsReady"}
            assert status["usingGlobal"] == {"openai": True}

            gone = f"{account}-gone"
            await client.apply_status(
                catalog.ACCOUNT,
                gone,
                None,
                {"connected": {"openai": True}},
                connections.FIELD_MANAGER,
            )
            with pytest.raises(Exception, match="404"):
                await writers.get(catalog.ACCOUNT, gone)
        finally:
            await client.close()

    asyncio.run(main())


async def _race(writers: Writers, kind: str, name: str) -> None:
    client = writers.client
    _, version = await client.list_named(kind, name, dict)
    seen: list[dict[str, Any]] = []

    async def watch() -> None:
        async for type_, body in client.watch_named(kind, name, version):
            if type_ in ("ADDED", "MODIFIED"):
                seen.append(body.get("status") or {})

    watching = asyncio.create_task(watch())
    reads: list[dict[str, Any]] = []
    for round_ in range(ROUNDS):
        # Both at once: which lands first each round is up to the server.
        await asyncio.gather(
            writers.apply(reporting.FIELD_MANAGER, kind, name, round_),
            writers.apply(connections.FIELD_MANAGER, kind, name, round_),
        )
        reads.append((await writers.get(kind, name))["status"])
    final = await writers.get(kind, name)
    await until_async(
        lambda: bool(seen) and seen[-1] == final["status"],
        f"the watch of the {kind} to catch up",
        30,
        0.05,
    )
    watching.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watching

    assert all(_intact(kind, s) for s in reads), json.dumps(reads, indent=1)
    first = next(i for i, s in enumerate(seen) if _intact(kind, s))
    broken = [s for s in seen[first:] if not _intact(kind, s)]
    assert not broken, json.dumps(broken[:2], indent=1)
    # Every apply that changes what its manager owns is an event, all of them seen
    # (the reconciler's message changes every round, the checker's Account map not).
    changes = ROUNDS + sum(
        r == 0 or _checker_status(r, kind) != _checker_status(r - 1, kind) for r in range(ROUNDS)
    )
    assert len(seen) == changes, (len(seen), changes)
    status = final["status"]
    last = f"round {ROUNDS - 1}"
    for type_ in ("Ready", *(("Connected",) if kind == catalog.GLOBAL else ())):
        c = next(c for c in status["conditions"] if c["type"] == type_)
        assert c["message"] == last, status
    owners = _owners(final)
    ready, connected = 'k:{"type":"Ready"}', 'k:{"type":"Connected"}'
    assert ready in owners[reporting.FIELD_MANAGER], owners
    assert connected not in owners[reporting.FIELD_MANAGER]
    if kind == catalog.GLOBAL:
        assert connected in owners[connections.FIELD_MANAGER], owners
        assert ready not in owners[connections.FIELD_MANAGER]
        assert "f:connections" in owners[connections.FIELD_MANAGER]
    else:
        assert "f:connected" in owners[connections.FIELD_MANAGER]
        assert "f:connected" not in owners[reporting.FIELD_MANAGER]


def test_what_the_operator_wrote_before_its_statuses_were_applied_is_still_removed(
    installed: Kube, account: str
) -> None:
    """A type in ``status.connected`` written by a merge patch (the operator before this
    change) stays when an apply leaves it out: it is not the apply's. The reconciler's
    ``reporting.Reporter`` removes the types that go (and the whole map) whoever wrote
    them, and leaves every other field as it was."""

    async def main() -> None:
        cat = schemafiles.load_catalog()
        client = clients.Client.connect(installed.operator_kubeconfig, cat)
        writers = Writers(client)
        reporter = reporting.Reporter(client, metrics.Metrics())
        path = writers.paths(catalog.ACCOUNT, None, account, "status")

        async def observed() -> records.Observed:
            return records.observe(cat, await writers.get(catalog.ACCOUNT, account))

        try:
            mine = _reconciler_status(0, catalog.ACCOUNT)
            old = {"status": {"connected": {"openai": True, "dalle": True}}}
            await client.session.request("PATCH", path, old, "application/merge-patch+json")
            await client.apply_status(
                catalog.ACCOUNT,
                account,
                None,
                {**mine, "connected": {"openai": True}},
                reporting.FIELD_MANAGER,
            )
            status = (await writers.get(catalog.ACCOUNT, account))["status"]
            assert status["connected"] == {"openai": True, "dalle": True}  # not the apply's

            await reporter.status(await observed(), {**mine, "connected": {"openai": True}})
            status = (await writers.get(catalog.ACCOUNT, account))["status"]
            assert status["connected"] == {"openai": True}
            assert _types(status) == RECONCILER - {"CredentialsReady"}
            await reporter.status(await observed(), {**mine, "connected": None})
            status = (await writers.get(catalog.ACCOUNT, account))["status"]
            assert "connected" not in status and status["usingGlobal"] == {"openai": True}
            # Gone meanwhile: no error.
            await client.remove_status(
                catalog.ACCOUNT, f"{account}-gone", None, {"connected": None}
            )
        finally:
            await client.close()

    asyncio.run(main())


def _owners(body: Mapping[str, Any]) -> dict[str, set[str]]:
    """Field manager -> every field key it owns in the status (from managedFields)."""
    out: dict[str, set[str]] = {}

    def keys(node: Any) -> Iterator[str]:
        for key, value in (node or {}).items():
            yield key
            yield from keys(value)

    for entry in body["metadata"].get("managedFields") or ():
        if entry.get("operation") == "Apply" and entry.get("subresource") == "status":
            out[entry["manager"]] = set(keys(entry.get("fieldsV1")))
    return out
