"""Entry point of the `tal` command.

Each verb lives in its own module under `tal.cli` and exposes `register(subparsers)`, which adds its
parser and sets `func(args) -> int`. Modules import their heavy dependencies (torch, h5py) inside
`func`, so `tal --help` and `tal evaluate` start fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from tal import __version__
from tal.errors import TalInputError

# Verb modules, in the order `tal --help` lists them. A module that is not there yet is skipped.
VERB_MODULES = [
    "tal.cli.extract_features",
    "tal.cli.import_features",
    "tal.cli.features_info",
    "tal.cli.convert_annotations",
    "tal.cli.train",
    "tal.cli.evaluate",
    "tal.cli.query",
    "tal.cli.serve",
    "tal.cli.detect",
    "tal.cli.visualize",
    "tal.cli.demo",
]


class _Parser(argparse.ArgumentParser):
    """argparse with tal's usage-error convention: one line on stderr, exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tal",
        description="tal: temporal localization in long, untrimmed videos.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"tal {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in VERB_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler, not at interpreter exit
        return code
    except BrokenPipeError:  # `tal evaluate ... | head`: the reader left; what it read was complete
        _silence_stdout()
        return 141  # 128 + SIGPIPE, what a tool killed by the signal returns
    except TalInputError as exc:
        print(f"tal {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tal {args.command}: interrupted", file=sys.stderr)
        return 130


def _silence_stdout() -> None:
    """Point stdout at /dev/null so Python's final flush does not raise BrokenPipeError again."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


if __name__ == "__main__":
    raise SystemExit(main())
