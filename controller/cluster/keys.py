"""The platform keys: Secrets in the operator's namespace, followed by a list and a watch.

Not a kopf handler: kopf watches a resource in every namespace or in a fixed
set, and the operator must watch its custom resources everywhere. Following
Secrets through kopf would need the right to list every Secret in the
cluster; this watch (``following``) needs it in one namespace. It is never a change-detecting
handler either, so nothing ever copies a key into an annotation. Values stay
base64, in memory, and are only ever compared or copied into the accounts'
credential Secrets.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol

from controller.cluster import following

OnChange = Callable[[frozenset[str]], Awaitable[None]]


class SecretSource(Protocol):
    async def secrets(self, namespace: str) -> tuple[list[dict[str, Any]], str]: ...

    def watch_secrets(
        self, namespace: str, resource_version: str
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]: ...


class KeyStore:
    """Secret name -> its data (base64 values), as last listed or watched."""

    def __init__(self) -> None:
        self._data: dict[str, dict[str, str]] = {}
        self.ready = asyncio.Event()

    def value(self, secret_name: str, key: str) -> str | None:
        value = self._data.get(secret_name, {}).get(key)
        return value or None  # an empty key is as good as a missing one

    def replace(self, bodies: Iterable[Mapping[str, Any]]) -> frozenset[str]:
        """Take a full listing; the names whose data changed (appeared, changed, vanished)."""
        fresh = {_name(b): _data(b) for b in bodies}
        changed = {n for n in fresh.keys() | self._data.keys() if fresh.get(n) != self._data.get(n)}
        self._data = fresh
        return frozenset(changed)

    def apply(self, event_type: str, body: Mapping[str, Any]) -> frozenset[str]:
        name = _name(body)
        before = self._data.get(name)
        if event_type == "DELETED":
            self._data.pop(name, None)
        else:
            self._data[name] = _data(body)
        return frozenset({name}) if self._data.get(name) != before else frozenset()


def _name(body: Mapping[str, Any]) -> str:
    return str((body.get("metadata") or {}).get("name", ""))


def _data(body: Mapping[str, Any]) -> dict[str, str]:
    return {str(k): str(v) for k, v in (body.get("data") or {}).items()}


async def follow(
    source: SecretSource,
    namespace: str,
    store: KeyStore,
    on_change: OnChange,
    on_error: Callable[[], None] = lambda: None,
    backoff: float = 2.0,
) -> None:
    """Keep ``store`` up to date with the Secrets in ``namespace``. Runs until cancelled."""
    await following.follow(
        f"Secrets in {namespace}",
        lambda: source.secrets(namespace),
        lambda version: source.watch_secrets(namespace, version),
        store,
        on_change,
        on_error,
        backoff,
    )
