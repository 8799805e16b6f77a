"""``watch DIR --output-dir OUT``: start watching, reconcile, then keep outputs current."""

from __future__ import annotations

import argparse
import logging
import pathlib
import signal
from typing import Any

from controller.commands import common, progress
from controller.files import outputs, reconciling, watching

log = logging.getLogger("settings_controller")


def register(sub: Any) -> None:
    parser = sub.add_parser("watch", help="reconcile, then follow changes until stopped")
    parser.add_argument("directory", type=pathlib.Path, metavar="DIR", help="declarations")
    common.add_output_dir(parser)
    parser.add_argument(
        "--resync",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="rescan this often even without events (default 30)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if not args.directory.is_dir():
        # Unlike reconcile, watch may wait for a missing directory, but a
        # typo deserves a usage error rather than silence.
        raise common.UsageError(f"{args.directory}: not a directory")
    out = common.output_dir(args)
    reconciler = reconciling.Reconciler(
        common.load_catalog(), args.directory, outputs.OutputDir(out)
    )
    seen: set[str] = set()
    # The first pass reads everything: show its progress; later passes are small.
    meter = progress.Progress.for_stderr("watch")
    reconciler.progress = meter.update

    def on_report(report: reconciling.PassReport, what: str) -> None:
        meter.finish()
        reconciler.progress = None
        current = {str(item) for item in report.findings}
        common.print_findings(item for item in report.findings if str(item) not in seen)
        seen.clear()
        seen.update(current)
        written = report.written
        listed = args.verbose or len(written) + len(report.removed) <= common.LIST_LIMIT
        for namespace in written if listed else ():
            log.info("wrote %s/ (%s)", out / namespace, _badges(reconciler, namespace))
        for namespace in report.removed if listed else ():
            log.info("removed %s/: account no longer declared", out / namespace)
        for namespace in report.kept:
            log.warning("kept last good output of %s: its declarations have errors", namespace)
        log.info("%s: %s", what, common.summary(report))

    watch = watching.Watch(reconciler, on_report, resync=args.resync)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: watch.stop())
    log.info("watching %s, writing to %s (Ctrl-C to stop)", args.directory, out)
    watch.run()
    log.info("stopped")
    return 0


def _badges(reconciler: reconciling.Reconciler, namespace: str) -> str:
    result = reconciler.results.get(namespace)
    if result is None:
        return ""
    return result.summary
