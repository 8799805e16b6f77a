"""The output directory: atomic writes, and a record of what was written from which files.

Layout under ``OUT``::

    OUT/<namespace>/integration-settings.yaml   the ConfigMap manifest
    OUT/<namespace>/<type>.json                 one per integration
    OUT/.settings-controller/state.sqlite       what this module remembers
    OUT/.settings-controller/writer.<pid>       a writer is (or was, if it died) at work

The record lets a later pass keep an account's last good output when a file
that fed it stops parsing, skip rewriting unchanged accounts, and remove the
outputs of accounts that are gone.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import json
import os
import pathlib
import re
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from controller.core import errors, rendering

STATE_DIR = ".settings-controller"
STATE_FILE = "state.sqlite"
STATE_VERSION = 2
WRITER_MARK = "writer."
MANIFEST = f"{rendering.CONFIGMAP_NAME}.yaml"

# Outputs are read by workloads and written only by the controller.
FILE_MODE = 0o644
DIR_MODE = 0o755

_Dumper = yaml.CSafeDumper if yaml.__with_libyaml__ else yaml.SafeDumper


class OutputError(errors.SettingsError):
    """An output could not be written; the previous file is still in place."""

    def __init__(self, path: pathlib.Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


@dataclasses.dataclass
class Record:
    account: str
    sources: list[str]  # declaration files that produced this output
    files: dict[str, str]  # file name -> content hash


class _BlockStyleDumper(_Dumper):  # type: ignore[valid-type, misc]
    """Multi-line strings (the JSON documents) as literal blocks, readable in a manifest."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockStyleDumper.add_representer(str, _represent_str)


# Printable ASCII lines; anything else goes through the YAML library.
_PLAIN_BLOCK = re.compile(r"[!-~][ -~]*(\n[ -~]*)*\n\Z")


_PLAIN_SCALAR = re.compile(r"[A-Za-z][A-Za-z0-9._/-]*")
_YAML11_WORDS = frozenset({"y", "n", "yes", "no", "on", "off", "true", "false", "null"})


def _scalar(text: str) -> str:
    """Plain when YAML reads it back as the same string, else double-quoted."""
    if _PLAIN_SCALAR.fullmatch(text) and text.lower() not in _YAML11_WORDS:
        return text
    return json.dumps(text)


def manifest_yaml(manifest: Mapping[str, Any]) -> str:
    """The ConfigMap as YAML, the ``data`` values as literal blocks.

    The manifest has one fixed shape, so it is laid out directly: the library's
    pure-Python representer cost more than everything else in a cold pass of
    100,000 accounts. Scalars are JSON strings (valid YAML); the test suite
    checks that the result loads back to ``manifest``. Content the layout
    cannot hold verbatim falls back to the library.
    """
    meta, data = manifest["metadata"], manifest["data"]
    if not all(_PLAIN_BLOCK.match(value) for value in data.values()):
        return yaml.dump(manifest, Dumper=_BlockStyleDumper, sort_keys=False, width=1 << 16)
    q = _scalar
    lines = [
        f"apiVersion: {q(manifest['apiVersion'])}",
        f"kind: {q(manifest['kind'])}",
        "metadata:",
        f"  name: {q(meta['name'])}",
        f"  namespace: {q(meta['namespace'])}",
        "  labels:",
        *(f"    {q(k)}: {q(v)}" for k, v in meta["labels"].items()),
        "  annotations:",
        *(f"    {q(k)}: {q(v)}" for k, v in meta["annotations"].items()),
        "data:" if data else "data: {}",
    ]
    for key, value in data.items():
        lines.append(f"  {q(key)}: |")
        lines.extend(f"    {line}" if line else "" for line in value[:-1].split("\n"))
    return "\n".join(lines) + "\n"


def _temp_name(name: str, pid: int) -> str:
    return f".{name}.{pid}.tmp"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def write_atomic(path: pathlib.Path, content: str) -> None:
    """Write via a temporary file in the same directory and rename it over ``path``.

    Readers see the old file or the new one, never half of one; a failure
    leaves the old file untouched.
    """
    # Hidden, so readers of the directory and our own loader skip it; the pid
    # keeps two controllers (a mistake, but possible) off each other's temp file.
    tmp = path.with_name(_temp_name(path.name, os.getpid()))
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
        with os.fdopen(fd, "wb") as stream:
            os.fchmod(fd, FILE_MODE)  # the umask must not widen or narrow what workloads read
            stream.write(content.encode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _unmark(mark: pathlib.Path) -> None:
    with contextlib.suppress(OSError):
        mark.unlink()


class OutputDir:
    """``OUT``, with its record kept in SQLite so that a pass saves only what it changed."""

    def __init__(self, root: pathlib.Path) -> None:
        self.root = root
        self.records: dict[str, Record] = {}
        self._changed: set[str] = set()
        self._db: sqlite3.Connection | None = None
        self._marked = False
        self._load_state()
        self._sweep_after_crash()

    @property
    def state_path(self) -> pathlib.Path:
        return self.root / STATE_DIR / STATE_FILE

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            # Explicit modes: under a umask of 0 the output root and SQLite's files
            # (database, -wal, -shm) would otherwise be world-writable.
            self.root.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            self.state_path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            db = sqlite3.connect(self.state_path, isolation_level=None, check_same_thread=False)
            # WAL without a sync per commit: a crash may lose the last records,
            # which only costs rewriting files whose content is the same.
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS records ("
                " namespace TEXT PRIMARY KEY, account TEXT NOT NULL,"
                " sources TEXT NOT NULL, files TEXT NOT NULL)"
            )
            # `get ACCOUNT --output-dir OUT` finds an account's record by name.
            db.execute("CREATE INDEX IF NOT EXISTS records_by_account ON records (account)")
            db.execute(f"PRAGMA user_version={STATE_VERSION}")
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.chmod(f"{self.state_path}{suffix}", FILE_MODE)
            self._db = db
        return self._db

    def _sweep_after_crash(self) -> None:
        """Remove the temporary files of a writer that was killed mid-write.

        A writer marks itself in the state directory while it works and unmarks
        at exit; a mark whose process is gone means a SIGKILL (or a power cut)
        may have left ``.<file>.<pid>.tmp`` files next to the outputs. Only then
        is the tree walked, so a normal start costs one directory listing.
        """
        marks = self.root / STATE_DIR
        try:
            entries = [e.name for e in os.scandir(marks) if e.name.startswith(WRITER_MARK)]
        except OSError:
            return
        for mark in entries:
            pid_text = mark[len(WRITER_MARK) :]
            if not pid_text.isdigit() or int(pid_text) == os.getpid() or _alive(int(pid_text)):
                continue
            suffix = f".{pid_text}.tmp"
            with contextlib.suppress(OSError):
                for directory in os.scandir(self.root):
                    if not directory.is_dir(follow_symlinks=False):
                        continue
                    for entry in os.scandir(directory.path):
                        if entry.name.startswith(".") and entry.name.endswith(suffix):
                            with contextlib.suppress(OSError):
                                os.unlink(entry.path)
                os.unlink(marks / mark)

    def _mark(self) -> None:
        """Say a writer is at work (see ``_sweep_after_crash``), once; unsaid at exit."""
        if self._marked:
            return
        self._marked = True
        mark = self.root / STATE_DIR / f"{WRITER_MARK}{os.getpid()}"
        with contextlib.suppress(OSError):
            mark.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            os.close(os.open(mark, os.O_WRONLY | os.O_CREAT, FILE_MODE))
            atexit.register(_unmark, mark)

    def _load_state(self) -> None:
        if not self.state_path.exists():
            return
        try:
            db = self._connect()
            rows = db.execute("SELECT namespace, account, sources, files FROM records").fetchall()
            self.records = {
                ns: Record(account, json.loads(sources), json.loads(files))
                for ns, account, sources, files in rows
            }
        except (sqlite3.DatabaseError, ValueError, TypeError):
            # A damaged record only costs rewrites: outputs are re-derived on this pass.
            self.records = {}
            self._changed = set()
            self._db = None
            with contextlib.suppress(OSError):
                self.state_path.unlink()

    def write_account(
        self, namespace: str, account: str, data: Mapping[str, str], sources: Sequence[str]
    ) -> bool:
        """Bring ``OUT/<namespace>/`` to ``data``. Returns whether any file was (re)written.

        Only files whose content changed are replaced, so a workload watching
        one integration's JSON is not woken by another's change.
        """
        files = {MANIFEST: manifest_yaml(rendering.configmap(account, namespace, data)), **data}
        hashes = {name: rendering.content_hash({name: content}) for name, content in files.items()}
        directory = self.root / namespace
        old = self.records.get(namespace)
        old_hashes = old.files if old else {}
        stale = [
            name
            for name in files
            if old_hashes.get(name) != hashes[name] or not (directory / name).is_file()
        ]
        try:
            if stale:
                self.root.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
                self._mark()
                directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            for name in stale:
                write_atomic(directory / name, files[name])
            for name in set(old_hashes) - set(files):
                with contextlib.suppress(FileNotFoundError):
                    (directory / name).unlink()
        except OSError as e:
            raise OutputError(directory, f"cannot write outputs: {e.strerror or e}") from e
        record = Record(account, sorted(sources), dict(sorted(hashes.items())))
        if old != record:
            self.records[namespace] = record
            self._changed.add(namespace)
        return bool(stale)

    def remove_account(self, namespace: str) -> bool:
        record = self.records.pop(namespace, None)
        self._changed.add(namespace)
        directory = self.root / namespace
        try:
            for name in record.files if record else ():
                with contextlib.suppress(FileNotFoundError):
                    (directory / name).unlink()
            with contextlib.suppress(FileNotFoundError, OSError):
                directory.rmdir()  # only when nothing else was put there
        except OSError as e:
            raise OutputError(directory, f"cannot remove outputs: {e.strerror or e}") from e
        return True

    def save(self) -> bool:
        """Store the records this pass changed; whether there were any."""
        if not self._changed:
            return False
        upserts = [
            (ns, r.account, json.dumps(r.sources), json.dumps(r.files))
            for ns in sorted(self._changed)
            if (r := self.records.get(ns)) is not None
        ]
        deletes = [(ns,) for ns in sorted(self._changed) if ns not in self.records]
        try:
            db = self._connect()
            with contextlib.closing(db.cursor()) as cursor:
                cursor.execute("BEGIN")
                cursor.executemany("INSERT OR REPLACE INTO records VALUES (?, ?, ?, ?)", upserts)
                cursor.executemany("DELETE FROM records WHERE namespace = ?", deletes)
                cursor.execute("COMMIT")
        except (OSError, sqlite3.Error) as e:
            with contextlib.suppress(sqlite3.Error):
                self._connect().execute("ROLLBACK")
            raise OutputError(self.state_path, f"cannot write state: {e}") from e
        self._changed.clear()
        return True


def lookup(root: pathlib.Path, account: str) -> tuple[str, Record] | None:
    """The namespace and record of ``account`` in ``root``'s record, without loading the rest.

    For ``get``: one query instead of reading every record (~100 ms at 100,000).
    Read-only, so a running ``watch`` writing the same database is not disturbed.
    """
    path = root / STATE_DIR / STATE_FILE
    if not path.is_file():
        return None
    try:
        with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as db:
            row = db.execute(
                "SELECT namespace, account, sources, files FROM records WHERE account = ? LIMIT 1",
                (account,),
            ).fetchone()
    except sqlite3.Error:
        return None  # no usable record: the caller reads the declarations
    if row is None:
        return None
    namespace, name, sources, files = row
    return namespace, Record(name, json.loads(sources), json.loads(files))
