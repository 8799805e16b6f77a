"""Events aggregated and rate-limited per object, as client-go's event correlator does.

Pure (the clock is passed in): ``Client.post_event`` asks ``correlate`` what to
write for each Event it is given, whoever posts it (statuses, connection checks).
client-go's ``tools/record/events_cache.go``, the same three steps in the same
order, with its defaults:

1. **Aggregate**: similar events (same object, type and reason) with more than
   ``MAX_SIMILAR`` distinct messages within ``SIMILAR_WINDOW`` become one Event,
   message ``(combined from similar events): <the latest>``, counted.
2. **Deduplicate**: an event seen before (same object, type, reason, message)
   increments the ``count`` of its Event object (a patch) instead of creating
   another.
3. **Rate-limit**: a token bucket per object, ``BURST`` writes then one every
   ``REFILL_SECONDS``; a write without a token is dropped, but its occurrence
   is kept in the count, so the next write of that Event carries it.

Everything is remembered in bounded LRU maps (``CACHE_SIZE`` entries each): a
tenant creating objects in a loop cannot grow the operator's memory.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Hashable, Mapping
from typing import Any, Generic, TypeVar

BURST = 25  # client-go: defaultSpamBurst
REFILL_SECONDS = 300.0  # client-go: defaultSpamQPS = 1/300
MAX_SIMILAR = 10  # client-go: defaultAggregateMaxEvents
SIMILAR_WINDOW = 600.0  # client-go: defaultAggregateIntervalInSeconds
CACHE_SIZE = 4096  # client-go: maxLruCacheEntries
COMBINED = "(combined from similar events): "

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _Lru(Generic[K, V]):
    def __init__(self, size: int) -> None:
        self.size = size
        self._items: collections.OrderedDict[K, V] = collections.OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


@dataclasses.dataclass(frozen=True)
class Write:
    """What to write for one event: create Event ``name``, or patch its count and message."""

    namespace: str
    name: str
    message: str
    count: int
    first: float  # when this Event's first occurrence was seen (Unix time)
    create: bool


@dataclasses.dataclass
class _Event:
    name: str
    count: int
    first: float
    created: bool = False


@dataclasses.dataclass
class _Similar:
    last: float  # the latest similar event
    messages: set[str]


@dataclasses.dataclass
class _Bucket:
    tokens: float
    at: float


ObjectKey = tuple[str, str, str, str]  # kind, namespace, name, uid


def object_key(involved: Mapping[str, Any]) -> ObjectKey:
    return (
        str(involved.get("kind", "")),
        str(involved.get("namespace") or ""),
        str(involved.get("name", "")),
        str(involved.get("uid", "")),
    )


class Correlator:
    def __init__(
        self,
        burst: int = BURST,
        refill: float = REFILL_SECONDS,
        max_similar: int = MAX_SIMILAR,
        window: float = SIMILAR_WINDOW,
        size: int = CACHE_SIZE,
    ) -> None:
        self.burst, self.refill = burst, refill
        self.max_similar, self.window = max_similar, window
        self._similar: _Lru[tuple[ObjectKey, str, str], _Similar] = _Lru(size)
        self._events: _Lru[tuple[ObjectKey, str, str, str], _Event] = _Lru(size)
        self._buckets: _Lru[ObjectKey, _Bucket] = _Lru(size)
        self.suppressed = 0  # occurrences not written (no token)

    def correlate(
        self, involved: Mapping[str, Any], type_: str, reason: str, message: str, now: float
    ) -> Write | None:
        """What to write for this occurrence; None when the object's bucket is empty."""
        obj = object_key(involved)
        # 1. Aggregate: once MAX_SIMILAR distinct messages were seen without a quiet
        # SIMILAR_WINDOW between them, one combined Event (events_cache.go's
        # EventAggregate: the set never grows past the limit).
        similar = self._similar.get((obj, type_, reason))
        if similar is None or now - similar.last > self.window:
            similar = _Similar(now, set())
        similar.messages.add(message)
        similar.last = now
        combined = len(similar.messages) >= self.max_similar
        if combined:
            similar.messages.pop()
        self._similar.put((obj, type_, reason), similar)
        key = (obj, type_, reason, "" if combined else message)
        shown = COMBINED + message if combined else message
        # 2. Deduplicate: the same event counts on the Event object it created.
        event = self._events.get(key)
        if event is None:
            event = _Event(_event_name(obj[2], now), 0, now)
        event.count += 1
        self._events.put(key, event)
        # 3. Rate-limit, per object; the occurrence is counted either way.
        if not self._take(obj, now):
            self.suppressed += 1
            return None
        create, event.created = not event.created, True
        return Write(obj[1] or "default", event.name, shown, event.count, event.first, create)

    def _take(self, obj: ObjectKey, now: float) -> bool:
        bucket = self._buckets.get(obj)
        if bucket is None:
            bucket = _Bucket(float(self.burst), now)
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.at) / self.refill)
        bucket.at = now
        self._buckets.put(obj, bucket)
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True

    def __len__(self) -> int:
        """Entries remembered (for the tests that bound its memory)."""
        return len(self._similar) + len(self._events) + len(self._buckets)


def _event_name(involved_name: str, now: float) -> str:
    """client-go's ``<name>.<unix nanoseconds in hex>``, short enough for any object name."""
    return f"{involved_name[:200]}.{int(now * 1e9):x}"
