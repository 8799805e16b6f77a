"""Keeping outputs current: watchdog events, debounced, into incremental passes.

Watching starts before the first pass, so nothing changed after ``watch``
starts is missed. Three things are known to lose events and are handled:
editors that save through a rename (the rename's destination is the file),
a directory deleted and recreated, or swapped as a whole (git-sync's ``repo ->
rev`` symlink, which may be DIR or any directory above it: the parent of DIR
and of each such symlink is watched too, and the watch is re-armed on the new
target), and a Kubernetes ConfigMap volume, whose ``..data`` symlink swap
changes every file without an event on any visible path (anything under a
``..`` directory triggers a rescan, which re-reads files whose identity moved),
as does a new symlink to a directory (``discover`` may enter it).
A periodic rescan backs all of this up; it costs a stat per file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import os
import pathlib
import threading
import time
from collections.abc import Callable

from watchdog import events, observers
from watchdog.observers.api import BaseObserver, ObservedWatch

from controller.files import loading, reconciling, reports

log = logging.getLogger("settings_controller.watch")

# Events that say a file was read, not changed: our own reads produce them.
_IGNORED = {events.EVENT_TYPE_OPENED, events.EVENT_TYPE_CLOSED_NO_WRITE}


class _Collector(events.FileSystemEventHandler):
    """Gathers changed paths from watchdog's thread; the watch loop takes them."""

    def __init__(self, root: str, out: str | None = None) -> None:
        self.root = root
        self.out = out
        self.wake = threading.Event()
        self._lock = threading.Lock()
        self._changed: set[str] = set()
        self._rescan = False
        self._rewatch = False
        # Where DIR's events come from (its real path: inotify follows no link), and the
        # real places (DIR itself, each symlink on its path) whose change moves DIR.
        self._real = root
        self._moves: frozenset[str] = frozenset({root})
        self._outputs = self._inside(root)

    def _inside(self, real: str) -> tuple[str, ...]:
        """OUT relative to DIR's real path, when OUT lies inside it (events there are ours)."""
        if self.out is None:
            return ()
        rel = os.path.relpath(os.path.realpath(self.out), real)
        if rel == ".." or rel.startswith(".." + os.sep):
            return ()
        return (rel.replace(os.sep, "/"),)

    def aim(self, real: str, moves: frozenset[str]) -> None:
        with self._lock:
            self._real, self._moves, self._outputs = real, moves, self._inside(real)

    def on_any_event(self, event: events.FileSystemEvent) -> None:
        if event.event_type in _IGNORED:
            return
        if event.is_directory and event.event_type == events.EVENT_TYPE_MODIFIED:
            return  # "its entries changed": the entries' own events say which
        paths = [event.src_path, getattr(event, "dest_path", "")]
        with self._lock:
            for raw in paths:
                path = os.fsdecode(raw)
                if not path:
                    continue
                if path == self._real or path in self._moves:
                    self._rescan = self._rewatch = True
                    continue
                rel = os.path.relpath(path, self._real)
                if rel.startswith(".." + os.sep) or rel == "..":
                    continue  # a sibling in the parent directory
                rel = rel.replace(os.sep, "/")
                if any(rel == o or rel.startswith(o + "/") for o in self._outputs):
                    continue  # the pass's own writes into OUT inside DIR: not declarations
                if event.is_directory or any(p.startswith("..") for p in rel.split("/")):
                    self._rescan = True
                elif loading.is_declaration_file(rel):
                    self._changed.add(rel)
                elif os.path.islink(path) and os.path.isdir(path):
                    # A symlinked directory appeared (inotify does not call it one):
                    # ``discover`` enters it when it stays inside the directory.
                    self._rescan = True
        self.wake.set()

    def take(self) -> tuple[set[str], bool, bool]:
        with self._lock:
            taken = (self._changed, self._rescan, self._rewatch)
            self._changed, self._rescan, self._rewatch = set(), False, False
            return taken


Callback = Callable[[reports.PassReport, str], None]


class Watch:
    """A running watch: ``run()`` blocks until ``stop()`` (safe from a signal handler)."""

    def __init__(
        self,
        reconciler: reconciling.Reconciler,
        on_report: Callback,
        *,
        debounce: float = 0.02,
        max_delay: float = 1.0,
        resync: float = 30.0,
    ) -> None:
        self.reconciler = reconciler
        self.on_report = on_report
        self.debounce, self.max_delay, self.resync = debounce, max_delay, resync
        self.root = os.path.abspath(reconciler.root)
        out = reconciler.out.root if reconciler.out is not None else None
        self.collector = _Collector(self.root, os.path.abspath(out) if out is not None else None)
        self._stopping = threading.Event()
        self._last_pass = time.monotonic()

    def stop(self) -> None:
        self._stopping.set()
        self.collector.wake.set()

    def run(self) -> None:
        observer = observers.Observer()
        root_watch = _arm(observer, self.collector, self.root)
        observer.start()
        try:
            # Watching started first: a change made during this pass is not missed.
            self.on_report(self.reconciler.run(), "start")
            while not self._stopping.is_set():
                # What a pass keeps (parsed declarations, results) lives long:
                # moving it out of the collector's sight keeps a full GC from
                # walking 100,000 accounts in the middle of a one-file change.
                gc.freeze()
                root_watch = self._step(observer, root_watch)
        finally:
            observer.stop()
            observer.join()

    def _step(self, observer: BaseObserver, root_watch: _Armed) -> _Armed:
        # While DIR is gone, its return is also looked for every _MISSING_POLL seconds (one
        # stat): the parent's event for it can come before the watches are re-armed, or not
        # at all, and a late event of the old DIR may re-arm on the new one with no pass.
        timeout = self.resync if root_watch.armed else min(self.resync, _MISSING_POLL)
        woke = self.collector.wake.wait(timeout=timeout)
        if self._stopping.is_set():
            return root_watch
        if (
            not woke
            and not root_watch.armed
            and time.monotonic() - self._last_pass < self.resync
            and not os.path.isdir(self.root)
        ):
            return root_watch  # still gone, and said so: look again soon
        if woke:
            _settle(self.collector.wake, self.debounce, self.max_delay)
        changed, rescan, rewatch = self.collector.take()
        back = False
        if rewatch or not root_watch.armed:
            was_armed = root_watch.armed
            root_watch = _rearm(observer, self.collector, self.root, root_watch)
            # DIR (re)appeared: files made before its watch was armed have had no event.
            back = root_watch.armed and not was_armed
        self._last_pass = time.monotonic()
        if back or rescan or not woke:
            report = self.reconciler.run()
            what = "rescan" if woke or back else "periodic rescan"
        elif changed:
            report = self.reconciler.run(changed)
            what = ", ".join(sorted(changed))
        else:
            return root_watch
        if woke or back or report.written or report.removed:
            self.on_report(report, what)
        return root_watch


def _settle(wake: threading.Event, debounce: float, max_delay: float) -> None:
    """Wait for a burst of events to go quiet (an editor's save, a git checkout)."""
    deadline = time.monotonic() + max_delay
    while time.monotonic() < deadline:
        wake.clear()
        if not wake.wait(timeout=debounce):
            return


@dataclasses.dataclass(frozen=True)
class _Armed:
    watches: tuple[ObservedWatch, ...]
    armed: bool  # DIR itself is watched (else retried at every wake-up)


def _arm(observer: BaseObserver, collector: _Collector, root: str) -> _Armed:
    real = os.path.realpath(root)
    moves = _moves(root)
    collector.aim(real, moves)
    watches = []
    for parent in sorted({os.path.dirname(place) for place in moves}):
        with contextlib.suppress(OSError):  # a parent gone too: DIR's own watch says so
            watches.append(observer.schedule(collector, parent, recursive=False))
    if not pathlib.Path(real).is_dir():
        return _Armed(tuple(watches), False)
    try:
        watches.append(observer.schedule(collector, real, recursive=True))
        return _Armed(tuple(watches), True)
    except OSError as e:
        log.warning("cannot watch %s yet: %s", root, e)
        return _Armed(tuple(watches), False)


def _rearm(observer: BaseObserver, collector: _Collector, root: str, current: _Armed) -> _Armed:
    for watch in current.watches:
        with contextlib.suppress(KeyError):
            observer.unschedule(watch)
    return _arm(observer, collector, root)


def _moves(root: str) -> frozenset[str]:
    """The real paths whose creation, removal or replacement moves DIR: DIR itself, and each
    symlink met while resolving it (git-sync swaps ``repo``; DIR may be ``repo/config``),
    those in link targets included. A link loop stops the walk (the path does not resolve)."""
    places = {os.path.join(os.path.realpath(os.path.dirname(root)), os.path.basename(root))}
    pending, hops = [os.path.abspath(root)], 0
    while pending and hops < _MAX_HOPS:
        current = "/"
        for name in pending.pop().split("/"):
            if not name:
                continue
            candidate = os.path.join(current, name)
            if os.path.islink(candidate):
                hops += 1
                places.add(candidate)
                with contextlib.suppress(OSError):
                    pending.append(os.path.normpath(os.path.join(current, os.readlink(candidate))))
                current = os.path.realpath(candidate)
            else:
                current = candidate
    return frozenset(places)


_MISSING_POLL = 0.25  # seconds between looks for a deleted DIR's return
_MAX_HOPS = 40  # as the kernel's own limit on links followed in one path
