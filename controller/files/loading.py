"""Declaration files to declarations, every problem located as ``path:line``.

One loader serves ``validate``, ``reconcile``, ``watch`` and ``get``.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import os
import pathlib
from collections.abc import Iterable

from controller.core import catalog, declarations, findings
from controller.files import documents, reading, records

SUFFIXES = (".yaml", ".yml")


@dataclasses.dataclass(frozen=True)
class DocRef:
    """Where a declaration came from: the ``source`` of its findings."""

    path: str  # relative to the declarations directory, with forward slashes
    index: int  # document index in the file; -1 for the file as a whole
    line: int


@dataclasses.dataclass(frozen=True)
class LoadedFile:
    path: str
    declarations: tuple[declarations.Declaration, ...]
    errors: tuple[findings.Finding, ...]  # YAML and schema problems; any makes the file "bad"
    text: str  # kept to find the line of a later finding; node trees would cost ~10x the memory
    digest: str = ""  # of the bytes read: a later pass checks a touched file's content by it

    @property
    def ok(self) -> bool:
        return not self.errors

    def line(self, ref: DocRef, path: tuple[str | int, ...]) -> int:
        if ref.index < 0:
            return ref.line
        try:
            docs = documents.with_nodes(self.text)
        except documents.DocumentError:
            return ref.line
        for doc in docs:
            if doc.index == ref.index:
                return doc.line_of(path)
        return ref.line


def is_declaration_file(relpath: str) -> bool:
    """YAML files, minus hidden files and directories (``..data`` included) and editor leftovers."""
    parts = relpath.split("/")
    return not any(p.startswith(".") for p in parts) and _declaration_name(parts[-1])


def _declaration_name(name: str) -> bool:
    """A YAML file's name, not hidden nor an editor's leftover."""
    if name.startswith((".", "#", "~")) or name.endswith(("~", ".swp", ".swx", ".tmp")):
        return False
    return name.endswith(SUFFIXES)


def discover(root: pathlib.Path, skip: Iterable[pathlib.Path] = ()) -> list[str]:
    """Declaration files under ``root``, sorted, as relative paths.

    Output directories are never read back as declarations: ``skip`` (the pass's
    OUT, when it lies inside ``root``) and any directory below ``root`` holding an
    output record (``.settings-controller``: the OUT of some other pass, for
    ``validate`` or ``render``, which know no OUT) are left out with all they hold.

    Hidden directories (``..2024_01_01`` and ``..data`` of a ConfigMap volume,
    ``.git``) are skipped; their files are reached through the visible symlinks.
    A symlinked directory is entered when it resolves inside ``root``: a
    projected volume's item ``accounts/x.yaml`` is published as ``accounts ->
    ..data/accounts``. Each real directory is entered once, the plain path
    first (a loop, or a second link to a directory, adds nothing), and a link
    that leads outside ``root`` is not entered. A symlinked file is listed, and
    read only if it resolves to a regular file inside ``root`` (see ``reading``).
    """
    base = os.path.realpath(root)
    seen = {base} | {os.path.realpath(p) for p in skip}  # a skipped directory: never entered
    found: list[str] = []
    plain: collections.deque[tuple[str, str]] = collections.deque([(os.fspath(root), "")])
    linked: list[tuple[str, str]] = []  # entered after every plain directory found so far
    while plain or linked:
        if plain:
            directory, rel = plain.popleft()
        else:
            directory, rel = linked.pop(0)
            real = os.path.realpath(directory)
            if real in seen or not _inside(real, base):
                continue
            seen.add(real)
        entries = _entries(directory)
        if rel and any(name == records.STATE_DIR and is_dir for name, is_dir, _ in entries):
            continue  # an output directory (its record is there): outputs are not declarations
        for name, is_dir, is_link in entries:
            if name.startswith("."):
                continue
            if not is_dir:
                # Every directory on the way is visible (hidden ones are not entered):
                # what is left of ``is_declaration_file`` is the name's.
                if _declaration_name(name):
                    found.append(f"{rel}{name}")
                continue
            path, sub = os.path.join(directory, name), f"{rel}{name}/"
            if not is_link:
                # Reached without a link, but maybe also through one entered before.
                real = os.path.realpath(path)
                if real not in seen:
                    seen.add(real)
                    plain.append((path, sub))
            else:
                linked.append((path, sub))
        linked.sort()
    return sorted(found)


def _entries(directory: str) -> list[tuple[str, bool, bool]]:
    """(name, is a directory (followed), is a symlink) of each entry; none if unreadable."""
    out = []
    try:
        with os.scandir(directory) as it:
            for entry in it:
                try:
                    out.append((entry.name, entry.is_dir(), entry.is_symlink()))
                except OSError:
                    out.append((entry.name, False, False))
    except OSError:
        return []
    return out


def _inside(real: str, base: str) -> bool:
    return real == base or real.startswith(base.rstrip("/") + "/")


def load_file(
    cat: catalog.Catalog,
    root: pathlib.Path,
    relpath: str,
    within: str | None,
    reader: reading.Reader | None = None,
) -> LoadedFile:
    """Read and parse one file. ``within``: the directory it must lie in (see ``reading``);
    None for a file named on the command line."""
    try:
        data = (reader or reading.Reader()).read(
            os.path.join(root, relpath), within, documents.MAX_FILE_BYTES
        )
    except reading.Refused as e:
        return _broken(relpath, 1, str(e))
    if len(data) > documents.MAX_FILE_BYTES:
        # Read no further than one byte past the limit: /dev/zero-sized files stop here.
        return _broken(relpath, 1, f"file is larger than {documents.MAX_FILE_BYTES >> 20} MiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        return dataclasses.replace(
            _broken(relpath, line, "file is not valid UTF-8"), digest=digest(data)
        )
    return dataclasses.replace(load_text(cat, relpath, text), digest=digest(data))


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_text(cat: catalog.Catalog, relpath: str, text: str) -> LoadedFile:
    try:
        docs = documents.parse(text)
    except documents.DocumentError as e:
        return _broken(relpath, e.line, e.message, text)
    decls: list[declarations.Declaration] = []
    errors: list[findings.Finding] = []
    for doc in docs:
        ref = DocRef(relpath, doc.index, doc.line)
        if not isinstance(doc.body, dict):
            errors.append(
                findings.error(
                    findings.Reason.SCHEMA_VIOLATION,
                    "a document must be a mapping (an object with apiVersion, kind, metadata, spec)",
                    source=ref,
                )
            )
            continue
        decl, problems = declarations.parse(cat, doc.body, ref)
        errors.extend(problems)
        if decl is not None:
            decls.append(decl)
    return LoadedFile(relpath, tuple(decls), tuple(errors), text)


def _broken(relpath: str, line: int, message: str, text: str = "") -> LoadedFile:
    ref = DocRef(relpath, -1, line)
    error = findings.error(findings.Reason.INVALID_YAML, message, source=ref)
    return LoadedFile(relpath, (), (error,), text)
