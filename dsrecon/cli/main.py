"""The ``dsrecon`` command: argument parsing, dispatch, and one-line errors.

Every sub-command lives in its own module ``dsrecon.cli.cmd_<name>`` exposing
``register(subparsers)``, which adds its parser and sets ``func`` (``args -> int`` exit code).
Any :class:`dsrecon.errors.DsreconError` (and bad arguments) becomes one line on stderr and exit
code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from dsrecon import __version__
from dsrecon.errors import DsreconError

#: command modules, in the order ``dsrecon --help`` lists them
COMMAND_MODULES = (
    "systems",
    "simulate",
    "fit",
    "generate",
    "evaluate",
    "analyze",
    "degeneracy",
    "report",
    "bench",
)


class OneLineParser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors are a single line on stderr (exit 2)."""

    def error(self, message: str):  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="dsrecon",
        description="Dynamical-systems reconstruction: benchmark systems, models, metrics, analysis.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run `dsrecon COMMAND --help` for the options and an example of each command.",
    )
    parser.add_argument("--version", action="version", version=f"dsrecon {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    for name in COMMAND_MODULES:
        full = f"dsrecon.cli.cmd_{name}"
        try:
            mod = importlib.import_module(full)
        except ModuleNotFoundError as exc:  # command not part of this build
            if exc.name != full:
                raise
            continue
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        return int(args.func(args) or 0)
    except DsreconError as exc:
        sys.stderr.write(f"dsrecon {args.command}: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(f"dsrecon {args.command}: interrupted\n")
        return 130
    except BrokenPipeError:  # the reader went away (`dsrecon ... | head`): stop quietly
        _silence_stdout()
        return 0


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush cannot fail again."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (AttributeError, OSError, ValueError):  # not a real file (tests, embedded use)
        pass


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
