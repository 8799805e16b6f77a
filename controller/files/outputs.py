"""The output directory: each account's files brought to what a pass rendered.

Layout under ``OUT``::

    OUT/<namespace>/integration-settings.yaml   the ConfigMap manifest (``manifests``)
    OUT/<namespace>/<type>.json                 one per integration
    OUT/.settings-controller/state.sqlite       the record (``records``) and the snapshot
                                                of the last complete pass (``snapshots``)
    OUT/.settings-controller/writer.<pid>       a writer is (or was, if it died) at work

Files are replaced atomically and never through a symlink (``writing``). The
account keeps its last good output when its directory cannot be written.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import os
import pathlib
from collections.abc import Mapping, Sequence

from controller.core import rendering
from controller.files import manifests, records, writing


class OutputDir:
    """``OUT``, with its record kept in SQLite so that a pass saves only what it changed."""

    def __init__(self, root: pathlib.Path) -> None:
        self.root = root
        self.store = records.Store(root)
        self._records: dict[str, records.Record] | None = None  # see ``records``
        self._changed: set[str] = set()
        self._marked = False
        writing.umask_narrows()  # here, before any writer thread: reading the umask sets it
        # A symlinked record directory is not swept: it is reported when the record is used.
        with contextlib.suppress(OSError, writing.OutputError), records.StateDir(root) as state:
            if state.fd is not None:
                writing.sweep_after_crash(root, state.fd)

    @property
    def records(self) -> dict[str, records.Record]:
        """What was written for each namespace. Read on first use: a pass that replays
        its snapshot never needs the 100,000 records (a second of JSON at that size)."""
        if self._records is None:
            self._records = self.store.load()
        return self._records

    @property
    def state_path(self) -> pathlib.Path:
        return self.store.path

    def _mark(self) -> None:
        """Say a writer is at work (see ``writing.sweep_after_crash``), once; unsaid at exit."""
        if self._marked:
            return
        self._marked = True
        with (
            contextlib.suppress(OSError, writing.OutputError),
            records.StateDir(self.root, create=True) as state,
        ):
            assert state.fd is not None
            atexit.register(_unmark, self.root, writing.mark(state.fd))

    def write_account(
        self, namespace: str, account: str, data: Mapping[str, str], sources: Sequence[str]
    ) -> bool:
        """Bring ``OUT/<namespace>/`` to ``data``. Returns whether any file was (re)written.

        Only files whose content changed are replaced, so a workload watching
        one integration's JSON is not woken by another's change.
        """
        files = {
            manifests.MANIFEST: manifests.manifest_yaml(
                rendering.configmap(account, namespace, data)
            ),
            **data,
        }
        hashes = {name: rendering.content_hash({name: content}) for name, content in files.items()}
        old = self.records.get(namespace)
        old_hashes = old.files if old else {}
        if old_hashes == hashes and writing.intact(f"{self.root}/{namespace}", files):
            return False  # the common case of a full pass: a few lstats, no descriptors
        top = directory = None
        try:
            with contextlib.suppress(FileNotFoundError):
                top = os.open(self.root, writing.DIR_FLAGS)  # OUT itself may be a symlink
            if top is not None:
                directory = writing.open_subdir(top, namespace, self.root / namespace)
            stale = [
                name
                for name in files
                if old_hashes.get(name) != hashes[name]
                or directory is None
                or not writing.regular_at(directory, name)
            ]
            if stale:
                self._mark()
                if top is None:
                    writing.make_dirs(self.root)
                    top = os.open(self.root, writing.DIR_FLAGS)
                if directory is None:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(namespace, writing.DIR_MODE, dir_fd=top)
                    directory = writing.open_subdir(top, namespace, self.root / namespace)
                    if directory is None:
                        raise FileNotFoundError(errno.ENOENT, "removed while being written")
            for name in stale:
                assert directory is not None
                writing.write_at(directory, name, files[name])
            for name in set(old_hashes) - set(files) if directory is not None else ():
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=directory)
        except OSError as e:
            raise writing.OutputError(
                self.root / namespace, f"cannot write outputs: {e.strerror or e}"
            ) from e
        finally:
            writing.close(directory)
            writing.close(top)
        record = records.Record(account, sorted(sources), dict(sorted(hashes.items())))
        if old != record:
            self.records[namespace] = record
            self._changed.add(namespace)
        return bool(stale)

    def remove_account(self, namespace: str) -> bool:
        record = self.records.pop(namespace, None)
        self._changed.add(namespace)
        path = self.root / namespace
        top = directory = None
        try:
            top = os.open(self.root, writing.DIR_FLAGS)
            directory = writing.open_subdir(top, namespace, path)
            if directory is None:
                return True
            for name in record.files if record else ():
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=directory)
            with contextlib.suppress(OSError):
                os.rmdir(namespace, dir_fd=top)  # only when nothing else was put there
        except FileNotFoundError:
            return True
        except OSError as e:
            raise writing.OutputError(path, f"cannot remove outputs: {e.strerror or e}") from e
        finally:
            writing.close(directory)
            writing.close(top)
        return True

    def save(self) -> bool:
        """Store the records this pass changed; whether there were any."""
        if self.store.blocked is not None:
            # Said at every pass until it is fixed (looked at again each time): the
            # record cannot be kept meanwhile, and what changed waits in ``_changed``.
            self.store.blocked = None
            self.store.exists()
            if self.store.blocked is not None:
                raise self.store.blocked
        if not self._changed:
            return False
        self.store.save(self.records, self._changed)
        self._changed.clear()
        return True


def _unmark(root: pathlib.Path, name: str) -> None:
    with contextlib.suppress(OSError, writing.OutputError), records.StateDir(root) as state:
        if state.fd is not None:
            os.unlink(name, dir_fd=state.fd)
