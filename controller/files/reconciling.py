"""One pass of file mode: declarations in, outputs brought up to date, a report out.

A ``Reconciler`` keeps the parsed files between passes, so ``watch`` re-reads
only what changed and re-merges only the accounts a change touches: a change
to the global re-renders every account (unchanged ones are not rewritten), a
change to an override or account file only the accounts it declares.

A complete pass leaves a snapshot of what it read and reported
(``snapshots``), so a new process (``reconcile``) finds a tree where nothing
changed by a stat of every file, and replays the report without parsing or
writing (``replay``).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import os
import pathlib
import time
from collections.abc import Callable, Iterable, Iterator, Mapping

from controller.core import catalog, declarations, findings, inventory, merging
from controller.files import loading, outputs, reading, reports, snapshots, writing

# Output writes run on this many threads once a pass has this many accounts to write.
_WRITERS = 4
_PARALLEL_FROM = 64


class Reconciler:
    def __init__(
        self,
        cat: catalog.Catalog | Callable[[], catalog.Catalog],
        root: pathlib.Path,
        out: outputs.OutputDir | None = None,
        files: Iterable[str] | None = None,
        within: Mapping[str, str | None] | None = None,
        schemas: str | None = None,
    ) -> None:
        """Declarations are the YAML files under ``root``, or exactly ``files`` (relative to it).

        Every file is read only from inside ``root`` (symlinks leaving it are
        refused: see ``reading``), unless ``within`` names another directory for
        it, or None for a file the user named on the command line.

        ``cat`` may be a function that loads the catalog, called when a pass
        first needs it; ``schemas`` is then its fingerprint, so that a replay
        (which validates nothing) does not build it.
        """
        self._catalog = cat
        self._schemas = schemas
        self.root = root
        self.out = out
        self.files = sorted(set(files)) if files is not None else None
        self.within = dict(within or {})
        self.reader = reading.Reader()
        self.loaded: dict[str, loading.LoadedFile] = {}
        self.inventory = inventory.Inventory()  # kept up to date file by file
        self.bad: set[str] = set()  # files with YAML or schema errors
        self.results: dict[str, merging.AccountResult] = {}
        self._noted: set[str] = set()  # namespaces whose result has findings
        self.protected: set[str] = set()  # namespaces whose inputs are broken: outputs kept
        self._output_errors: list[reports.Located] = []
        self.stamps: dict[str, tuple[int, ...]] = {}
        self._locations: dict[tuple[findings.Finding, object], reports.Located] = {}
        self._scanned = False
        # Told (stage, done, total) as files are read and outputs written: the CLI's progress line.
        self.progress: Callable[[str, int, int], None] | None = None

    @property
    def catalog(self) -> catalog.Catalog:
        if not isinstance(self._catalog, catalog.Catalog):
            self._catalog = self._catalog()
        return self._catalog

    def run(self, changed: Iterable[str] | None = None) -> reports.PassReport:
        """A pass over everything (``changed=None``) or after the given relative paths changed."""
        with _gc_paused():
            return self._run(changed)

    def _run(self, changed: Iterable[str] | None) -> reports.PassReport:
        started = time.perf_counter()
        report = reports.PassReport()
        if not self.root.exists():
            # A checkout being replaced, a volume remounting: never treat a
            # missing directory as "every account deleted".
            report.findings = [
                reports.Located(
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

    def replay(self) -> reports.PassReport | None:
        """The report of a pass over unchanged inputs, from the last complete pass's snapshot,
        or None when anything it depended on moved (then ``run()`` does the pass).

        Only for a reconciler that has not run yet: ``watch`` needs the parsed
        files, so it always runs. See ``snapshots.replay``.
        """
        if self.out is None or self._scanned or not self.root.exists():
            return None
        self.reader = reading.Reader()
        return snapshots.replay(
            self.out,
            self._fingerprint,
            lambda: (
                self.files
                if self.files is not None
                else loading.discover(self.root, self._skipped())
            ),
            self.root,
            self._within,
            self.reader,
        )

    def _fingerprint(self) -> str:
        schemas = self._schemas if self._schemas is not None else self.catalog.fingerprint
        return snapshots.fingerprint(schemas, self.root, self.files)

    def _snapshot(self, report: reports.PassReport, begun_ns: int) -> None:
        """Keep what a later ``replay`` checks; only after a pass that wrote every output it meant to."""
        assert self.out is not None
        try:
            if self._output_errors:
                snapshots.drop(self.out.store)
                return
            inputs = {rel: (stamp, self.loaded[rel].digest) for rel, stamp in self.stamps.items()}
            snapshots.take(self.out, self._fingerprint(), report, inputs, begun_ns)
        except writing.OutputError as e:
            self._output_failed(e)
            report.findings.extend(self._output_errors)

    # Reading

    def _reload(self, changed: Iterable[str] | None, report: reports.PassReport) -> set[str] | None:
        """Re-read what changed; the namespaces it touches, or None when every account is affected.

        ``changed=None`` rescans the tree and re-reads the files whose identity,
        size or mtime moved (a ConfigMap volume's ``..data`` swap changes them
        all at once without touching the visible paths).
        """
        first = not self._scanned
        self.reader = reading.Reader()  # the directory resolved anew: git-sync swaps a symlink
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
                self.loaded[rel] = loading.load_file(
                    self.catalog, self.root, rel, self._within(rel), self.reader
                )
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

    def _within(self, rel: str) -> str | None:
        return self.within[rel] if rel in self.within else str(self.root)

    def _skipped(self) -> list[pathlib.Path]:
        """OUT, when it lies inside the declarations: its outputs are never read back."""
        return [self.out.root] if self.out is not None else []

    def _wanted(self, rel: str) -> bool:
        return rel in self.files if self.files is not None else loading.is_declaration_file(rel)

    def _rescan(self) -> set[str]:
        listed = (
            self.files if self.files is not None else loading.discover(self.root, self._skipped())
        )
        present = {rel: stamp for rel in listed if (stamp := _stamp(self.root / rel))}
        gone = set(self.stamps) - set(present)
        return gone | {rel for rel, stamp in present.items() if self.stamps.get(rel) != stamp}

    def _merge(self, affected: set[str], report: reports.PassReport) -> None:
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
            except writing.OutputError as e:
                self._output_failed(e)

    def _write(
        self, writes: list[tuple[str, Callable[[], bool]]], report: reports.PassReport
    ) -> None:
        """Run the output actions, a few at a time when there are many.

        Writing is waiting on the filesystem, which threads overlap (measured:
        twice the accounts per second with two writers on this kind of disk).
        """
        if len(writes) >= _PARALLEL_FROM:
            from concurrent import futures  # here: a replay, writing nothing, need not import it

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
            if isinstance(outcome, writing.OutputError):
                self._output_failed(outcome)
                report.kept.append(namespace)
            elif namespace not in self.results:
                report.removed.append(namespace)
            elif outcome:
                report.written.append(namespace)
            else:
                report.unchanged += 1

    def _output_failed(self, error: writing.OutputError) -> None:
        failure = findings.error(findings.Reason.OUTPUT_FAILED, error.problem)
        self._output_errors.append(reports.Located(str(error.path), None, failure))

    # Reporting

    def _located(self) -> list[reports.Located]:
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

    def locate(self, finding: findings.Finding) -> reports.Located:
        ref = finding.source
        if isinstance(ref, loading.DocRef):
            loaded = self.loaded.get(ref.path)
            line = loaded.line(ref, finding.path) if loaded else ref.line
            return reports.Located(self._display(ref.path), line, finding)
        return reports.Located(str(self.root), None, finding)

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


def _outcome(action: Callable[[], bool]) -> bool | writing.OutputError:
    try:
        return action()
    except writing.OutputError as e:
        return e


def _stamp(path: pathlib.Path) -> tuple[int, ...] | None:
    """What identifies a file's content cheaply; None when it is gone.

    Follows symlinks (a ConfigMap volume's swap changes only their targets);
    a symlink that leads nowhere (dangling, a loop) is stamped as itself, so
    that it is read, and reported, rather than silently skipped.
    """
    try:
        st = os.stat(path)
    except OSError:
        try:
            st = os.lstat(path)
        except OSError:
            return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _path(source: object) -> str | None:
    return source.path if isinstance(source, loading.DocRef) else None
