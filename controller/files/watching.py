"""Keeping outputs current: watchdog events, debounced, into incremental passes.

Watching starts before the first pass, so nothing changed after ``watch``
starts is missed. Three things are known to lose events and are handled:
editors that save through a rename (the rename's destination is the file),
a directory deleted and recreated (its parent is watched too, and the watch is
re-armed), and a Kubernetes ConfigMap volume, whose ``..data`` symlink swap
changes every file without an event on any visible path (anything under a
``..`` directory triggers a rescan, which re-reads files whose identity moved).
A periodic rescan backs all of this up; it costs a stat per file.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import pathlib
import threading
import time
from collections.abc import Callable

from watchdog import events, observers
from watchdog.observers.api import BaseObserver, ObservedWatch

from controller.files import loading, reconciling

log = logging.getLogger("settings_controller.watch")

# Events that say a file was read, not changed: our own reads produce them.
_IGNORED = {events.EVENT_TYPE_OPENED, events.EVENT_TYPE_CLOSED_NO_WRITE}


class _Collector(events.FileSystemEventHandler):
    """Gathers changed paths from watchdog's thread; the watch loop takes them."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.wake = threading.Event()
        self._lock = threading.Lock()
        self._changed: set[str] = set()
        self._rescan = False
        self._rewatch = False

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
                if path == self.root:
                    self._rescan = self._rewatch = True
                    continue
                rel = os.path.relpath(path, self.root)
                if rel.startswith(".." + os.sep) or rel == "..":
                    continue  # a sibling in the parent directory
                rel = rel.replace(os.sep, "/")
                if event.is_directory or any(p.startswith("..") for p in rel.split("/")):
                    self._rescan = True
                elif loading.is_declaration_file(rel):
                    self._changed.add(rel)
        self.wake.set()

    def take(self) -> tuple[set[str], bool, bool]:
        with self._lock:
            taken = (self._changed, self._rescan, self._rewatch)
            self._changed, self._rescan, self._rewatch = set(), False, False
            return taken


Callback = Callable[[reconciling.PassReport, str], None]


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
        self.collector = _Collector(self.root)
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()
        self.collector.wake.set()

    def run(self) -> None:
        observer = observers.Observer()
        observer.schedule(self.collector, os.path.dirname(self.root), recursive=False)
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

    def _step(
        self, observer: BaseObserver, root_watch: ObservedWatch | None
    ) -> ObservedWatch | None:
        woke = self.collector.wake.wait(timeout=self.resync)
        if self._stopping.is_set():
            return root_watch
        if woke:
            _settle(self.collector.wake, self.debounce, self.max_delay)
        changed, rescan, rewatch = self.collector.take()
        if rewatch or root_watch is None:
            root_watch = _rearm(observer, self.collector, self.root, root_watch)
        if not woke or rescan:
            report = self.reconciler.run()
            what = "rescan" if woke else "periodic rescan"
        elif changed:
            report = self.reconciler.run(changed)
            what = ", ".join(sorted(changed))
        else:
            return root_watch
        if woke or report.written or report.removed:
            self.on_report(report, what)
        return root_watch


def _settle(wake: threading.Event, debounce: float, max_delay: float) -> None:
    """Wait for a burst of events to go quiet (an editor's save, a git checkout)."""
    deadline = time.monotonic() + max_delay
    while time.monotonic() < deadline:
        wake.clear()
        if not wake.wait(timeout=debounce):
            return


def _arm(observer: BaseObserver, collector: _Collector, root: str) -> ObservedWatch | None:
    if not pathlib.Path(root).is_dir():
        return None
    try:
        watch: ObservedWatch = observer.schedule(collector, root, recursive=True)
        return watch
    except OSError as e:
        log.warning("cannot watch %s yet: %s", root, e)
        return None


def _rearm(
    observer: BaseObserver, collector: _Collector, root: str, current: ObservedWatch | None
) -> ObservedWatch | None:
    if current is not None:
        with contextlib.suppress(KeyError):
            observer.unschedule(current)
    return _arm(observer, collector, root)
