"""The Operator's routes without a cluster: which change enqueues which key, and nothing
written from a watch callback (every write is a worker's, after ``queue.start()``)."""

from __future__ import annotations

import asyncio
import copy
import pathlib
from typing import Any

import pytest
import yaml

from controller.cluster import hosting, metrics, operating, reconciling
from controller.core import catalog as catalog_
from tests.cluster.fakes import RecordingWriter

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"


def _operator(cat: catalog_.Catalog, writer: RecordingWriter) -> operating.Operator:
    options = operating.Options(
        kubeconfig=None,
        namespace="settings-controller-system",
        probe_address=None,
        metrics_address=None,
        concurrency=4,
        resync=300.0,
        keys_timeout=1.0,
        election=operating.Election(enabled=False),
    )
    return operating.Operator(options, cat, writer, metrics.Metrics(), stop=lambda: None)  # type: ignore[arg-type]


def _route(op: operating.Operator, source: str) -> operating.Route:
    (route,) = [r for r in op.routes() if r.source == source]
    return route


def _global(generation: int = 1, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    body = yaml.safe_load((EXAMPLES / "global.yaml").read_text())
    body["metadata"].update(uid="g", generation=generation, annotations=annotations or {})
    return dict(body)


def _account(name: str, namespace: str | None, generation: int = 1) -> dict[str, Any]:
    spec: dict[str, Any] = {"plan": "pro"}
    if namespace is not None:
        spec["namespace"] = namespace
    return {
        "apiVersion": catalog_.API_VERSION,
        "kind": "Account",
        "metadata": {"name": name, "uid": f"uid-{name}", "generation": generation},
        "spec": spec,
    }


def _secret(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "settings-controller-system"}, "data": data}


def _feed(op: operating.Operator, source: str, event: str, body: dict[str, Any]) -> None:
    """What ``following`` does with one watch event: into the cache, then the route."""
    route = _route(op, source)
    changed = route.cache.apply(event, body)  # type: ignore[attr-defined]
    if changed:
        route.enqueue(changed)


def test_the_routes_read_like_the_builder(catalog: catalog_.Catalog) -> None:
    op = _operator(catalog, RecordingWriter())
    assert [(r.source, r.enqueues) for r in op.routes()] == [
        (
            "platform key Secrets",
            "Watches(Secret in --namespace) -> GLOBAL, then every namespace, if the global uses it",
        ),
        (
            "GlobalIntegrationSettings objects",
            "For(GlobalIntegrationSettings) -> GLOBAL; a new re-sync annotation: every namespace",
        ),
        (
            "Account objects",
            "For(Account) -> the namespace it claims and the one it claimed, or Unclaimed(name)",
        ),
        ("IntegrationSettings objects", "For(IntegrationSettings) -> its namespace"),
        (
            "ConfigMaps named integration-settings",
            "Owns(ConfigMap) -> its namespace, unless the echo of our own write",
        ),
        (
            "Secrets named integration-credentials",
            "Owns(Secret) -> its namespace, unless the echo of our own write",
        ),
        (
            "Namespaces labelled with a plan",
            "Watches(Namespace with a plan label) -> that namespace, unless our own labels",
        ),
    ]
    # Every cache the reconciler reads is filled by exactly one route.
    assert sorted(map(id, op.caches)) == sorted(
        id(r.cache) for r in op.routes() if r.cache is not op.platform_keys
    )


def test_accounts_enqueue_namespaces_and_an_invalid_one_its_name(
    catalog: catalog_.Catalog,
) -> None:
    writer = RecordingWriter()

    async def main() -> None:
        op = _operator(catalog, writer)
        queue = op.reconciler.queue
        _feed(op, "Account objects", "ADDED", _account("a", "ns-a"))
        assert queue.pending == ["ns-a"]
        # Moved: the namespace it leaves (outputs to remove) and the one it claims.
        _feed(op, "Account objects", "MODIFIED", _account("a", "ns-b", generation=2))
        assert queue.pending == ["ns-a", "ns-b"]
        # The echo of a status patch: nothing.
        echo = _account("a", "ns-b", generation=2)
        echo["status"] = {"conditions": [{"type": "Ready", "status": "True"}]}
        _feed(op, "Account objects", "MODIFIED", echo)
        assert queue.pending == ["ns-a", "ns-b"]
        # No namespace to sync: its own key, and no status written from the callback.
        _feed(op, "Account objects", "ADDED", _account("bad", None))
        assert queue.pending == ["ns-a", "ns-b", reconciling.Unclaimed("bad")]
        await asyncio.sleep(0.05)
        assert writer.statuses == [] and writer.applied == []  # no worker before start
        # The worker writes it once started.
        queue.start()
        await asyncio.wait_for(queue.drained(), 5)
        assert ("Account", "bad") in [(kind, name) for kind, name, _ in writer.statuses]
        await op.reconciler.close()

    asyncio.run(main())


def test_the_global_enqueues_its_status_and_a_forced_resync_every_namespace(
    catalog: catalog_.Catalog,
) -> None:
    async def main() -> None:
        op = _operator(catalog, RecordingWriter())
        queue = op.reconciler.queue
        for name in ("a", "b"):
            _feed(op, "Account objects", "ADDED", _account(name, f"ns-{name}"))
        _feed(op, "GlobalIntegrationSettings objects", "ADDED", _global())
        assert queue.pending == ["ns-a", "ns-b", reconciling.GLOBAL]
        # A new value of the re-sync annotation: the global, and every namespace forced.
        for key in list(queue.pending):
            queue._queue.pop(key)  # as if worked on
        annotated = _global(annotations={operating.RECONCILE_ANNOTATION: "now"})
        _feed(op, "GlobalIntegrationSettings objects", "MODIFIED", annotated)
        assert queue.pending == [reconciling.GLOBAL, "ns-a", "ns-b"]
        await op.reconciler.close()

    asyncio.run(main())


def test_only_a_referenced_key_secret_enqueues_the_global_and_a_fan_out(
    catalog: catalog_.Catalog,
) -> None:
    async def main() -> None:
        op = _operator(catalog, RecordingWriter())
        queue = op.reconciler.queue
        _feed(op, "GlobalIntegrationSettings objects", "ADDED", _global())
        _feed(op, "Account objects", "ADDED", _account("a", "ns-a"))
        for key in list(queue.pending):
            queue._queue.pop(key)
        _feed(op, "platform key Secrets", "ADDED", _secret("unrelated", {"x": "eA=="}))
        assert queue.pending == []
        _feed(op, "platform key Secrets", "ADDED", _secret("platform-api-keys", {"openai": "eA=="}))
        assert queue.pending == [reconciling.GLOBAL, "ns-a"]
        await op.reconciler.close()

    asyncio.run(main())


def test_the_echo_of_a_generated_write_enqueues_nothing_a_drift_its_namespace(
    catalog: catalog_.Catalog,
) -> None:
    async def main() -> None:
        op = _operator(catalog, RecordingWriter())
        queue = op.reconciler.queue
        foreign = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "integration-settings", "namespace": "ns-x"},
            "data": {"k": "v"},
        }
        _feed(op, "ConfigMaps named integration-settings", "ADDED", foreign)
        assert queue.pending == ["ns-x"]
        edited = copy.deepcopy(foreign)
        edited["metadata"]["annotations"] = {"someone": "was here"}  # not content: nothing
        queue._queue.pop("ns-x")
        _feed(op, "ConfigMaps named integration-settings", "MODIFIED", edited)
        assert queue.pending == []
        await op.reconciler.close()

    asyncio.run(main())


def test_not_ready_until_every_cache_is_listed(catalog: catalog_.Catalog) -> None:
    op = _operator(catalog, RecordingWriter())
    assert op.readiness() == (False, "not ready: starting")
    op.following = True
    ready, said = op.readiness()
    assert not ready and said.startswith("not ready: not listed yet: GlobalIntegrationSettings")
    for cache in (*op.caches, op.platform_keys):
        cache.ready.set()
    assert op.readiness() == (True, "ok")


def test_kopf_hosts_the_process_and_follows_no_resource(catalog: catalog_.Catalog) -> None:
    registry = hosting.registry(_operator(catalog, RecordingWriter()))
    activities = sorted(h.fn.__name__ for h in registry._activities.get_all_handlers())
    assert activities == ["cleanup", "login", "startup"]
    assert registry._changing.get_all_handlers() == []  # no diff base, no progress annotations
    assert registry._spawning.get_all_handlers() == []  # no daemons/timers: no finalizers
    assert registry._webhooks.get_all_handlers() == []
    assert registry._indexing.get_all_handlers() == []  # runtime.resources instead
    assert registry._watching.get_all_handlers() == []


@pytest.mark.parametrize("lost", [True, False], ids=["lease-lost", "stopped"])
def test_a_lost_lease_stops_the_operator_cleanly(catalog: catalog_.Catalog, lost: bool) -> None:
    """LeaseLost: the host's stop flag, and no failure (exit 0: the restart stands by)."""
    from controller.cluster.runtime import leases

    stops: list[int] = []

    class Elector:
        async def keep(self) -> None:
            await asyncio.sleep(0.01)
            if lost:
                raise leases.LeaseLost("renewals refused for 10.0 s")
            await asyncio.Event().wait()

    async def main() -> None:
        op = operating.Operator(
            _operator(catalog, RecordingWriter()).options,
            catalog,
            RecordingWriter(),  # type: ignore[arg-type]
            metrics.Metrics(),
            stop=lambda: stops.append(1),
        )
        op.supervisor.start("leader lease", op._lead(Elector()))  # type: ignore[arg-type]
        await asyncio.sleep(0.1)
        assert stops == ([1] if lost else [])
        assert op.supervisor.failed is None
        await op.supervisor.stop()

    asyncio.run(main())
