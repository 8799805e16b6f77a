"""The work queue: keys once, backoff per key, one shared rate limit, a bounded retry storm."""

from __future__ import annotations

import asyncio
import collections
import itertools
import time

from controller.cluster import metrics
from controller.cluster.runtime import clients, queueing
from controller.core import catalog as catalog_
from tests.cluster.fakes import RecordingWriter
from tests.cluster.test_reconciling import reconciler, views_for


def test_a_key_is_queued_once_and_never_worked_on_twice_at_once() -> None:
    running: set[str] = set()
    calls: collections.Counter[str] = collections.Counter()

    async def work(key: str) -> None:
        assert key not in running
        running.add(key)
        calls[key] += 1
        await asyncio.sleep(0.01)
        running.discard(key)

    async def main() -> None:
        q = queueing.WorkQueue(work, workers=4)
        for _ in range(5):
            q.add("a")
        q.add("b")
        await asyncio.sleep(0.001)
        q.add("a")  # while "a" is being worked on: once more, after
        q.add("a")
        await q.drained()
        await q.close()

    asyncio.run(main())
    assert calls == {"a": 2, "b": 1}


def test_failures_back_off_per_key_and_success_forgets() -> None:
    backoff = queueing.Backoff(base=0.5, cap=4.0)
    assert [backoff.when("a") for _ in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert backoff.when("b") == 0.5
    backoff.forget("a")
    assert backoff.when("a") == 0.5


def test_the_bucket_admits_a_burst_then_its_rate() -> None:
    bucket = queueing.Bucket(rate=10.0, burst=5)
    waits = [bucket.reserve() for _ in range(8)]
    assert waits[:5] == [0.0] * 5
    assert [round(w, 2) for w in waits[5:]] == [0.1, 0.2, 0.3]


def test_an_outage_with_1000_accounts_queued_is_no_retry_storm(
    catalog: catalog_.Catalog,
) -> None:
    """The API server is gone (every write fails): count the requests over 6 s.

    Without a shared limit every account would retry after its own delay; with
    the bucket (rate 10/s, burst 100) the retries are bounded by
    burst + rate x seconds, whatever the number of accounts.
    """
    views = views_for(catalog, 1000)
    attempts: list[float] = []

    class Down(RecordingWriter):
        async def apply(self, manifest: object) -> None:  # type: ignore[override]
            attempts.append(time.monotonic())
            raise clients.WriteError("connection refused", 0)

    writer = Down(views)
    seconds = 6.0

    async def main() -> None:
        r = reconciler(catalog, views, writer, concurrency=16)
        r.queue.backoff = queueing.Backoff(base=0.5, cap=300.0)
        r.queue.bucket = queueing.Bucket(rate=10.0, burst=100)
        started = time.monotonic()
        for name in views.accounts:
            r.request(name)
        await asyncio.sleep(seconds)
        assert time.monotonic() - started >= seconds
        await r.close()

    asyncio.run(main())
    first_pass = 1000
    retries = len(attempts) - first_pass
    bound = 100 + 10 * seconds
    assert 0 < retries <= bound, (retries, bound)
    # After the burst is spent, the rate is the bucket's.
    late = [t for t in attempts if t - attempts[0] > seconds - 2]
    assert len(late) <= 10 * 2 + 5, len(late)


def test_a_failing_namespace_is_retried_and_counted(catalog: catalog_.Catalog) -> None:
    views = views_for(catalog, 1)
    fails = {"left": 2}

    class Flaky(RecordingWriter):
        async def apply(self, manifest: object) -> None:  # type: ignore[override]
            if fails["left"]:
                fails["left"] -= 1
                raise clients.WriteError("503", 503)
            await super().apply(manifest)  # type: ignore[arg-type]

    writer = Flaky(views)
    meter = metrics.Metrics()

    async def main() -> None:
        r = reconciler(catalog, views, writer)
        r.metrics = meter
        r.queue.backoff = queueing.Backoff(base=0.05)
        r.request("acct-0")
        await r.queue.drained()
        await r.close()

    asyncio.run(main())
    assert [m["kind"] for m in writer.applied].count("ConfigMap") == 1


def _sample(meter: metrics.Metrics, metric: str, **labels: str) -> float:
    value = meter.registry.get_sample_value(metric, labels)
    return 0.0 if value is None else value


def test_controller_runtime_series_of_the_queue() -> None:
    """workqueue_* under name=, controller_runtime_* under controller=, as client-go and
    controller-runtime name them: adds, depth, latency, work time, retries, results, the
    workers busy and for how long."""
    meter = metrics.Metrics()
    release = asyncio.Event()
    failed: set[str] = set()

    async def work(key: str) -> None:
        if key == "slow":
            await release.wait()
        if key == "bad" and key not in failed:
            failed.add(key)
            raise RuntimeError("a write failed")

    async def main() -> None:
        q = queueing.WorkQueue(
            work,
            workers=3,
            backoff=queueing.Backoff(base=0.01),
            meter=meter.queue("account", 3),
        )
        q.add("slow")
        q.add("slow")  # queued once: one add
        await asyncio.sleep(0.2)
        assert _sample(meter, "controller_runtime_active_workers", controller="account") == 1
        assert _sample(meter, "workqueue_longest_running_processor_seconds", name="account") >= 0.15
        assert _sample(meter, "workqueue_unfinished_work_seconds", name="account") >= 0.15
        q.add("bad")
        q.add("ok")
        release.set()
        await q.drained()
        assert _sample(meter, "workqueue_depth", name="account") == 0
        assert _sample(meter, "controller_runtime_active_workers", controller="account") == 0
        await q.close()

    asyncio.run(main())
    assert _sample(meter, "workqueue_adds_total", name="account") == 4  # slow, bad, ok, bad again
    assert _sample(meter, "workqueue_retries_total", name="account") == 1
    assert _sample(meter, "workqueue_queue_duration_seconds_count", name="account") == 4
    assert _sample(meter, "workqueue_work_duration_seconds_count", name="account") == 4
    assert _sample(meter, "workqueue_work_duration_seconds_sum", name="account") >= 0.15
    result = "controller_runtime_reconcile_total"
    assert _sample(meter, result, controller="account", result="success") == 3
    assert _sample(meter, result, controller="account", result="error") == 1
    assert _sample(meter, "controller_runtime_reconcile_errors_total", controller="account") == 1
    assert (
        _sample(meter, "controller_runtime_reconcile_time_seconds_count", controller="account") == 4
    )
    assert _sample(meter, "controller_runtime_max_concurrent_reconciles", controller="account") == 3


def test_rest_client_requests_and_the_lease_status() -> None:
    meter = metrics.Metrics(lease_name="my-lease")
    meter.rest_request(200, "GET", "10.0.0.1:443")
    meter.rest_request(200, "GET", "10.0.0.1:443")
    meter.rest_request(0, "PATCH", "10.0.0.1:443")
    assert (
        _sample(meter, "rest_client_requests_total", code="200", method="GET", host="10.0.0.1:443")
        == 2
    )
    assert (
        _sample(
            meter, "rest_client_requests_total", code="<error>", method="PATCH", host="10.0.0.1:443"
        )
        == 1
    )
    meter.leading(False)
    assert _sample(meter, "leader_election_master_status", name="my-lease") == 0
    assert _sample(meter, "settings_controller_leader") == 0
    meter.leading(True)
    assert _sample(meter, "leader_election_master_status", name="my-lease") == 1


def test_requeue_after_is_honoured_and_forgets_the_failures() -> None:
    """``Result(requeue_after=s)``: the key comes back after s (not sooner, not its
    backoff), its failures are forgotten; a later shorter wait wins, a longer one not."""
    meter = metrics.Metrics()
    runs: list[float] = []

    async def work(key: str) -> queueing.Result:
        runs.append(time.monotonic())
        if len(runs) == 1:
            raise RuntimeError("first try fails")
        if len(runs) < 4:
            return queueing.Result(requeue_after=0.3)
        return queueing.DONE

    async def main() -> None:
        q: queueing.WorkQueue[str] = queueing.WorkQueue(
            work, workers=2, backoff=queueing.Backoff(base=0.05), meter=meter.queue("checks", 2)
        )
        q.add("k")
        while len(runs) < 2:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.01)
        assert q.backoff.failures("k") == 0  # forgotten by the requeue_after
        assert q.waiting == 1
        await q.drained()
        await q.close()

    asyncio.run(main())
    gaps = [b - a for a, b in itertools.pairwise(runs)]
    assert len(runs) == 4
    assert 0.04 <= gaps[0] < 0.25, gaps  # the error: its backoff (0.05 s)
    assert all(0.29 <= g < 0.6 for g in gaps[1:]), gaps  # requeue_after 0.3 s, twice
    total = "controller_runtime_reconcile_total"
    assert _sample(meter, total, controller="checks", result="error") == 1
    assert _sample(meter, total, controller="checks", result="requeue_after") == 2
    assert _sample(meter, total, controller="checks", result="success") == 1
    assert _sample(meter, "controller_runtime_reconcile_errors_total", controller="checks") == 1
    assert _sample(meter, "workqueue_retries_total", name="checks") == 1  # the error only


def test_the_earliest_requeue_wins() -> None:
    runs: list[float] = []

    async def work(key: str) -> None:
        runs.append(time.monotonic())

    async def main() -> None:
        q: queueing.WorkQueue[str] = queueing.WorkQueue(work)
        started = time.monotonic()
        q.add_after("k", 5.0)
        q.add_after("k", 0.1)  # sooner: replaces the wait
        q.add_after("k", 3.0)  # later: ignored
        assert q.waiting == 1
        await asyncio.wait_for(q.drained(), 2)
        assert len(runs) == 1 and 0.09 <= runs[0] - started < 1.0
        await q.close()

    asyncio.run(main())


def test_requeue_is_rate_limited_and_errors_back_off_per_key() -> None:
    """``Result(requeue=True)`` and an error both come back after the key's backoff, which
    grows per key (0.05, 0.1, 0.2 s) and is counted as a retry; success forgets it."""
    meter = metrics.Metrics()
    runs: collections.defaultdict[str, list[float]] = collections.defaultdict(list)

    async def work(key: str) -> queueing.Result | None:
        runs[key].append(time.monotonic())
        if len(runs[key]) > 3:
            return None
        if key == "requeue":
            return queueing.Result(requeue=True)
        raise RuntimeError("write failed")

    async def main() -> None:
        q: queueing.WorkQueue[str] = queueing.WorkQueue(
            work, backoff=queueing.Backoff(base=0.05), meter=meter.queue("q", 16)
        )
        q.add("requeue")
        q.add("error")
        await asyncio.wait_for(q.drained(), 5)
        assert len(q.backoff) == 0  # both succeeded at last: forgotten
        await q.close()

    asyncio.run(main())
    for key in ("requeue", "error"):
        times = runs[key]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert len(times) == 4
        for gap, backoff in zip(gaps, (0.05, 0.1, 0.2), strict=True):
            assert backoff * 0.9 <= gap < backoff + 0.3, (key, gaps)
    total = "controller_runtime_reconcile_total"
    assert _sample(meter, total, controller="q", result="requeue") == 3
    assert _sample(meter, total, controller="q", result="error") == 3
    assert _sample(meter, total, controller="q", result="success") == 2
    assert _sample(meter, "controller_runtime_reconcile_errors_total", controller="q") == 3
    assert _sample(meter, "workqueue_retries_total", name="q") == 6


def test_keys_of_any_hashable_type() -> None:
    """The operator's queue holds namespaces, ``Unclaimed(name)`` and ``GLOBAL`` at once."""
    from controller.cluster import reconciling

    seen: list[object] = []

    async def work(key: reconciling.Key) -> None:
        seen.append(key)

    async def main() -> None:
        q: queueing.WorkQueue[reconciling.Key] = queueing.WorkQueue(work, workers=1)
        for key in (
            "ns",
            reconciling.Unclaimed("a"),
            reconciling.GLOBAL,
            reconciling.Unclaimed("a"),
        ):
            q.add(key)
        await q.drained()
        await q.close()

    asyncio.run(main())
    assert seen == ["ns", reconciling.Unclaimed("a"), reconciling.GLOBAL]
