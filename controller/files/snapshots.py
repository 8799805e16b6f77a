"""The snapshot of the last complete pass, and its replay: a pass with nothing changed,
answered without parsing a file or writing one.

A complete pass leaves in the record's database (``records``) every
declaration file's stamp (device, inode, size, mtime, ctime) and the digest of
the bytes it parsed, every output directory's stamp and file names, its report,
and a fingerprint of what else the report depends on (the program, the schemas,
the declarations directory). A new process (``reconcile``) replays the report
when the fingerprint is equal, the same declaration files exist with equal
stamps (a touched file: the same digest), and every output a pass would repair
is still there. Any change to the records, by any program (an SQLite trigger,
so an older version too), drops the snapshot.

A stamp is ``""`` when it cannot be trusted: the file or directory changed
within ``RACY_NS`` of the moment it was stamped (a change in the same clock
tick keeps the old mtime). The replay then checks the content instead
(declarations: the digest; outputs: each file); once such a stamp is old
enough, the replay that checked it records it (``_age``), so the next one
trusts it.

The snapshot's head (one row) also holds a digest of every stamp in order,
so that a replay where nothing moved compares one digest instead of loading
200,000 rows at 100,000 accounts; the rows are read only when it differs (a
touched file may still have the same content).
"""

from __future__ import annotations

import array
import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import pathlib
import sqlite3
import stat
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from controller import version
from controller.core import findings
from controller.files import documents, loading, outputs, reading, records, reports, writing

# Timestamps closer than this to the moment they are read are not trusted:
# filesystem clocks tick coarsely (jiffies) and a change within the same tick
# keeps the old mtime. Assumes the clock of the filesystem agrees with this
# machine's within this margin.
RACY_NS = 2_000_000_000


@dataclasses.dataclass
class Snapshot:
    """What a complete pass read and reported, for a later pass to replay if nothing moved."""

    fingerprint: str  # the program, the schemas and the declarations directory
    report: dict[str, Any]  # the reconciler's summary of the pass
    inputs: dict[str, tuple[str, str]]  # declaration file -> (stamp, content digest)
    outputs: dict[str, tuple[str, tuple[str, ...]]]  # namespace -> (directory stamp, file names)


# The head's layout; a head of another format is not replayed (a pass replaces it).
FORMAT = 2

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS snapshot_inputs ("
    " path TEXT PRIMARY KEY, stamp TEXT NOT NULL, digest TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS snapshot_outputs ("
    " namespace TEXT PRIMARY KEY, stamp TEXT NOT NULL, files TEXT NOT NULL)",
    # Any change to the records, by this version or another (an older one
    # knows nothing of snapshots), makes the snapshot stale: dropped here.
    *(
        f"CREATE TRIGGER IF NOT EXISTS records_{event.lower()} AFTER {event} ON records"
        " BEGIN DELETE FROM meta WHERE key = 'snapshot'; END"
        for event in ("INSERT", "UPDATE", "DELETE")
    ),
)


# Taking a snapshot


def fingerprint(catalog_fingerprint: str, root: pathlib.Path, files: Sequence[str] | None) -> str:
    """What a snapshot's report depends on besides the declarations and the records."""
    return json.dumps(
        [
            version.VERSION,
            _source_digest(),
            catalog_fingerprint,
            str(root),
            str(root.resolve()),
            files,
        ]
    )


def take(
    out: outputs.OutputDir,
    fingerprint: str,
    report: reports.PassReport,
    inputs: Mapping[str, tuple[tuple[int, ...], str]],
    begun_ns: int,
) -> None:
    """Keep what a later ``replay`` checks: ``inputs`` maps each declaration file to its
    stamp and digest as the pass (begun at ``begun_ns``) read it. Raises ``OutputError``."""
    stamped = {
        rel: (stamp_text(stamp, begun_ns), digest) for rel, (stamp, digest) in inputs.items()
    }
    kept = set(report.kept)
    written = directory_stamps(out, (ns for ns in out.records if ns not in kept), time.time_ns())
    save(out.store, Snapshot(fingerprint, _summary(report), stamped, written))


def stamp_text(stamp: os.stat_result | tuple[int, ...], begun_ns: int | None) -> str:
    """A stamp as the snapshot keeps it; "" when the file changed too close to ``begun_ns``
    (the pass's start) to be trusted, so that the next check reads its content."""
    if isinstance(stamp, os.stat_result):
        stamp = (stamp.st_dev, stamp.st_ino, stamp.st_size, stamp.st_mtime_ns, stamp.st_ctime_ns)
    if begun_ns is not None and max(stamp[3:]) >= begun_ns - RACY_NS:
        return ""
    return ":".join(map(str, stamp))


def directory_stamp(st: os.stat_result, reference_ns: int | None) -> str:
    """Identity and change times of a directory; "" when too recent to trust."""
    if reference_ns is not None and max(st.st_mtime_ns, st.st_ctime_ns) >= reference_ns - RACY_NS:
        return ""
    return f"{st.st_dev}:{st.st_ino}:{st.st_mtime_ns}:{st.st_ctime_ns}"


def directory_stamps(
    out: outputs.OutputDir, namespaces: Iterable[str], reference_ns: int
) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Each namespace's directory stamp and file names, for a snapshot.

    A file deleted from a directory changes the directory's mtime, so one
    stat per account tells that its files are all still there. A directory
    changed within ``RACY_NS`` of ``reference_ns`` (the time these stats
    start) gets no stamp: a deletion in the same clock tick as our own last
    write would leave its mtime as it was.
    """
    found: dict[str, tuple[str, tuple[str, ...]]] = {}
    for ns in namespaces:
        record = out.records.get(ns)
        if record is None:
            continue
        names = tuple(record.files)
        try:
            st = os.stat(f"{out.root}/{ns}", follow_symlinks=False)
        except OSError:
            found[ns] = ("", names)
            continue
        found[ns] = (directory_stamp(st, reference_ns), names)
    return found


# Keeping it


def load(store: records.Store) -> Snapshot | None:
    """The last complete pass's snapshot, or None (none kept, or the records changed since)."""
    if not store.exists():
        return None
    try:
        db = store.connect()
        row = db.execute("SELECT value FROM meta WHERE key = 'snapshot'").fetchone()
        if row is None:
            return None
        head = json.loads(row[0])
        if head.get("format") != FORMAT:
            return None  # taken by an older version: a pass takes a new one
        inputs = {
            path: (stamp, digest)
            for path, stamp, digest in db.execute("SELECT * FROM snapshot_inputs")
        }
        written = {
            ns: (stamp, tuple(names.split("/")) if names else ())
            for ns, stamp, names in db.execute("SELECT * FROM snapshot_outputs")
        }
        return Snapshot(head["fingerprint"], head["report"], inputs, written)
    except (sqlite3.Error, ValueError, TypeError, KeyError):
        return None  # unusable: the pass reads everything, as without one


def save(store: records.Store, snapshot: Snapshot) -> None:
    """Replace the snapshot, in one transaction. Records saved later drop it (a trigger)."""
    if not all(_storable(path) for path in snapshot.inputs):
        # A file name that is not UTF-8 cannot be a TEXT key: no snapshot, so the
        # next pass reads everything (rare enough not to change the format for).
        drop(store)
        return
    try:
        db = store.connect()
        with contextlib.closing(db.cursor()) as cursor:
            for statement in _SCHEMA:
                cursor.execute(statement)
            cursor.execute("BEGIN")
            cursor.execute("DELETE FROM snapshot_inputs")
            cursor.execute("DELETE FROM snapshot_outputs")
            cursor.executemany(
                "INSERT INTO snapshot_inputs VALUES (?, ?, ?)",
                ((path, stamp, digest) for path, (stamp, digest) in snapshot.inputs.items()),
            )
            cursor.executemany(
                "INSERT INTO snapshot_outputs VALUES (?, ?, ?)",
                ((ns, stamp, "/".join(names)) for ns, (stamp, names) in snapshot.outputs.items()),
            )
            cursor.execute(
                "INSERT OR REPLACE INTO meta VALUES ('snapshot', ?)", (json.dumps(_head(snapshot)),)
            )
            cursor.execute("COMMIT")
            # Every complete pass rewrites the snapshot: without this the WAL of an
            # idle `watch` grows to SQLite's 4 MB autocheckpoint (333 KB in 5 minutes).
            # Committed already: a checkpoint that fails costs only the file's size.
            with contextlib.suppress(sqlite3.Error):
                cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    except (OSError, sqlite3.Error) as e:
        with contextlib.suppress(sqlite3.Error):
            store.connect().execute("ROLLBACK")
        raise writing.OutputError(store.path, f"cannot write state: {e}") from e


def drop(store: records.Store) -> None:
    """Forget the snapshot: the next pass reads everything."""
    if not store.exists():
        return
    with contextlib.suppress(sqlite3.Error):
        store.connect().execute("DELETE FROM meta WHERE key = 'snapshot'")


def _storable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


# Replaying it


def replay(
    out: outputs.OutputDir,
    fingerprint: Callable[[], str],
    listing: Callable[[], Sequence[str]],
    root: pathlib.Path,
    within: Callable[[str], str | None],
    reader: reading.Reader,
) -> reports.PassReport | None:
    """The report of a pass over unchanged inputs, from the last complete pass's snapshot,
    or None when anything it depended on moved (then a pass runs).

    Nothing is parsed or written. It checks the ``fingerprint``, that the
    declaration files of ``listing`` (relative to ``root``) are those of the
    snapshot with the same stamps (a touched file: the same content digest,
    read by ``reader`` from ``within`` it), that the records are those the
    snapshot was taken with (any save drops it), and that every output a pass
    would repair is still there.
    """
    started = time.perf_counter()
    reference_ns = time.time_ns()  # before any stat: what is older than this by RACY_NS is trusted
    found = _load_head(out.store)
    if found is None:
        return None
    text, head = found
    if head["fingerprint"] != fingerprint():
        return None
    trusted_before = reference_ns - RACY_NS
    try:
        size = len(head["outputs"]["namespaces"])
    except (KeyError, TypeError):
        size = 0  # the check below says so
    # Started first: the output directories' check needs no listing.
    outputs_verdict = _beside(
        functools.partial(_outputs_unmoved, out.root, head, trusted_before), size
    )
    try:
        listed = listing()
        inputs_verdict = _inputs_unmoved(head, listed, root, within, reader, trusted_before)
    finally:
        written = outputs_verdict()
    if inputs_verdict is None or written is None:
        return None
    if isinstance(inputs_verdict, _Part) and isinstance(written, _Part):
        _age(out.store, text, head, inputs_verdict, written)
        report = _report_of(head["report"])
        report.seconds = time.perf_counter() - started
        return report
    # A stamp moved: the rows say which, and whether its content did.
    snapshot = load(out.store)
    if snapshot is None:
        return None
    if len(listed) != len(snapshot.inputs):
        return None
    base = str(root)
    for rel in listed:
        recorded = snapshot.inputs.get(rel)
        if recorded is None:
            return None
        stamp, digest = recorded
        path = f"{base}/{rel}"
        try:
            now = stamp_text(os.stat(path), None)
            if not stamp or now != stamp:
                # The same reader as a pass: a FIFO or /dev/zero is refused, not read.
                data = reader.read(path, within(rel), documents.MAX_FILE_BYTES)
                if loading.digest(data) != digest:
                    return None
        except (OSError, reading.Refused):
            return None
    if not outputs_intact(out.root, snapshot.outputs):
        return None
    report = _report_of(snapshot.report)
    report.seconds = time.perf_counter() - started
    return report


# The head: one row, enough to replay when nothing moved


def _stamp_digest(listed: Sequence[str], flat: array.array[int]) -> str:
    digest = hashlib.sha256("\0".join(listed).encode("utf-8", "surrogateescape"))
    digest.update(flat.tobytes())
    return digest.hexdigest()


def _parsed(stamp: str, width: int) -> list[int]:
    return [int(part) for part in stamp.split(":")] if stamp else [0] * width


def _head(snapshot: Snapshot) -> dict[str, Any]:
    """The head row: the stamps of ``snapshot`` as two digests (the rows keep them one by
    one), and the entries whose stamps were too recent, checked by content instead."""
    paths = sorted(snapshot.inputs)
    namespaces = sorted(snapshot.outputs)
    inputs, dirs = array.array("q"), array.array("q")
    try:
        for rel in paths:
            inputs.extend(_parsed(snapshot.inputs[rel][0], 5))
        for ns in namespaces:
            dirs.extend(_parsed(snapshot.outputs[ns][0], 4))
        stamps = _stamp_digest(paths, inputs), _stamp_digest(namespaces, dirs)
    except OverflowError:  # a number beyond 64 bits: no digest, the rows decide
        stamps = ("", "")
    return {
        "format": FORMAT,
        "fingerprint": snapshot.fingerprint,
        "report": snapshot.report,
        "inputs": {
            "stamps": stamps[0],
            "recent": {
                rel: digest for rel, (stamp, digest) in snapshot.inputs.items() if not stamp
            },
        },
        "outputs": {
            "namespaces": namespaces,
            "stamps": stamps[1],
            "recent": {ns: names for ns, (stamp, names) in snapshot.outputs.items() if not stamp},
        },
    }


def _load_head(store: records.Store) -> tuple[str, dict[str, Any]] | None:
    if not store.exists():
        return None
    try:
        row = store.connect().execute("SELECT value FROM meta WHERE key = 'snapshot'").fetchone()
        if row is None:
            return None
        head = json.loads(row[0])
        if not isinstance(head, dict) or head.get("format") != FORMAT:
            return None  # taken by an older version: a pass takes a new one
        return row[0], head
    except (sqlite3.Error, ValueError):
        return None  # unusable: the pass reads everything, as without one


@dataclasses.dataclass
class _Part:
    """One half of a replay from the head (declarations, or outputs) that found nothing
    moved: the entries whose stamps were too recent when taken and are old enough now,
    and the half's stamp digest with them in (see ``_age``)."""

    aged: list[str]
    digest: str | None


# A replay from the head: _Part when nothing moved, False when a stamp differs (the rows
# then decide), None when something changed for certain.
_Verdict = _Part | bool | None


def _settled(
    keys: Sequence[str],
    flat: array.array[int],
    aged: Mapping[int, tuple[str, tuple[int, ...]]],
    expected: str,
    width: int,
) -> _Verdict:
    if _stamp_digest(keys, flat) != expected:
        return False
    if not aged:
        return _Part([], None)
    for index, (_, stamp) in aged.items():
        flat[index * width : (index + 1) * width] = array.array("q", stamp)
    return _Part([key for key, _ in aged.values()], _stamp_digest(keys, flat))


def _inputs_unmoved(
    head: dict[str, Any],
    listed: Sequence[str],
    root: pathlib.Path,
    within: Callable[[str], str | None],
    reader: reading.Reader,
    trusted_before: int,
) -> _Verdict:
    """Whether every declaration file has the stamp the head says (a recent one: the content)."""
    try:
        recent: dict[str, str] = head["inputs"]["recent"]
        base = str(root)
        flat = array.array("q")
        aged: dict[int, tuple[str, tuple[int, ...]]] = {}
        for index, rel in enumerate(listed):
            st = os.stat(f"{base}/{rel}")
            stamp = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            digest = recent.get(rel)
            if digest is None:
                flat.extend(stamp)
                continue
            # Stat first, then read: a change after the stat moves the stamp kept with it.
            data = reader.read(f"{base}/{rel}", within(rel), documents.MAX_FILE_BYTES)
            if loading.digest(data) != digest:
                return None
            flat.extend((0, 0, 0, 0, 0))
            if max(stamp[3:]) < trusted_before:
                aged[index] = (rel, stamp)
        return _settled(listed, flat, aged, head["inputs"]["stamps"], 5)
    except (OSError, reading.Refused):
        return None
    except (KeyError, TypeError, ValueError, OverflowError):
        return False  # a head this version cannot read: the rows decide


def _outputs_unmoved(root: pathlib.Path, head: dict[str, Any], trusted_before: int) -> _Verdict:
    """Whether every output directory has the stamp the head says (a recent one: its files)."""
    try:
        recent: dict[str, list[str]] = head["outputs"]["recent"]
        namespaces: list[str] = head["outputs"]["namespaces"]
        base = str(root)
        flat = array.array("q")
        aged: dict[int, tuple[str, tuple[int, ...]]] = {}
        for index, ns in enumerate(namespaces):
            directory = f"{base}/{ns}"
            st = os.stat(directory, follow_symlinks=False)  # a symlink is never "intact"
            if not stat.S_ISDIR(st.st_mode):
                return None
            stamp = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns)
            names = recent.get(ns)
            if names is None:
                flat.extend(stamp)
                continue
            for name in names:  # after the directory's stat, as for a declaration
                if not stat.S_ISREG(os.stat(f"{directory}/{name}", follow_symlinks=False).st_mode):
                    return None
            flat.extend((0, 0, 0, 0))
            if max(stamp[2:]) < trusted_before:
                aged[index] = (ns, stamp)
        return _settled(namespaces, flat, aged, head["outputs"]["stamps"], 4)
    except OSError:
        return None
    except (KeyError, TypeError, ValueError, OverflowError):
        return False


# From this many output directories their stats run in a child process, beside the
# declarations' (each half is ~0.3 s of system calls at 100,000 on a 2-core machine).
_FORK_FROM = 5_000


def _beside(work: Callable[[], _Verdict], size: int) -> Callable[[], _Verdict]:
    """``work`` started in a forked child when ``size`` makes it worth a process; a function
    that waits for its verdict. The child only stats and writes its verdict to a pipe, then
    ``os._exit``: nothing of the parent's (its database, its buffers, atexit) runs there. A
    child that fails for any reason gives None: the pass runs, as when anything moved."""
    if size < _FORK_FROM or (os.cpu_count() or 1) < 2 or not hasattr(os, "fork"):
        return work
    try:
        readable, writable = os.pipe()
    except OSError:
        return work
    try:
        pid = os.fork()
    except OSError:
        os.close(readable)
        os.close(writable)
        return work
    if pid == 0:
        code = 1
        try:
            os.close(readable)
            verdict = work()
            data = json.dumps(
                dataclasses.asdict(verdict) if isinstance(verdict, _Part) else verdict
            ).encode()
            view = memoryview(data)
            while view:
                view = view[os.write(writable, view) :]
            code = 0
        finally:
            os._exit(code)
    os.close(writable)

    def join() -> _Verdict:
        with open(readable, "rb") as pipe:
            data = pipe.read()
        _, status = os.waitpid(pid, 0)
        if status != 0:
            return None
        try:
            found = json.loads(data)
        except ValueError:
            return None
        if isinstance(found, dict):
            return _Part(list(found["aged"]), found["digest"])
        return found if found is False else None

    return join


def _age(
    store: records.Store, text: str, head: dict[str, Any], inputs: _Part, written: _Part
) -> None:
    """Record the stamps that were too recent when the snapshot was taken and are old
    enough now, so that the next replay trusts them instead of reading again.

    Only the head changes, and only if it is still the one this replay read
    (``WHERE value = ?``: a pass may have replaced it meanwhile). Its rows keep
    ``""``, which a replay from the rows checks by content: slower, never wrong.
    Best effort: a record that cannot be written (read-only, busy) only costs
    the next replay the same reads.
    """
    if not inputs.aged and not written.aged:
        return
    for part, half in ((inputs, head["inputs"]), (written, head["outputs"])):
        if part.digest is not None:
            for key in part.aged:
                del half["recent"][key]
            half["stamps"] = part.digest
    with contextlib.suppress(sqlite3.Error, OSError, writing.OutputError):
        store.connect().execute(
            "UPDATE meta SET value = ? WHERE key = 'snapshot' AND value = ?",
            (json.dumps(head), text),
        )


def outputs_intact(root: pathlib.Path, written: Mapping[str, tuple[str, tuple[str, ...]]]) -> bool:
    """Whether every file in ``written`` is still there (what a pass would otherwise
    rewrite): one stat per unchanged directory, one per file in the others."""
    base = str(root)
    for ns, (stamp, names) in written.items():
        directory = f"{base}/{ns}"
        try:
            st = os.stat(directory, follow_symlinks=False)  # a symlink is never "intact"
        except OSError:
            return False
        if not stat.S_ISDIR(st.st_mode):
            return False
        if stamp and directory_stamp(st, None) == stamp:
            continue
        for name in names:
            try:
                mode = os.stat(f"{directory}/{name}", follow_symlinks=False).st_mode
                if not stat.S_ISREG(mode):
                    return False
            except OSError:
                return False
    return True


@functools.cache
def _source_digest() -> str:
    """The code a pass's result depends on: a snapshot from other code is not replayed,
    even under the same version number (an editable install)."""
    digest = hashlib.sha256()
    for package in ("core", "files"):
        directory = pathlib.Path(__file__).resolve().parent.parent / package
        for path in sorted(directory.glob("*.py")):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _summary(report: reports.PassReport) -> dict[str, Any]:
    """What ``replay`` needs to give the same report as a pass over the same inputs."""
    return {
        "accounts": report.accounts,
        "unchanged": len(report.written) + report.unchanged,  # written now, unchanged next time
        "kept": report.kept,
        "findings": [
            [
                item.file,
                item.line,
                f.severity.value,
                f.reason.value,
                *((f.ref.kind, f.ref.name, f.ref.namespace) if f.ref else (None, None, None)),
                f.message,
            ]
            for item in report.findings
            for f in [item.finding]
        ],
    }


def _report_of(summary: dict[str, Any]) -> reports.PassReport:
    located = []
    for file, line, severity, reason, kind, name, namespace, message in summary["findings"]:
        ref = findings.ObjectRef(kind, name, namespace) if kind is not None else None
        finding = findings.Finding(
            findings.Severity(severity), findings.Reason(reason), message, ref
        )
        located.append(reports.Located(file, line, finding))
    return reports.PassReport(
        findings=located,
        unchanged=summary["unchanged"],
        kept=list(summary["kept"]),
        accounts=summary["accounts"],
        replayed=True,
    )
