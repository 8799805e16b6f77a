"""The platform keys: the Secrets in the operator's namespace, as last listed or watched
(``following.secrets_in`` keeps a ``SecretStore`` current).

Not a kopf handler (``cluster.hosting`` says why), so nothing ever copies a
key into an annotation. Values stay
base64, in memory, and are only ever compared or copied into the accounts'
credential Secrets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any, Protocol


class PlatformKeys(Protocol):
    """What reads a platform key: the reconciler (to copy it), the statuses (is it there),
    the connection checks (to send it to its provider). ``SecretStore`` is the one the operator runs."""

    def value(self, secret_name: str, key: str) -> str | None:
        """The base64 value of a platform key, or None when missing or empty."""
        ...


class SecretStore:
    """Secret name -> its data (base64 values), as last listed or watched."""

    def __init__(self) -> None:
        self._data: dict[str, dict[str, str]] = {}
        self.ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._data)

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
