"""``completion bash|zsh``: a shell completion script generated from the argparse parser."""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable, Mapping
from typing import Any

from controller.commands import common


def register(sub: Any, build_parser: Callable[[], argparse.ArgumentParser]) -> None:
    """``build_parser`` builds the whole command line (``cli.build_parser``): passed in,
    so that this module never imports ``controller.cli`` (which imports it)."""
    parser = sub.add_parser(
        "completion",
        help="print a shell completion script",
        description="Print a completion script for SHELL. bash: "
        "'source <(settings-controller completion bash)'; zsh: write it as _settings-controller "
        "into a directory on $fpath.",
    )
    parser.add_argument("shell", choices=("bash", "zsh"), metavar="SHELL", help="bash or zsh")
    parser.set_defaults(handler=functools.partial(run, build_parser=build_parser))


def run(args: argparse.Namespace, build_parser: Callable[[], argparse.ArgumentParser]) -> int:
    import shtab  # here only: see common.FILE

    parser = build_parser()
    hinted(parser, {common.FILE: shtab.FILE, common.DIRECTORY: shtab.DIRECTORY})
    print(shtab.complete(parser, shell=args.shell), end="")
    return 0


def hinted(parser: argparse.ArgumentParser, hints: Mapping[str, Any]) -> None:
    """Replace each argument's completion hint (``common.FILE``, ``common.DIRECTORY``) by
    the shell functions ``hints`` gives for it, in ``parser`` and its subcommands."""
    for action in parser._actions:
        hint = getattr(action, "complete", None)
        if isinstance(hint, str) and hint in hints:
            action.complete = hints[hint]  # type: ignore[attr-defined]
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                hinted(sub, hints)
