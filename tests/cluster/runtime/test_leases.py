"""Leader election against an in-memory Lease API with the API server's optimistic concurrency."""

from __future__ import annotations

import asyncio
import copy
import datetime
from typing import Any

import pytest

from controller.cluster.runtime import leases
from controller.cluster.runtime.clients import WriteError

NS = "settings-controller-system"


class FakeApi:
    """One Lease; create 409s when it exists, replace 409s on a stale resourceVersion."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.version = 0
        self.fail: WriteError | None = None  # raised by every call while set

    def _check(self) -> None:
        if self.fail is not None:
            raise self.fail

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        self._check()
        return copy.deepcopy(self.lease)

    async def create_lease(self, lease: dict[str, Any]) -> dict[str, Any]:
        self._check()
        if self.lease is not None:
            raise WriteError("exists", 409)
        return self._store(lease)

    async def replace_lease(self, lease: dict[str, Any]) -> dict[str, Any]:
        self._check()
        if self.lease is None:
            raise WriteError("not found", 404)
        if lease["metadata"].get("resourceVersion") != self.lease["metadata"]["resourceVersion"]:
            raise WriteError("conflict", 409)
        return self._store(lease)

    def _store(self, lease: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        stored = copy.deepcopy(lease)
        stored["metadata"]["resourceVersion"] = str(self.version)
        self.lease = stored
        return copy.deepcopy(stored)


def elector(api: FakeApi, holder: str, **kwargs: Any) -> leases.Elector:
    return leases.Elector(api, NS, holder=holder, renew=0.01, retry=0.01, **kwargs)


def test_first_creates_the_lease_and_a_second_stands_by() -> None:
    async def main() -> None:
        api = FakeApi()
        a, b = elector(api, "a"), elector(api, "b")
        await a.acquire()
        assert a.leader and api.lease is not None
        spec = api.lease["spec"]
        assert spec["holderIdentity"] == "a" and spec["leaseDurationSeconds"] == 15
        assert spec["leaseTransitions"] == 0
        assert not await b.try_acquire()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(b.acquire(), 0.1)
        assert not b.leader and api.lease["spec"]["holderIdentity"] == "a"

    asyncio.run(main())


def test_an_expired_lease_is_taken_over_and_the_old_leader_loses() -> None:
    async def main() -> None:
        api = FakeApi()
        a, b = elector(api, "a"), elector(api, "b")
        await a.acquire()
        assert api.lease is not None
        past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=16)
        api.lease["spec"]["renewTime"] = past.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        await b.acquire()
        assert api.lease["spec"]["holderIdentity"] == "b"
        assert api.lease["spec"]["leaseTransitions"] == 1
        with pytest.raises(leases.LeaseLost):
            await a.renew_once()

    asyncio.run(main())


def test_keep_stops_on_another_holder() -> None:
    async def main() -> None:
        api = FakeApi()
        changes: list[bool] = []
        a = elector(api, "a", on_change=changes.append)
        await a.acquire()
        assert api.lease is not None
        api.lease["spec"]["holderIdentity"] = "someone-else"
        api.version += 1
        api.lease["metadata"]["resourceVersion"] = str(api.version)
        with pytest.raises(leases.LeaseLost):
            await asyncio.wait_for(a.keep(), 1)
        assert changes == [True, False] and not a.leader

    asyncio.run(main())


def test_an_unreachable_api_server_does_not_end_the_lead() -> None:
    async def main() -> None:
        api = FakeApi()
        a = elector(api, "a", renew_deadline=0.02)
        await a.acquire()
        api.fail = WriteError("no response", 0)
        keeping = asyncio.create_task(a.keep())
        await asyncio.sleep(0.1)
        assert not keeping.done() and a.leader
        api.fail = WriteError("forbidden", 403)
        with pytest.raises(leases.LeaseLost):
            await asyncio.wait_for(keeping, 1)

    asyncio.run(main())


def test_release_lets_a_standby_in_at_once() -> None:
    async def main() -> None:
        api = FakeApi()
        a, b = elector(api, "a"), elector(api, "b")
        await a.acquire()
        assert not await b.try_acquire()
        await a.release()
        assert api.lease is not None and not api.lease["spec"]["holderIdentity"]
        assert await b.try_acquire()

    asyncio.run(main())


def test_a_restart_retakes_its_own_lease() -> None:
    async def main() -> None:
        api = FakeApi()
        await elector(api, "a").acquire()
        again = elector(api, "a")
        assert await again.try_acquire()
        assert api.lease is not None and api.lease["spec"]["leaseTransitions"] == 0

    asyncio.run(main())
