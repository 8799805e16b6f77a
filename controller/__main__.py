"""``python -m controller`` is the ``settings-controller`` command."""

import sys

from controller import cli

# Guarded: worker processes (forkserver) import the main module again.
if __name__ == "__main__":
    sys.exit(cli.main())
