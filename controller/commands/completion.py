"""``completion bash|zsh``: a shell completion script generated from the argparse parser."""

from __future__ import annotations

import argparse
from typing import Any

import shtab


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "completion",
        help="print a shell completion script",
        description="Print a completion script for SHELL. bash: "
        "'source <(settings-controller completion bash)'; zsh: write it as _settings-controller "
        "into a directory on $fpath.",
    )
    parser.add_argument("shell", choices=("bash", "zsh"), metavar="SHELL", help="bash or zsh")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    # Imported here: the parser is built by controller.cli, which imports this module.
    from controller import cli

    print(shtab.complete(cli.build_parser(), shell=args.shell), end="")
    return 0
