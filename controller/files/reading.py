"""Declaration files read safely: a Git checkout can hold any kind of path.

Git stores symlinks, so a checkout can point a ``*.yaml`` name at
``/dev/zero``, a FIFO, a socket, a directory, a file elsewhere on the machine,
or nowhere (a loop, a dangling link). The policy:

* only regular files are read; anything else is refused without being opened
  (opening a device can have effects of its own, a FIFO blocks);
* a symlink is followed only when it resolves inside the declarations
  directory (a ConfigMap volume's ``x.yaml -> ..data/x.yaml``, a shared file
  elsewhere in the same repository); one that leaves it is refused, as is a
  file reached through a symlinked directory that leaves it (checked on the
  descriptor actually opened, so the answer is about the file that was read);
* at most ``limit + 1`` bytes are read, so the size limit holds whatever the
  file claims or becomes while being read.

A refused path becomes a ``Refused`` whose message names the problem, never
the content or the link's target. The checks assume nobody swaps the tree
while it is read (a concurrent writer of the declarations could write the
declarations anyway); the descriptor checks still stop a swap from reaching a
device or a file outside.
"""

from __future__ import annotations

import errno
import os
import stat

# O_NONBLOCK: a FIFO swapped in after the checks opens at once instead of
# waiting for a writer. O_NOFOLLOW: the path opened is the one checked.
_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY
_CHUNK = 1 << 20


class Refused(Exception):
    """A declaration path that is not read; the message says why."""


def kind(mode: int) -> str:
    """What a file is, in words."""
    if stat.S_ISREG(mode):
        return "a regular file"
    if stat.S_ISLNK(mode):
        return "a symlink"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "of an unknown kind"


class Reader:
    """Reads declaration files confined to directories; one per pass, so that a
    declarations directory swapped between passes (git-sync's symlink) is resolved anew."""

    def __init__(self) -> None:
        self._bases: dict[str, str] = {}

    def read(self, path: str, within: str | None, limit: int) -> bytes:
        """The bytes of ``path`` (at most ``limit + 1``), or ``Refused``.

        ``within`` is the directory the file must lie in (None: a file the user
        named on the command line, which may be anywhere).
        """
        try:
            lst = os.lstat(path)
        except OSError as e:
            raise Refused(_cannot(e)) from None
        target = path
        if stat.S_ISLNK(lst.st_mode):
            try:
                target = os.path.realpath(path, strict=True)
            except OSError as e:
                raise Refused(_broken_link(e)) from None
            if within is not None and not self._inside(target, within):
                raise Refused(
                    f"is a symlink that leads outside {within}: only files inside "
                    "the declarations directory are read"
                )
            try:
                lst = os.stat(target, follow_symlinks=False)
            except OSError as e:
                raise Refused(_cannot(e)) from None
        if not stat.S_ISREG(lst.st_mode):
            raise Refused(f"is {kind(lst.st_mode)}: only regular files are read")
        try:
            fd = os.open(target, _FLAGS)
        except OSError as e:
            raise Refused(_cannot(e)) from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):  # swapped since the lstat
                raise Refused(f"is {kind(st.st_mode)}: only regular files are read")
            if within is not None and not self._inside(_opened(fd, target), within):
                raise Refused(
                    f"is reached through a symlink that leads outside {within}: only files "
                    "inside the declarations directory are read"
                )
            return _read_at_most(fd, limit + 1)
        except OSError as e:
            raise Refused(_cannot(e)) from None
        finally:
            os.close(fd)

    def _inside(self, real: str, within: str) -> bool:
        base = self._bases.get(within)
        if base is None:
            base = self._bases[within] = os.path.realpath(within)
        return real == base or real.startswith(base.rstrip("/") + "/")


def _opened(fd: int, path: str) -> str:
    """The real path of the open file: from /proc when mounted (exact, whatever was
    swapped), else the path resolved now."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return os.path.realpath(path)


def _read_at_most(fd: int, size: int) -> bytes:
    chunks = []
    while size > 0:
        chunk = os.read(fd, min(size, _CHUNK))
        if not chunk:
            break
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _broken_link(error: OSError) -> str:
    if error.errno == errno.ELOOP:
        return "is a symlink loop"
    if error.errno in (errno.ENOENT, errno.ENOTDIR):
        return "is a symlink to nothing (its target does not exist)"
    return _cannot(error)


def _cannot(error: OSError) -> str:
    if error.errno == errno.ELOOP:
        return "is a symlink loop"
    return f"cannot read: {error.strerror or error}"
