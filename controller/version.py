"""The installed version, for ``--version`` and the ``build_info`` metric."""

from __future__ import annotations

from importlib import metadata

try:
    VERSION = metadata.version("settings-controller")
except metadata.PackageNotFoundError:  # run from a source tree that was never installed
    VERSION = "0+unknown"
