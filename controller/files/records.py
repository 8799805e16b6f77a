"""The record of the output directory: what was written for each account, from which files.

Kept in SQLite under ``OUT/.settings-controller/state.sqlite``, so that a pass
saves only the accounts it changed. It lets a later pass keep an account's
last good output when a file that fed it stops parsing, skip rewriting
unchanged accounts, and remove the outputs of accounts that are gone. The same
database holds the snapshot of the last complete pass (``snapshots``).

SQLite follows symlinks and puts its -wal file next to the target, so the
record directory and the database's files are opened only once nothing on
their way is a symlink (``StateDir``); anything else there is an error naming
the path, left alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pathlib
import sqlite3
import stat
from collections.abc import Iterable, Mapping

from controller.files import reading, writing

STATE_DIR = ".settings-controller"
STATE_FILE = "state.sqlite"
STATE_VERSION = 2


@dataclasses.dataclass
class Record:
    account: str
    sources: list[str]  # declaration files that produced this output
    files: dict[str, str]  # file name -> content hash


class StateDir:
    """The record directory, open, once nothing on its way is a symlink.

    ``fd`` is None when there is none (and ``create`` was not asked); ``exists``
    says whether the database is there. Raises ``OutputError`` for a symlink
    or another kind of file at the directory or at any of the database's files
    (SQLite follows symlinks, and puts its -wal file next to the target).
    """

    def __init__(self, root: pathlib.Path, create: bool = False) -> None:
        self.root, self.create = root, create
        self.fd: int | None = None
        self.exists = False

    def __enter__(self) -> StateDir:
        try:
            top = os.open(self.root, writing.DIR_FLAGS)  # OUT itself may be a symlink
        except FileNotFoundError:
            if not self.create:
                return self
            writing.make_dirs(self.root)
            top = os.open(self.root, writing.DIR_FLAGS)
        try:
            path = self.root / STATE_DIR
            if self.create:
                try:
                    os.mkdir(STATE_DIR, writing.DIR_MODE, dir_fd=top)
                except FileExistsError:
                    pass
                else:
                    os.chmod(STATE_DIR, writing.DIR_MODE, dir_fd=top)  # not narrowed by the umask
            self.fd = writing.open_subdir(top, STATE_DIR, path)
        finally:
            os.close(top)
        if self.fd is None:
            return self
        try:
            for suffix in ("", "-wal", "-shm", "-journal"):
                name = STATE_FILE + suffix
                try:
                    mode = os.stat(name, dir_fd=self.fd, follow_symlinks=False).st_mode
                except FileNotFoundError:
                    continue
                if not stat.S_ISREG(mode):
                    raise writing.OutputError(
                        path / name, f"is {reading.kind(mode)}: {writing.NOT_FOLLOWED}"
                    )
                self.exists = self.exists or not suffix
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        writing.close(self.fd)
        self.fd = None


class Store:
    """The database of ``root``'s record, opened on first use."""

    def __init__(self, root: pathlib.Path) -> None:
        self.root = root
        self._db: sqlite3.Connection | None = None
        self.blocked: writing.OutputError | None = None  # a symlink on the record's way

    @property
    def path(self) -> pathlib.Path:
        return self.root / STATE_DIR / STATE_FILE

    def exists(self) -> bool:
        """Whether there is a record to read; False when its way is blocked by a symlink
        (kept in ``blocked``, for the next save to report)."""
        try:
            with StateDir(self.root) as state:
                return state.exists
        except writing.OutputError as e:
            self.blocked = e
            return False
        except OSError:
            return False

    def connect(self) -> sqlite3.Connection:
        if self._db is None:
            # Explicit modes: under a umask of 0 the output root and SQLite's files
            # (database, -wal, -shm) would otherwise be world-writable.
            try:
                with StateDir(self.root, create=True):
                    pass
            except OSError as e:
                raise writing.OutputError(self.path, f"cannot write state: {e}") from e
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
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
                    os.chmod(f"{self.path}{suffix}", writing.FILE_MODE)
            self._db = db
        return self._db

    def load(self) -> dict[str, Record]:
        """Every record; none when there is no record, or a damaged one (then removed: it
        only costs rewrites, as outputs are re-derived on this pass)."""
        if not self.exists():
            return {}
        try:
            rows = self.connect().execute("SELECT namespace, account, sources, files FROM records")
            return {
                ns: Record(account, json.loads(sources), json.loads(files))
                for ns, account, sources, files in rows.fetchall()
            }
        except (sqlite3.DatabaseError, ValueError, TypeError):
            self._db = None
            with contextlib.suppress(OSError, writing.OutputError), StateDir(self.root) as state:
                if state.fd is not None:
                    os.unlink(STATE_FILE, dir_fd=state.fd)
            return {}

    def save(self, records: Mapping[str, Record], changed: Iterable[str]) -> None:
        """Store the records of ``changed`` (deleted when ``records`` has none), in one transaction."""
        changed = sorted(changed)
        upserts = [
            (ns, r.account, json.dumps(r.sources), json.dumps(r.files))
            for ns in changed
            if (r := records.get(ns)) is not None
        ]
        deletes = [(ns,) for ns in changed if ns not in records]
        try:
            db = self.connect()
            with contextlib.closing(db.cursor()) as cursor:
                cursor.execute("BEGIN")
                cursor.executemany("INSERT OR REPLACE INTO records VALUES (?, ?, ?, ?)", upserts)
                cursor.executemany("DELETE FROM records WHERE namespace = ?", deletes)
                cursor.execute("COMMIT")
        except (OSError, sqlite3.Error) as e:
            with contextlib.suppress(sqlite3.Error):
                self.connect().execute("ROLLBACK")
            raise writing.OutputError(self.path, f"cannot write state: {e}") from e


def lookup(root: pathlib.Path, account: str) -> tuple[str, Record] | None:
    """The namespace and record of ``account`` in ``root``'s record, without loading the rest.

    For ``get``: one query instead of reading every record (~100 ms at 100,000).
    Read-only, so a running ``watch`` writing the same database is not disturbed.
    """
    path = root / STATE_DIR / STATE_FILE
    try:
        with StateDir(root) as state:
            if not state.exists:
                return None
    except (OSError, writing.OutputError):
        return None  # a record reached through a symlink is not read: the caller reads all
    try:
        # absolute(): a file URI cannot be relative (`get --output-dir out` raised ValueError).
        with contextlib.closing(
            sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
        ) as db:
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
