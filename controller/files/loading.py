"""Declaration files to declarations, every problem located as ``path:line``.

One loader serves ``validate``, ``reconcile``, ``watch`` and ``get``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
from collections.abc import Iterator

from controller.core import catalog, declarations, findings
from controller.files import documents

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
    if any(p.startswith(".") for p in parts):
        return False
    name = parts[-1]
    if name.startswith(("#", "~")) or name.endswith(("~", ".swp", ".swx", ".tmp")):
        return False
    return name.endswith(SUFFIXES)


def discover(root: pathlib.Path) -> list[str]:
    """Declaration files under ``root``, sorted, as relative paths. Follows symlinked files."""
    found = []
    for directory, subdirs, files in os.walk(root, followlinks=False):
        # Hidden directories (``..2024_01_01`` of a ConfigMap volume) are skipped
        # here; their files are reached through the visible symlinks.
        subdirs[:] = [d for d in subdirs if not d.startswith(".")]
        base = pathlib.Path(directory).relative_to(root).as_posix()
        for name in files:
            rel = name if base == "." else f"{base}/{name}"
            if is_declaration_file(rel):
                found.append(rel)
    return sorted(found)


def load_file(cat: catalog.Catalog, root: pathlib.Path, relpath: str) -> LoadedFile:
    try:
        data = (root / relpath).read_bytes()
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        return dataclasses.replace(
            _broken(relpath, line, "file is not valid UTF-8"), digest=digest(data)
        )
    except OSError as e:
        return _broken(relpath, 1, f"cannot read: {e.strerror}")
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


def iter_declarations(loaded: dict[str, LoadedFile]) -> Iterator[declarations.Declaration]:
    for rel in sorted(loaded):
        yield from loaded[rel].declarations
