"""``watch DIR --output-dir OUT [-o text|json]``: start watching, reconcile, then keep outputs
current.

``-o json`` prints one JSON object a line on stdout for each thing a log reader
would grep for: a new finding, an account written, removed or kept, and each
reported pass (``event``: ``finding``, ``written``, ``removed``, ``kept``,
``pass``, then ``stopped``). The human log stays on stderr. Ctrl-C exits 130,
as every other command does; SIGTERM (a service manager's stop) exits 0.
"""

from __future__ import annotations

import argparse
import json
import logging
import pathlib
import signal
import sys
from typing import Any

from controller.commands import common, progress
from controller.files import outputs, reconciling, reports

log = logging.getLogger("settings_controller")

FORMATS = ("text", "json")
EXIT_INTERRUPTED = 130


def register(sub: Any) -> None:
    parser = sub.add_parser("watch", help="reconcile, then follow changes until stopped")
    parser.add_argument("directory", type=pathlib.Path, metavar="DIR", help="declarations")
    common.add_output_dir(parser, FORMATS)
    parser.add_argument(
        "--resync",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="rescan this often even without events (default 30)",
    )
    parser.set_defaults(handler=run)


def _emit(event: str, **fields: Any) -> None:
    """One JSON line, flushed: a reader at the other end of a pipe sees it at once."""
    print(json.dumps({"event": event, **fields}, sort_keys=False), flush=True)


def run(args: argparse.Namespace) -> int:
    if not args.directory.is_dir():
        # Unlike reconcile, watch may wait for a missing directory, but a
        # typo deserves a usage error rather than silence.
        raise common.UsageError(f"{args.directory}: not a directory")
    out = common.output_dir(args, FORMATS)
    as_json = args.output == "json"
    reconciler = reconciling.Reconciler(
        common.load_catalog(), args.directory, outputs.OutputDir(out)
    )
    seen: set[str] = set()
    # The first pass reads everything: show its progress; later passes are small.
    meter = progress.Progress.for_stderr("watch")
    reconciler.progress = meter.update

    def on_report(report: reports.PassReport, what: str) -> None:
        meter.finish()
        reconciler.progress = None
        current = {str(item) for item in report.findings}
        new = [item for item in report.findings if str(item) not in seen]
        if as_json:
            for item in new:
                _emit("finding", **item.as_dict())
        else:
            common.print_findings(new)
        seen.clear()
        seen.update(current)
        written = report.written
        listed = args.verbose or len(written) + len(report.removed) <= common.LIST_LIMIT
        for namespace in written:
            if as_json:
                _emit("written", namespace=namespace, summary=_badges(reconciler, namespace))
            elif listed:
                log.info("wrote %s/ (%s)", out / namespace, _badges(reconciler, namespace))
        for namespace in report.removed:
            if as_json:
                _emit("removed", namespace=namespace)
            elif listed:
                log.info("removed %s/: account no longer declared", out / namespace)
        for namespace in report.kept:
            if as_json:
                _emit("kept", namespace=namespace)
            log.warning("kept last good output of %s: see the errors above", namespace)
        if as_json:
            _emit(
                "pass",
                what=what,
                accounts=report.accounts,
                written=len(written),
                unchanged=report.unchanged,
                kept=len(report.kept),
                removed=len(report.removed),
                errors=len(report.errors),
                seconds=round(report.seconds, 3),
            )
        log.info("%s: %s", what, common.summary(report))

    # Imported here: watchdog and asyncio are ~80 ms that every other command (each
    # builds the parser, which imports this module) need not pay.
    from controller.files import watching

    watch = watching.Watch(reconciler, on_report, resync=args.resync)
    stopped_by: list[int] = []

    def stop(signum: int, _frame: object) -> None:
        stopped_by.append(signum)
        watch.stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    log.info("watching %s, writing to %s (Ctrl-C to stop)", args.directory, out)
    watch.run()
    interrupted = signal.SIGINT in stopped_by
    if as_json:
        _emit("stopped", signal=signal.Signals(stopped_by[0]).name if stopped_by else None)
    log.info("stopped")
    sys.stdout.flush()
    return EXIT_INTERRUPTED if interrupted else 0


def _badges(reconciler: reconciling.Reconciler, namespace: str) -> str:
    result = reconciler.results.get(namespace)
    if result is None:
        return ""
    return result.summary
