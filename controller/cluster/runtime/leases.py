"""Leader election: one coordination.k8s.io/v1 Lease, so a second replica stands by.

The replica holding the Lease named ``settings-controller`` in the operator's
namespace is the leader; any other replica waits in kopf's startup handler
(kopf starts no watch before startup handlers finish), so it neither watches
nor writes. Acquire: create the Lease, or take it over with an update under
its resourceVersion (optimistic concurrency) when it is ours or has expired
(renewTime + leaseDurationSeconds in the past). The leader renews every
RENEW seconds; when a renewal shows someone else holds the Lease, or every
renewal for RENEW_DEADLINE seconds was refused, it has lost the lead and must
stop (an unreachable API server is waited out: see
``Elector.keep``). On a graceful stop it releases the Lease (no holder,
renewTime in the past) so a standby takes over at its next try instead of
after the duration.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from typing import Any, Protocol

from controller.cluster.runtime.clients import WriteError

log = logging.getLogger(__name__)

NAME = "settings-controller"  # --leader-election-id
DURATION = 15  # leaseDurationSeconds (--leader-elect-lease-duration)
RENEW = 5.0  # seconds between renewals by the leader (at most half the renew deadline)
RENEW_DEADLINE = 10.0  # renewals refused for this long: the lead is lost (< DURATION)
RETRY = 2.0  # seconds between acquisition tries by a standby (< RENEW_DEADLINE)


def check_timings(duration: float, renew_deadline: float, retry: float) -> None:
    """client-go's rule: retry period < renew deadline < lease duration; ValueError if not."""
    if duration < 1 or duration != int(duration):
        raise ValueError(f"the lease duration ({duration:g}s) must be a whole number of seconds")
    if not 0 < renew_deadline < duration:
        raise ValueError(
            f"the renew deadline ({renew_deadline:g}s) must be shorter than the lease duration "
            f"({duration:g}s)"
        )
    if not 0 < retry < renew_deadline:
        raise ValueError(
            f"the retry period ({retry:g}s) must be shorter than the renew deadline "
            f"({renew_deadline:g}s)"
        )


class LeaseApi(Protocol):
    """What this module needs from ``clients.Client``: the seam to fake in tests."""

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def create_lease(self, lease: dict[str, Any]) -> dict[str, Any]: ...

    async def replace_lease(self, lease: dict[str, Any]) -> dict[str, Any]: ...


def identity() -> str:
    """hostname_pid_suffix: unique per process, readable in ``kubectl get lease -o yaml``."""
    return f"{socket.gethostname()}_{os.getpid()}_{secrets.token_hex(3)}"


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _micro(t: datetime.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(value: Any) -> datetime.datetime | None:
    if not value:
        return None
    if isinstance(value, datetime.datetime):
        return value if value.tzinfo else value.replace(tzinfo=datetime.UTC)
    text = str(value).replace("Z", "+00:00")
    try:
        parsed = datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)


def expired(spec: dict[str, Any], now: datetime.datetime) -> bool:
    """No holder, or renewTime + leaseDurationSeconds before ``now``."""
    if not spec.get("holderIdentity"):
        return True
    renewed = _parse(spec.get("renewTime")) or _parse(spec.get("acquireTime"))
    if renewed is None:
        return True
    duration = int(spec.get("leaseDurationSeconds") or DURATION)
    return renewed + datetime.timedelta(seconds=duration) < now


class LeaseLost(Exception):
    """Someone else holds the Lease, or it could not be renewed in time."""


class Elector:
    """Acquire, renew and release the Lease for one process."""

    def __init__(
        self,
        api: LeaseApi,
        namespace: str,
        *,
        name: str = NAME,
        holder: str | None = None,
        duration: int = DURATION,
        renew: float = RENEW,
        renew_deadline: float = RENEW_DEADLINE,
        retry: float = RETRY,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.name = name
        self.holder = holder or identity()
        self.duration = duration
        self.renew_interval = renew
        self.renew_deadline = renew_deadline
        self.retry = retry
        self.leader = False
        # The last acquisition try got the API server's answer (the Lease is ours or
        # someone else's): a standby that can tell is ready; one that cannot is not.
        self.answered = False
        self._last_warning = ""
        self._on_change = on_change
        self._lease: dict[str, Any] | None = None
        self._renewed = 0.0  # time.monotonic() of the last successful acquire/renew

    def _set(self, leader: bool) -> None:
        self.leader = leader
        if self._on_change is not None:
            self._on_change(leader)

    def _spec(self, now: datetime.datetime, acquired: bool, transitions: int) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "holderIdentity": self.holder,
            "leaseDurationSeconds": self.duration,
            "renewTime": _micro(now),
            "leaseTransitions": transitions,
        }
        if acquired:
            spec["acquireTime"] = _micro(now)
        return spec

    async def try_acquire(self) -> bool:
        """One attempt: True if we hold the Lease now. API errors count as False."""
        now = _now()
        try:
            current = await self.api.get_lease(self.namespace, self.name)
            if current is None:
                self._lease = await self.api.create_lease(
                    {
                        "apiVersion": "coordination.k8s.io/v1",
                        "kind": "Lease",
                        "metadata": {"name": self.name, "namespace": self.namespace},
                        "spec": self._spec(now, True, 0),
                    }
                )
            else:
                spec = current.get("spec") or {}
                ours = spec.get("holderIdentity") == self.holder
                if not ours and not expired(spec, now):
                    self.answered, self._last_warning = True, ""
                    return False
                transitions = int(spec.get("leaseTransitions") or 0) + (0 if ours else 1)
                body = {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {
                        "name": self.name,
                        "namespace": self.namespace,
                        "resourceVersion": current["metadata"]["resourceVersion"],
                    },
                    "spec": {**spec, **self._spec(now, not ours, transitions)},
                }
                self._lease = await self.api.replace_lease(body)
        except WriteError as e:
            self.answered = e.status != 0
            # 409: another replica was first; not worth a warning. The same failure
            # again (an API server down for an hour) is not repeated every RETRY s.
            if e.status != 409 and str(e) != self._last_warning:
                log.warning("could not acquire the lease %s/%s: %s", self.namespace, self.name, e)
            self._last_warning = str(e) if e.status != 409 else ""
            return False
        self.answered = True
        self._last_warning = ""
        self._renewed = time.monotonic()
        return True

    async def acquire(self) -> None:
        """Wait until we hold the Lease; log once that we stand by, once that we lead."""
        waiting_logged = False
        while not await self.try_acquire():
            # Unanswered: try_acquire's warning said why; standing by is for a held Lease.
            if not waiting_logged and self.answered:
                holder = await self._holder()
                log.info(
                    "standing by: the lease %s/%s is held by %s; retrying every %.0f s",
                    self.namespace,
                    self.name,
                    holder,
                    self.retry,
                )
                waiting_logged = True
            await asyncio.sleep(self.retry)
        self._set(True)
        log.info("leader: acquired the lease %s/%s as %s", self.namespace, self.name, self.holder)

    async def _holder(self) -> str:
        try:
            current = await self.api.get_lease(self.namespace, self.name)
        except Exception:
            return "(unknown)"
        return str(((current or {}).get("spec") or {}).get("holderIdentity") or "(nobody)")

    async def renew_once(self) -> None:
        """Renew under the resourceVersion we last saw; LeaseLost if someone else has it."""
        lease = self._lease
        if lease is None:
            raise LeaseLost("not acquired")
        spec = dict(lease.get("spec") or {})
        spec["renewTime"] = _micro(_now())
        body = {**lease, "spec": spec}
        try:
            self._lease = await self.api.replace_lease(body)
        except WriteError as e:
            if e.status == 404:
                raise LeaseLost("the lease was deleted") from e
            if e.status != 409:
                raise
            # Changed since we wrote it: still ours only if nobody else took it.
            current = await self.api.get_lease(self.namespace, self.name)
            holder = ((current or {}).get("spec") or {}).get("holderIdentity")
            if current is None or holder != self.holder:
                raise LeaseLost(f"the lease is now held by {holder or 'nobody'}") from e
            self._lease = current
            spec = dict(current.get("spec") or {})
            spec["renewTime"] = _micro(_now())
            self._lease = await self.api.replace_lease({**current, "spec": spec})
        self._renewed = time.monotonic()

    async def keep(self) -> None:
        """Renew every RENEW s until cancelled; raises LeaseLost when the lead is lost.

        Lost: the Lease shows another holder (or was deleted), or every renewal
        for RENEW_DEADLINE s was refused (403 and the like). An API server
        that cannot be reached (no response, 429, 5xx) is not a loss by itself:
        no replica can write through it either, and stopping would turn every
        control-plane outage into a restart; nor is a refusal right after it
        comes back (its authorizer answers 403 until it has synced). Renewals
        are retried every RETRY s meanwhile; the first one through tells
        whether the Lease is still ours (its resourceVersion unchanged).
        """
        delay = self.renew_interval
        refused_since: float | None = None  # first of an unbroken run of refusals
        while True:
            await asyncio.sleep(delay)
            try:
                await self.renew_once()
                delay, refused_since = self.renew_interval, None
            except LeaseLost:
                self._set(False)
                raise
            except Exception as e:
                delay = self.retry
                now = time.monotonic()
                log.warning(
                    "could not renew the lease (last renewed %.1f s ago): %s",
                    now - self._renewed,
                    e,
                )
                status = e.status if isinstance(e, WriteError) else 0
                if status == 0 or status == 429 or status >= 500:
                    refused_since = None
                    continue
                refused_since = now if refused_since is None else refused_since
                if now - refused_since >= self.renew_deadline:
                    self._set(False)
                    raise LeaseLost(f"renewals refused for {now - refused_since:.1f} s: {e}") from e

    async def release(self) -> None:
        """Give the Lease up (renewTime in the past, no holder) if we hold it; best effort."""
        if not self.leader or self._lease is None:
            return
        self._set(False)
        spec = dict(self._lease.get("spec") or {})
        past = _now() - datetime.timedelta(seconds=2 * self.duration)
        spec.update(holderIdentity=None, renewTime=_micro(past), acquireTime=_micro(past))
        try:
            await self.api.replace_lease({**self._lease, "spec": spec})
        except Exception as e:
            log.warning("could not release the lease %s/%s: %s", self.namespace, self.name, e)
            return
        log.info("released the lease %s/%s", self.namespace, self.name)
