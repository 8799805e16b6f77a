"""Writing under the output directory: atomic replacement, never through a symlink, and the
sweep of what a killed writer left.

Nothing is written outside ``OUT``. ``OUT`` itself may be a symlink (the
user's choice), but nothing under it is followed: every file is created,
replaced and removed relative to a descriptor of its directory, opened with
``O_NOFOLLOW``. A symlink (or anything but a directory) at ``OUT/<namespace>``
or ``OUT/.settings-controller`` is an error naming the path, and is left alone
rather than replaced: someone put it there (to send outputs elsewhere, say) and
should learn that it is not followed, and nothing they made is deleted. A
symlink or a FIFO in place of an output file is replaced (a rename replaces the
name, not what it points to).

A writer marks itself in the record directory while it works
(``WRITER_MARK``); a mark whose process is gone means temporary files may be
left, which ``sweep_after_crash`` removes.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pathlib
import stat
from collections.abc import Iterable

from controller.core import errors
from controller.files import reading

WRITER_MARK = "writer."

# Outputs are read by workloads and written only by the controller.
FILE_MODE = 0o644
DIR_MODE = 0o755


class OutputError(errors.SettingsError):
    """An output could not be written; the previous file is still in place."""

    def __init__(self, path: pathlib.Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


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


def write_atomic(path: pathlib.Path | str, content: str) -> None:
    """Write via a temporary file in the same directory and rename it over ``path``.

    Readers see the old file or the new one, never half of one; a failure
    leaves the old file untouched.
    """
    head, name = os.path.split(os.fspath(path))
    directory = os.open(head or ".", DIR_FLAGS)
    try:
        write_at(directory, name, content)
    finally:
        os.close(directory)


def write_at(directory: int, name: str, content: str) -> None:
    """``write_atomic`` of ``name`` in the directory open as ``directory``: the temporary
    file is created there with O_EXCL (never through a symlink) and renamed over the name
    (a symlink or a FIFO in its place is replaced, never followed)."""
    # Hidden, so readers of the directory and our own loader skip it; the pid
    # keeps two controllers (a mistake, but possible) off each other's temp file.
    # Plain ``os`` calls on strings: a cold pass writes 300,000 files, and
    # pathlib and a buffered file object cost as much Python as the merge.
    tmp = _temp_name(name, os.getpid())
    data = content.encode()
    try:
        try:
            fd = os.open(tmp, _CREATE, FILE_MODE, dir_fd=directory)
        except FileExistsError:  # left by a killed process that had our pid
            os.unlink(tmp, dir_fd=directory)
            fd = os.open(tmp, _CREATE, FILE_MODE, dir_fd=directory)
        try:
            if umask_narrows():
                os.fchmod(fd, FILE_MODE)  # the umask must not narrow what workloads read
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(tmp, name, src_dir_fd=directory, dst_dir_fd=directory)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=directory)
        raise


# A directory under OUT, never through a symlink.
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
SUBDIR_FLAGS = DIR_FLAGS | os.O_NOFOLLOW

NOT_FOLLOWED = "nothing under the output directory is followed or replaced; remove it"


def open_subdir(parent: int, name: str, path: pathlib.Path) -> int | None:
    """The directory ``name`` under ``parent``, open; None when there is none.

    Raises ``OutputError`` naming ``path`` for a symlink or anything else that
    is not a directory.
    """
    try:
        return os.open(name, SUBDIR_FLAGS, dir_fd=parent)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
    try:
        mode = os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return None  # gone meanwhile: the caller creates it
    raise OutputError(path, f"is {reading.kind(mode)}, not a directory: {NOT_FOLLOWED}")


def intact(directory: str, names: Iterable[str]) -> bool:
    """Whether ``directory`` is a directory (not a symlink) holding each name as a regular
    file. Only read: a directory swapped for a symlink meanwhile is caught by the writes."""
    try:
        if not stat.S_ISDIR(os.stat(directory, follow_symlinks=False).st_mode):
            return False
        return all(
            stat.S_ISREG(os.stat(f"{directory}/{name}", follow_symlinks=False).st_mode)
            for name in names
        )
    except OSError:
        return False


def regular_at(directory: int, name: str) -> bool:
    try:
        return stat.S_ISREG(os.stat(name, dir_fd=directory, follow_symlinks=False).st_mode)
    except OSError:
        return False


def close(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)


def make_dirs(path: pathlib.Path) -> None:
    """``mkdir -p`` with ``DIR_MODE`` at every level it creates: ``Path.mkdir(parents=True)``
    makes the missing parents with the default mode, world-writable under a umask of 0."""
    missing = []
    while not path.is_dir():
        missing.append(path)
        if path.parent == path:
            break
        path = path.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory, DIR_MODE)
        os.chmod(directory, DIR_MODE)  # the umask must not narrow nor a zero one widen it


# O_EXCL: the file is new, so its mode is the one asked for, less the umask (and a
# symlink in its place makes the open fail rather than be followed).
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def umask_narrows() -> bool:
    """Whether the umask takes bits from ``FILE_MODE`` (then each file needs an fchmod).

    Read once per process: reading it means setting it, which is not safe
    once writer threads run.
    """
    global _NARROWS
    if _NARROWS is None:
        mask = os.umask(0o022)
        os.umask(mask)
        _NARROWS = bool(mask & FILE_MODE)
    return _NARROWS


_NARROWS: bool | None = None


# The crash sweep


def mark(state_dir: int) -> str:
    """Say in ``state_dir`` (the record directory, open) that this process writes; the
    mark's name, for ``unmark`` at exit."""
    name = f"{WRITER_MARK}{os.getpid()}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    os.close(os.open(name, flags, FILE_MODE, dir_fd=state_dir))
    return name


def sweep_after_crash(root: pathlib.Path, state_dir: int) -> None:
    """Remove the temporary files of a writer that was killed mid-write.

    A writer marks itself in the record directory (``state_dir``, open) while
    it works and unmarks at exit; a mark whose process is gone means a SIGKILL
    (or a power cut) may have left ``.<file>.<pid>.tmp`` files next to the
    outputs. Only then is the tree walked, so a normal start costs one
    directory listing.
    """
    entries = [e.name for e in os.scandir(state_dir) if e.name.startswith(WRITER_MARK)]
    for name in entries:
        pid_text = name[len(WRITER_MARK) :]
        if not pid_text.isdigit() or int(pid_text) == os.getpid() or _alive(int(pid_text)):
            continue
        with contextlib.suppress(OSError):
            _sweep(root, f".{pid_text}.tmp")
            os.unlink(name, dir_fd=state_dir)


def _sweep(root: pathlib.Path, suffix: str) -> None:
    """Remove ``.*<suffix>`` files in the namespace directories, never through a symlink."""
    top = os.open(root, DIR_FLAGS)
    try:
        for directory in os.scandir(top):
            if not directory.is_dir(follow_symlinks=False):
                continue
            try:
                fd = os.open(directory.name, SUBDIR_FLAGS, dir_fd=top)
            except OSError:
                continue  # replaced by a symlink meanwhile: not followed
            try:
                for entry in os.scandir(fd):
                    if entry.name.startswith(".") and entry.name.endswith(suffix):
                        with contextlib.suppress(OSError):
                            os.unlink(entry.name, dir_fd=fd)
            finally:
                os.close(fd)
    finally:
        os.close(top)
