"""``operator``: cluster mode, the kopf operator (see ``controller.cluster``)."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    parser = sub.add_parser("operator", help="run cluster mode (a kopf operator)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    raise NotImplementedError
