"""One pass of file mode: declarations in, outputs brought up to date, a report out.

A ``Reconciler`` keeps the parsed files between passes, so ``watch`` re-reads
only what changed and re-merges only the accounts a change touches: a change
to the global re-renders every account (unchanged ones are not rewritten), a
change to an override or account file only the accounts it declares.

A complete pass leaves a snapshot in the output record (every declaration
file's stamp and digest, every output directory's stamp, the report), so a
new process (``reconcile``) finds a tree where nothing changed by a stat of
every file, and replays the report without parsing or writing (``replay``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import hashlib
import json
import os
import pathlib
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures
from typing import Any

from controller import version
from controller.core import catalog, declarations, findings, inventory, merging
from controller.files import loading, outputs

# Output writes run on this many threads once a pass has this many accounts to write.
_WRITERS = 4
_PARALLEL_FROM = 64


@dataclasses.dataclass(frozen=True)
class Located:
    """A finding with its place: a file and line, or a directory for findings about the whole set."""

    file: str
    line: int | None
    finding: findings.Finding

    @property
    def location(self) -> str:
        return f"{self.file}:{self.line}" if self.line is not None else self.file

    def __str__(self) -> str:
        f = self.finding
        subject = f"{f.ref}: " if f.ref else ""
        return f"{self.location}: {f.severity.value}: {subject}{f.message}"

    def as_dict(self) -> dict[str, object]:
        f = self.finding
        return {
            "file": self.file,
            "line": self.line,
            "severity": f.severity.value,
            "reason": f.reason.value,
            "object": str(f.ref) if f.ref else None,
            "message": f.message,
        }


@dataclasses.dataclass
class PassReport:
    findings: list[Located] = dataclasses.field(default_factory=list)
    written: list[str] = dataclasses.field(default_factory=list)  # namespaces rewritten
    unchanged: int = 0
    kept: list[str] = dataclasses.field(default_factory=list)  # last good output kept
    removed: list[str] = dataclasses.field(default_factory=list)
    files_read: int = 0
    seconds: float = 0.0
    accounts: int = 0  # accounts with effective settings (rendered or not)
    replayed: bool = False  # answered from the last complete pass's snapshot

    @property
    def errors(self) -> list[Located]:
        return [item for item in self.findings if item.finding.is_error]

    @property
    def exit_code(self) -> int:
        return 1 if self.errors else 0


class Reconciler:
    def __init__(
        self,
        cat: catalog.Catalog,
        root: pathlib.Path,
        out: outputs.OutputDir | None = None,
        files: Iterable[str] | None = None,
    ) -> None:
        """Declarations are the YAML files under ``root``, or exactly ``files`` (relative to it)."""
        self.catalog = cat
        self.root = root
        self.out = out
        self.files = sorted(set(files)) if files is not None else None
        self.loaded: dict[str, loading.LoadedFile] = {}
        self.inventory = inventory.Inventory()  # kept up to date file by file
        self.bad: set[str] = set()  # files with YAML or schema errors
        self.results: dict[str, merging.AccountResult] = {}
        self._noted: set[str] = set()  # namespaces whose result has findings
        self.protected: set[str] = set()  # namespaces whose inputs are broken: outputs kept
        self._output_errors: list[Located] = []
        self.stamps: dict[str, tuple[int, ...]] = {}
        self._locations: dict[tuple[findings.Finding, object], Located] = {}
        self._scanned = False
        # Told (stage, done, total) as files are read and outputs written: the CLI's progress line.
        self.progress: Callable[[str, int, int], None] | None = None

    def run(self, changed: Iterable[str] | None = None) -> PassReport:
        """A pass over everything (``changed=None``) or after the given relative paths changed."""
        with _gc_paused():
            return self._run(changed)

    def _run(self, changed: Iterable[str] | None) -> PassReport:
        started = time.perf_counter()
        report = PassReport()
        if not self.root.exists():
            # A checkout being replaced, a volume remounting: never treat a
            # missing directory as "every account deleted".
            report.findings = [
                Located(
                    str(self.root),
                    None,
                    findings.error(
                        findings.Reason.INVALID_YAML,
                        "declarations directory does not exist; outputs kept",
                    ),
                )
            ]
            report.seconds = time.perf_counter() - started
            return report
        complete = changed is None
        begun_ns = time.time_ns()
        affected = self._reload(changed, report)
        if affected is None:
            affected = set(self.inventory.accounts) | set(self.results)
            if self.out is not None:
                affected |= set(self.out.records)
        self._output_errors = []
        self._merge(affected, report)
        report.findings = self._located() + self._output_errors
        report.accounts = len(self.results)
        if complete and self.out is not None:
            self._snapshot(report, begun_ns)
        report.seconds = time.perf_counter() - started
        return report

    # The snapshot: a pass with nothing changed, without parsing

    def replay(self) -> PassReport | None:
        """The report of a pass over unchanged inputs, from the last complete pass's snapshot,
        or None when anything it depended on moved (then ``run()`` does the pass).

        Nothing is parsed or written. It checks the program and schemas (the
        fingerprint), that the same declaration files exist with the same
        stamps (a touched file: the same content digest), that the records are
        those the snapshot was taken with (any save drops it), and that every
        output a pass would repair is still there. Only for a reconciler that
        has not run yet: ``watch`` needs the parsed files, so it always runs.
        """
        started = time.perf_counter()
        if self.out is None or self._scanned or not self.root.exists():
            return None
        snapshot = self.out.load_snapshot()
        if snapshot is None or snapshot.fingerprint != self._fingerprint():
            return None
        listed = self.files if self.files is not None else loading.discover(self.root)
        if len(listed) != len(snapshot.inputs):
            return None
        root = str(self.root)
        for rel in listed:
            recorded = snapshot.inputs.get(rel)
            if recorded is None:
                return None
            stamp, digest = recorded
            path = f"{root}/{rel}"
            try:
                now = _stamp_text(os.stat(path), None)
                if not stamp or now != stamp:
                    with open(path, "rb") as stream:
                        if loading.digest(stream.read()) != digest:
                            return None
            except OSError:
                return None
        if not self.out.outputs_intact(snapshot.outputs):
            return None
        report = _report_of(snapshot.report)
        report.seconds = time.perf_counter() - started
        return report

    def _fingerprint(self) -> str:
        """What a snapshot's report depends on besides the declarations and the records."""
        return json.dumps(
            [
                version.VERSION,
                _source_digest(),
                self.catalog.fingerprint,
                str(self.root),
                str(self.root.resolve()),
                self.files,
            ]
        )

    def _snapshot(self, report: PassReport, begun_ns: int) -> None:
        """Keep what a later ``replay`` checks; only after a pass that wrote every output it meant to."""
        assert self.out is not None
        try:
            if self._output_errors:
                self.out.drop_snapshot()
                return
            inputs = {
                rel: (_stamp_text(stamp, begun_ns), self.loaded[rel].digest)
                for rel, stamp in self.stamps.items()
            }
            kept = set(report.kept)
            written = self.out.directory_stamps(
                (ns for ns in self.out.records if ns not in kept), time.time_ns()
            )
            self.out.save_snapshot(
                outputs.Snapshot(self._fingerprint(), _summary(report), inputs, written)
            )
        except outputs.OutputError as e:
            self._output_failed(e)
            report.findings.extend(self._output_errors)

    # Reading

    def _reload(self, changed: Iterable[str] | None, report: PassReport) -> set[str] | None:
        """Re-read what changed; the namespaces it touches, or None when every account is affected.

        ``changed=None`` rescans the tree and re-reads the files whose identity,
        size or mtime moved (a ConfigMap volume's ``..data`` swap changes them
        all at once without touching the visible paths).
        """
        first = not self._scanned
        if changed is None:
            changed = self._rescan()
            self._scanned = True
        affected: set[str] = set()
        everything = first
        todo = sorted(set(changed))
        for done, rel in enumerate(todo):
            if self.progress is not None and done % 256 == 0:
                self.progress("read", done, len(todo))
            before = self.loaded.pop(rel, None)
            self.stamps.pop(rel, None)
            stamp = _stamp(self.root / rel) if self._wanted(rel) else None
            if stamp is not None:
                self.loaded[rel] = loading.load_file(self.catalog, self.root, rel)
                self.stamps[rel] = stamp
                report.files_read += 1
            after = self.loaded.get(rel)
            self.inventory.replace(rel, after.declarations if after else ())
            _put(self.bad, rel, after is not None and not after.ok)
            for loaded in (before, after):
                for decl in loaded.declarations if loaded else ():
                    if isinstance(decl, declarations.GlobalSettings):
                        everything = True
                    else:
                        affected.add(decl.namespace)
            if before is not None and not before.ok:
                # What a broken file declared before it broke is only known
                # through the records, which every-account passes consult.
                everything = True
        return None if everything else affected

    def _wanted(self, rel: str) -> bool:
        return rel in self.files if self.files is not None else loading.is_declaration_file(rel)

    def _rescan(self) -> set[str]:
        listed = self.files if self.files is not None else loading.discover(self.root)
        present = {rel: stamp for rel in listed if (stamp := _stamp(self.root / rel))}
        gone = set(self.stamps) - set(present)
        return gone | {rel for rel, stamp in present.items() if self.stamps.get(rel) != stamp}

    def _merge(self, affected: set[str], report: PassReport) -> None:
        inv, out = self.inventory, self.out
        bad = self.bad
        global_source = _path(inv.global_.source) if inv.global_ else None
        writes: list[tuple[str, Callable[[], bool]]] = []
        todo = sorted(affected)
        for done, namespace in enumerate(todo):
            if self.progress is not None and done % 256 == 0:
                self.progress("merge", done, len(todo))
            account = inv.accounts.get(namespace)
            record = out.records.get(namespace) if out else None
            overrides = inv.overrides.get(namespace, {})
            sources = {_path(o.source) for o in overrides.values()}
            sources |= {_path(account.source) if account else None, global_source}
            sources.discard(None)
            previous = set(record.sources) if record else set()
            protected = bool(
                namespace in inv.blocked
                or (sources | previous) & bad
                or (inv.global_ is None and (account is not None or bad or inv.findings))
            )
            result = None
            if account is not None and inv.global_ is not None:
                # Merged even when protected, so every finding is reported at once.
                result = merging.merge_account(self.catalog, inv.global_, account, overrides)
                self.results[namespace] = result
            else:
                self.results.pop(namespace, None)
            _put(self._noted, namespace, bool(result and result.findings))
            if protected:
                # Its inputs are broken or in conflict: keep the last good output.
                self.protected.add(namespace)
                if record is not None:
                    report.kept.append(namespace)
                continue
            self.protected.discard(namespace)
            if out is None:
                continue
            if result is None:
                if record is not None:
                    writes.append((namespace, functools.partial(out.remove_account, namespace)))
                continue
            files = sorted(s for s in sources if s)
            write = functools.partial(
                out.write_account, namespace, result.account.name, result.data, files
            )
            writes.append((namespace, write))
        self._write(writes, report)
        if out is not None:
            try:
                out.save()
            except outputs.OutputError as e:
                self._output_failed(e)

    def _write(self, writes: list[tuple[str, Callable[[], bool]]], report: PassReport) -> None:
        """Run the output actions, a few at a time when there are many.

        Writing is waiting on the filesystem, which threads overlap (measured:
        twice the accounts per second with two writers on this kind of disk).
        """
        if len(writes) >= _PARALLEL_FROM:
            # Batches, not one future per account: a future's locks cost more
            # than the account's merge.
            size = max(16, len(writes) // (_WRITERS * 8))
            batches = [writes[i : i + size] for i in range(0, len(writes), size)]
            with futures.ThreadPoolExecutor(_WRITERS, thread_name_prefix="write") as pool:
                done = pool.map(lambda batch: [(ns, _outcome(a)) for ns, a in batch], batches)
                outcomes = []
                for batch in done:
                    outcomes.extend(batch)
                    if self.progress is not None:
                        self.progress("write", len(outcomes), len(writes))
        else:
            outcomes = [(ns, _outcome(action)) for ns, action in writes]
        for namespace, outcome in outcomes:
            if isinstance(outcome, outputs.OutputError):
                self._output_failed(outcome)
                report.kept.append(namespace)
            elif namespace not in self.results:
                report.removed.append(namespace)
            elif outcome:
                report.written.append(namespace)
            else:
                report.unchanged += 1

    def _output_failed(self, error: outputs.OutputError) -> None:
        failure = findings.error(findings.Reason.OUTPUT_FAILED, error.problem)
        self._output_errors.append(Located(str(error.path), None, failure))

    # Reporting

    def _located(self) -> list[Located]:
        found: list[findings.Finding] = []
        for rel in sorted(self.bad):
            found.extend(self.loaded[rel].errors)
        bad = self.bad
        found.extend(
            f
            for f in self.inventory.findings
            # A file that does not parse may declare the missing account: only a
            # consequence of that error, not a second one to report.
            if not (bad and f.reason is findings.Reason.ORPHAN_OVERRIDE)
        )
        for namespace in sorted(self._noted):
            found.extend(self.results[namespace].findings)
        # Finding a line re-parses the file, so located findings are kept from
        # pass to pass for as long as their file is unchanged.
        cache, self._locations = self._locations, {}
        located = []
        for finding in found:
            key = (finding, self.stamps.get(_path(finding.source) or ""))
            item = cache.get(key) or self.locate(finding)
            self._locations[key] = item
            located.append(item)
        return sorted(located, key=lambda item: (item.file, item.line or 0))

    def locate(self, finding: findings.Finding) -> Located:
        ref = finding.source
        if isinstance(ref, loading.DocRef):
            loaded = self.loaded.get(ref.path)
            line = loaded.line(ref, finding.path) if loaded else ref.line
            return Located(self._display(ref.path), line, finding)
        return Located(str(self.root), None, finding)

    def _display(self, rel: str) -> str:
        return os.path.normpath(os.path.join(self.root, rel))


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """A pass allocates a great many long-lived, acyclic objects, and the cyclic
    collector walked them again and again: a third of a 50,000-account pass.
    Reference counting still frees everything; cycles wait for the pass's end."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _put(items: set[str], item: str, present: bool) -> None:
    if present:
        items.add(item)
    else:
        items.discard(item)


def _outcome(action: Callable[[], bool]) -> bool | outputs.OutputError:
    try:
        return action()
    except outputs.OutputError as e:
        return e


def _stamp(path: pathlib.Path) -> tuple[int, ...] | None:
    """What identifies a file's content cheaply; None when it is gone. Follows symlinks."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _stamp_text(stamp: os.stat_result | tuple[int, ...], begun_ns: int | None) -> str:
    """A stamp as the snapshot keeps it; "" when the file changed too close to ``begun_ns``
    (the pass's start) to be trusted, so that the next check reads its content."""
    if isinstance(stamp, os.stat_result):
        stamp = (stamp.st_dev, stamp.st_ino, stamp.st_size, stamp.st_mtime_ns, stamp.st_ctime_ns)
    if begun_ns is not None and max(stamp[3:]) >= begun_ns - outputs.RACY_NS:
        return ""
    return ":".join(map(str, stamp))


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


def _summary(report: PassReport) -> dict[str, Any]:
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


def _report_of(summary: dict[str, Any]) -> PassReport:
    located = []
    for file, line, severity, reason, kind, name, namespace, message in summary["findings"]:
        ref = findings.ObjectRef(kind, name, namespace) if kind is not None else None
        finding = findings.Finding(
            findings.Severity(severity), findings.Reason(reason), message, ref
        )
        located.append(Located(file, line, finding))
    return PassReport(
        findings=located,
        unchanged=summary["unchanged"],
        kept=list(summary["kept"]),
        accounts=summary["accounts"],
        replayed=True,
    )


def _path(source: object) -> str | None:
    return source.path if isinstance(source, loading.DocRef) else None
