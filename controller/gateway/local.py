"""Local mode: declarations from a directory, identities from a token file, keys from a
directory or the environment, each followed while the gateway runs.

``--declarations DIR`` is read as ``watch`` reads it (``files.loading``), into the same
``Inventory`` that ``decisions.decide`` answers over. ``--tokens FILE`` is YAML, a mapping
``token: account-namespace``. Keys are laid out as ``test-connection`` reads them
(``DIR/<key>`` or ``DIR/<secretName>/<key>``, or ``SETTINGS_CONTROLLER_KEY_<KEY>``).

A watchdog observer wakes a scan on any change; a scan also runs every ``resync``
seconds (a stat per file), which bounds what a lost event can cost. A file read empty or
invalid never replaces what it last declared: an editor that truncates a file and then
writes it (in place, not through a rename), or a half-written file, leaves the last good
state in force until the file parses again. To remove a file's declarations, delete it.
The same holds for the token file.

The scan runs on its own thread; what it changes is swapped in under a lock that each
request holds for a dictionary lookup (the effective settings are cached per namespace
and the cache dropped at each change).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import pathlib
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import yaml
from watchdog import events, observers

from controller.core import catalog, connections, enforcement, inventory
from controller.files import loading, reading
from controller.gateway import sources

log = logging.getLogger("settings_controller.gateway")

ENV_PREFIX = "SETTINGS_CONTROLLER_KEY_"
MAX_TOKENS_FILE = 1 << 20
MAX_KEY_FILE = 64 << 10
_IGNORED = {events.EVENT_TYPE_OPENED, events.EVENT_TYPE_CLOSED_NO_WRITE}

Stamp = tuple[int, int, int, int]


def env_name(key: str) -> str:
    """``SETTINGS_CONTROLLER_KEY_<KEY>``, as ``test-connection --keys-from-env`` reads it."""
    return ENV_PREFIX + "".join(c if c.isalnum() else "_" for c in key).upper()


def _digest(token: str) -> bytes:
    # Looked up by digest: the time a lookup takes says nothing about the token's prefix.
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


def _stamp(path: str) -> Stamp | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _shown(text: str) -> str:
    """A file name as one printable log line (a newline in a name cannot forge a second)."""
    return text if text.isprintable() else text.encode("unicode_escape").decode()


def parse_tokens(text: str) -> dict[bytes, str] | None:
    """``token: namespace`` pairs (by the token's digest), or None when the text is not a
    non-empty mapping of non-empty strings."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    if not isinstance(data, dict) or not data:
        return None
    out = {}
    for token, namespace in data.items():
        if not isinstance(token, str) or not isinstance(namespace, str):
            return None
        if not token.strip() or not namespace.strip():
            return None
        out[_digest(token.strip())] = namespace.strip()
    return out


class _Waker(events.FileSystemEventHandler):
    def __init__(self, wake: threading.Event) -> None:
        self.wake = wake

    def on_any_event(self, event: events.FileSystemEvent) -> None:
        if event.event_type not in _IGNORED:
            self.wake.set()


class LocalSource:
    """``sources.Source`` over files (see the module docstring)."""

    def __init__(
        self,
        cat: catalog.Catalog,
        declarations_dir: pathlib.Path,
        tokens_file: pathlib.Path,
        keys_dir: pathlib.Path | None,
        *,
        environ: Mapping[str, str] | None = None,
        resync: float = 1.0,
        debounce: float = 0.02,
    ) -> None:
        self.catalog = cat
        self.root = declarations_dir
        self.tokens_file = tokens_file
        self.keys_dir = keys_dir
        self.environ = dict(environ if environ is not None else os.environ)
        self.resync, self.debounce = resync, debounce
        self._lock = threading.Lock()
        self._inventory = inventory.Inventory()
        self._stamps: dict[str, Stamp | None] = {}  # declaration files, tokens, keys: as read
        self._tokens: dict[bytes, str] = {}
        self._credentials: dict[tuple[str, str], sources.Credential] = {}
        self._secrets: tuple[str, ...] = ()
        self._cache: dict[str, sources.Settings | enforcement.Refusal] = {}
        self.generation = 0  # bumped at every change that was applied
        self.kept: dict[str, str] = {}  # files whose last good state is kept, and why
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._observer: Any = None

    # --- sources.Source -------------------------------------------------------------

    async def authenticate(self, token: str) -> str | enforcement.Refusal:
        namespace = self._tokens.get(_digest(token))
        if namespace is None:
            return enforcement.Refusal(
                401, "invalid_token", "the bearer token is not one this gateway knows"
            )
        return namespace

    def settings(self, namespace: str) -> sources.Settings | enforcement.Refusal:
        with self._lock:
            hit = self._cache.get(namespace)
            if hit is None:
                hit = self._cache[namespace] = self._settings(namespace)
            return hit

    def _settings(self, namespace: str) -> sources.Settings | enforcement.Refusal:
        inv = self._inventory
        return sources.settings_of(self.catalog, namespace, inv.decide(namespace), inv.global_)

    def credential(self, integration: str, slot: str) -> sources.Credential | None:
        return self._credentials.get((integration, slot))

    def secrets(self) -> Sequence[str]:
        return self._secrets

    # --- following the files ----------------------------------------------------------

    def load(self) -> None:
        """One scan, now (before serving, and from the watch thread)."""
        declared = self._scan_declarations()
        tokens = self._scan_tokens()
        with self._lock:
            for rel, decls in declared.items():
                self._inventory.replace(rel, decls)
            if tokens is not None:
                self._tokens = tokens
            credentials = self._read_keys()
            changed = bool(declared) or tokens is not None or credentials != self._credentials
            if changed:
                self._credentials = credentials
                self._secrets = tuple(sorted({c.key for c in credentials.values()}))
                self._cache.clear()
                self.generation += 1

    def _scan_declarations(self) -> dict[str, tuple[Any, ...]]:
        """The declaration files that changed and parse, with what they declare (nothing for
        a file gone); a file read empty or invalid is left out (its last good state stays)."""
        root = str(self.root)
        if not os.path.isdir(root):
            return {}  # a directory being replaced is not "everything deleted"
        listed = loading.discover(self.root)
        reader = reading.Reader()
        changed: dict[str, tuple[Any, ...]] = {}
        for rel in listed:
            key = "declarations/" + rel
            stamp = _stamp(os.path.join(root, rel))
            if stamp is None or stamp == self._stamps.get(key):
                continue
            self._stamps[key] = stamp
            loaded = loading.load_file(self.catalog, self.root, rel, root, reader)
            if not loaded.ok or not loaded.declarations:
                why = loaded.errors[0].message if loaded.errors else "no declarations (empty)"
                if self.kept.get(rel) != why:
                    log.warning("%s: %s; its last good state is kept", _shown(rel), why)
                self.kept[rel] = why
                continue
            self.kept.pop(rel, None)
            changed[rel] = loaded.declarations
        present = {"declarations/" + rel for rel in listed}
        for key in [k for k in self._stamps if k.startswith("declarations/") and k not in present]:
            del self._stamps[key]
            rel = key.removeprefix("declarations/")
            self.kept.pop(rel, None)
            changed[rel] = ()
        return changed

    def _scan_tokens(self) -> dict[bytes, str] | None:
        path = str(self.tokens_file)
        stamp = _stamp(path)
        if stamp is None or stamp == self._stamps.get("tokens"):
            return None
        self._stamps["tokens"] = stamp
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_TOKENS_FILE + 1)
        except OSError:
            return None
        parsed = None
        if len(data) <= MAX_TOKENS_FILE:
            with contextlib.suppress(UnicodeDecodeError):
                parsed = parse_tokens(data.decode("utf-8"))
        if parsed is None:
            log.warning(
                "%s: not a non-empty mapping token: namespace; the last good tokens are kept",
                self.tokens_file.name,
            )
        return parsed

    def _read_keys(self) -> dict[tuple[str, str], sources.Credential]:
        global_ = self._inventory.global_
        if global_ is None:
            return {}
        found = {}
        for target in connections.targets(self.catalog, global_):
            key = self._key(target)
            if key:
                found[(target.integration, target.slot)] = sources.Credential(target.endpoint, key)
        return found

    def _key(self, target: connections.Target) -> str | None:
        if self.keys_dir is None:
            return self.environ.get(env_name(target.key), "").strip() or None
        for path in (self.keys_dir / target.secret_name / target.key, self.keys_dir / target.key):
            try:
                with open(path, "rb") as f:
                    data = f.read(MAX_KEY_FILE + 1)
            except OSError:
                continue
            if len(data) > MAX_KEY_FILE:
                continue
            return data.decode("utf-8", "replace").strip() or None
        return None

    def start(self) -> None:
        """Load, then follow the files on a thread until ``stop``."""
        self.load()
        observer = observers.Observer()
        waker = _Waker(self._wake)
        places = [(str(self.root), True), (str(self.tokens_file.parent), False)]
        if self.keys_dir is not None:
            places.append((str(self.keys_dir), True))
        for place, recursive in places:
            with contextlib.suppress(OSError):
                observer.schedule(waker, place, recursive=recursive)
        observer.start()
        self._observer = observer
        self._thread = threading.Thread(target=self._follow, name="gateway-files", daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        while not self._stopping.is_set():
            if self._wake.wait(timeout=self.resync):
                # A burst of events (an editor's save, a checkout): wait for it to go quiet.
                for _ in range(10):
                    self._wake.clear()
                    if not self._wake.wait(timeout=self.debounce):
                        break
            self._wake.clear()
            if self._stopping.is_set():
                return
            try:
                self.load()
            except Exception:  # a scan that fails keeps the last state; the next one retries
                log.exception("scan failed; the last good state is kept")

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(5)
        if self._thread is not None:
            self._thread.join(5)
