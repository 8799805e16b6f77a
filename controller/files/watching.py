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


def watch(
    reconciler: reconciling.Reconciler,
    on_report: Callback,
    stop: threading.Event,
    *,
    debounce: float = 0.05,
    max_delay: float = 1.0,
    resync: float = 30.0,
) -> None:
    """Run passes until ``stop`` is set. ``on_report(report, what)`` hears of each pass."""
    root = os.path.abspath(reconciler.root)
    collector = _Collector(root)
    observer = observers.Observer()
    observer.schedule(collector, os.path.dirname(root), recursive=False)
    root_watch = _arm(observer, collector, root)
    observer.start()
    try:
        on_report(reconciler.run(), "start")
        while not stop.is_set():
            woke = collector.wake.wait(timeout=resync)
            if stop.is_set():
                break
            if woke:
                _settle(collector.wake, debounce, max_delay)
            changed, rescan, rewatch = collector.take()
            if rewatch or root_watch is None:
                root_watch = _rearm(observer, collector, root, root_watch)
            if not woke or rescan:
                report = reconciler.run()
                what = "rescan" if woke else "periodic rescan"
            elif changed:
                report = reconciler.run(changed)
                what = ", ".join(sorted(changed))
            else:
                continue
            if woke or report.written or report.removed:
                on_report(report, what)
    finally:
        observer.stop()
        observer.join()


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
