"""The installed version, for ``--version``, the ``build_info`` metric and file mode's snapshot.

``VERSION`` is read on first use, from the name of the package's ``.dist-info``
directory when exactly one is found first on ``sys.path`` (what
``importlib.metadata`` finds, without its ~35 ms import: a ``reconcile`` with
nothing changed compares it, and should take well under a second), else
through ``importlib.metadata``.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import TYPE_CHECKING

DISTRIBUTION = "settings-controller"

if TYPE_CHECKING:
    VERSION: str


def __getattr__(name: str) -> str:
    if name == "VERSION":
        return _version()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def _version() -> str:
    prefix = DISTRIBUTION.replace("-", "_") + "-"
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        found = [n for n in names if n.lower().startswith(prefix)]
        if not found:
            continue
        if len(found) == 1 and found[0].endswith(".dist-info"):
            return found[0][len(prefix) : -len(".dist-info")]
        break  # an egg-info, or two versions side by side: as importlib.metadata decides
    from importlib import metadata

    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"
