"""following.follow and generated.Digests without a cluster: a scripted lister and watcher.

The same code against the real API server is covered by the drift, restart and
outage tests (tests/operator/test_lifecycle.py, tests/reliability/).
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from typing import Any

import pytest

from controller.cluster import metrics, operating, reconciling
from controller.cluster.runtime import following, generated, records
from controller.core import catalog as catalog_
from controller.core import rendering
from tests.cluster.fakes import RecordingWriter
from tests.cluster.test_reconciling import KEYS, reconciler, views_for


def configmap(namespace: str, data: dict[str, str], version: str, owner: str = "uid-0") -> Any:
    return {
        "metadata": {
            "name": rendering.CONFIGMAP_NAME,
            "namespace": namespace,
            "resourceVersion": version,
            "labels": {rendering.LABEL_MANAGED_BY: rendering.MANAGED_BY},
            "ownerReferences": [
                {"apiVersion": catalog_.API_VERSION, "kind": catalog_.ACCOUNT, "uid": owner}
            ],
        },
        "data": data,
    }


class Script:
    """A lister and a watcher replaying scripted listings and watch streams."""

    def __init__(self, listings: list[list[Any]], watches: list[list[Any]]) -> None:
        self.listings, self.watches = listings, watches
        self.watched_from: list[str] = []
        self.done = asyncio.Event()

    async def lister(self) -> tuple[list[records.Digest], str]:
        # What Client.list_named(kind, name, records.digest) returns.
        items = self.listings.pop(0)
        return [records.digest(i) for i in items], f"list-{len(self.listings)}"

    async def watcher(self, version: str) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        self.watched_from.append(version)
        if not self.watches:
            self.done.set()
            await asyncio.Event().wait()  # a quiet watch, until cancelled
        for event in self.watches.pop(0):
            if isinstance(event, Exception):
                raise event
            yield copy.deepcopy(event)


def run_follow(script: Script, store: generated.Digests) -> list[list[generated.Change]]:
    seen: list[list[generated.Change]] = []

    async def changed(changes: list[generated.Change]) -> None:
        seen.append(changes)

    async def main() -> None:
        task = asyncio.create_task(
            following.follow("test", script.lister, script.watcher, store, changed, backoff=0)
        )
        await asyncio.wait_for(script.done.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    return seen


def test_first_listing_reports_nothing_then_watch_events_do() -> None:
    store = generated.Digests("ConfigMap")
    a = configmap("a", {"x": "1"}, "5")
    script = Script(
        [[a]],
        [
            [
                ("MODIFIED", configmap("a", {"x": "2"}, "6")),
                ("BOOKMARK", {"metadata": {"resourceVersion": "9"}}),
            ]
        ],
    )
    seen = run_follow(script, store)
    assert store.ready.is_set()
    assert seen == [[("a", records.digest(configmap("a", {"x": "2"}, "6")))]]
    # The server ended the first watch: the next one resumes from the bookmark.
    assert script.watched_from == ["list-0", "9"]


def test_a_broken_watch_lists_again_and_reports_what_changed_meanwhile() -> None:
    store = generated.Digests("ConfigMap")
    a, b = configmap("a", {"x": "1"}, "5"), configmap("b", {"x": "1"}, "5")
    script = Script(
        [[a, b], [a, configmap("c", {"x": "1"}, "8")]],
        [[ConnectionError("gone")]],
    )
    seen = run_follow(script, store)
    assert seen == [[("b", None), ("c", records.digest(configmap("c", {"x": "1"}, "8")))]]
    assert sorted(store) == ["a", "c"]


def test_only_what_decides_a_rewrite_is_a_change() -> None:
    store = generated.Digests("ConfigMap")
    store.replace([records.digest(configmap("a", {"x": "1"}, "1"))])
    annotated = configmap("a", {"x": "1"}, "2")
    annotated["metadata"]["annotations"] = {"someone": "was here"}
    assert store.apply("MODIFIED", annotated) == []
    assert store.apply("MODIFIED", configmap("a", {"x": "1"}, "3", owner="other")) != []
    assert store.apply("DELETED", configmap("a", {"x": "1"}, "4")) == [("a", None)]
    assert "a" not in store


def test_echo_of_own_write_is_not_repaired_but_drift_is(catalog: catalog_.Catalog) -> None:
    views = views_for(catalog, 1)
    store = generated.Digests("ConfigMap")
    views = reconciling.Views(**{**views.__dict__, "configmaps": store})
    writer = RecordingWriter()

    async def main() -> None:
        r = reconciler(catalog, views, writer)
        store.replace([])
        store.ready.set()
        await r.account("acct-0")
        (written,) = [m for m in writer.applied if m["kind"] == "ConfigMap"]
        # The watch brings our own write back: nothing to do.
        r.generated_changed("ConfigMap", store.apply("ADDED", written))
        await asyncio.sleep(0.01)
        assert [m["kind"] for m in writer.applied].count("ConfigMap") == 1
        # Someone edits the data: repaired, once.
        edited = copy.deepcopy(written)
        edited["data"] = {k: v + " " for k, v in edited["data"].items()}
        r.generated_changed("ConfigMap", store.apply("MODIFIED", edited))
        r.generated_changed("ConfigMap", store.apply("MODIFIED", edited))
        for _ in range(20):
            await asyncio.sleep(0.01)
        repaired = [m for m in writer.applied if m["kind"] == "ConfigMap"]
        assert len(repaired) == 2 and repaired[1]["data"] == written["data"]
        await r.close()

    asyncio.run(main())


def test_no_render_before_the_workers_start(catalog: catalog_.Catalog) -> None:
    """The operator's queue starts its workers once every cache is listed (``operating``):
    keys named before then wait, once each, and are worked on at ``start``."""
    views = views_for(catalog, 2)
    writer = RecordingWriter()

    async def main() -> None:
        r = reconciling.Reconciler(catalog, writer, KEYS, views, metrics.Metrics(), autostart=False)
        for _ in range(3):
            r.request("acct-0")
        r.request("acct-1")
        await asyncio.sleep(0.05)
        assert writer.applied == [] and r.queue.pending == ["acct-0", "acct-1"]
        r.queue.start()
        await asyncio.wait_for(r.queue.drained(), 5)
        assert sorted(
            m["metadata"]["namespace"] for m in writer.applied if m["kind"] == "ConfigMap"
        ) == [
            "acct-0",
            "acct-1",
        ]
        await r.close()

    asyncio.run(main())


def test_memory_is_compacted_once_after_a_quiet_burst(monkeypatch: pytest.MonkeyPatch) -> None:
    collected: list[int] = []
    monkeypatch.setattr(operating.gc, "collect", lambda: collected.append(1) or 0)

    class Renders:
        renders = 0

    async def main() -> None:
        counter = Renders()
        task = asyncio.create_task(operating.compact_after_bursts(counter, quiet=0.02, burst=100))
        counter.renders = 50
        await asyncio.sleep(0.1)
        assert collected == []  # quiet, but no burst yet
        counter.renders = 150
        await asyncio.sleep(0.1)
        assert collected == [1]  # one burst, quiet: compacted once
        await asyncio.sleep(0.1)
        assert collected == [1]  # nothing new: not again
        task.cancel()

    asyncio.run(main())
