"""``python -m controller`` is the ``settings-controller`` command."""

import sys

from controller import cli

sys.exit(cli.main())
