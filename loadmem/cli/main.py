"""``loadmem`` entry point: builds the parser from subcommand modules, maps errors to exit codes.

Exit codes, the same for every command (``docs/exit-codes.md``): 0 ok; 1 the run or the
recording fails a check (failed load, a finding at or above ``--fail-on``, a gate); 2 bad
input (a one-line error, nothing recorded); 130 interrupted.

Each subcommand lives in ``loadmem/cli/<name>.py`` and provides:

- a module docstring: its first line is the one-line help, the rest the description;
- ``add_arguments(parser)``: declares its options;
- ``run(args) -> int``: validates, calls one library function, hands the result to a
  reporter and returns the exit code.

Only ``main`` prints errors: a ``LoadmemError`` becomes one line on stderr and its exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

from loadmem import __version__
from loadmem.errors import EXIT_USAGE, LoadmemError
from loadmem.presentation.escape import terminal

#: Subcommands in the order ``--help`` lists them.
COMMANDS = ("run", "record", "analyze", "plot", "report", "gate", "compare", "ls")

EPILOG = """\
exit codes (every command): 0 ok; 1 a check failed (the load, a finding at or above
--fail-on, a gate); 2 bad input; 130 interrupted. See docs/exit-codes.md.

typical session:
  loadmem run scenarios/demo.py --target demo      # load a bundled demo server, record memory
  loadmem analyze recordings/demo-<time>           # why did free memory drop?
  loadmem report recordings/demo-<time>            # one HTML file with verdict and figure
"""


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line like every other error (it prints the whole
    usage first by default): ``loadmem analyze: error: ... (see loadmem analyze --help)``."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {terminal(message)} "
                              f"(see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="loadmem",
        description="Load test an HTTP service with Locust while recording system and "
        "per-process memory (RSS, PSS, USS, shared/private), then explain where it went.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"loadmem {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"loadmem.cli.{name}")
        doc = (module.__doc__ or name).strip()
        summary, _, description = doc.partition("\n")
        p = sub.add_parser(
            name,
            help=summary.strip(),
            description=(summary.strip() + "\n" + description).strip(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(p)
        p.set_defaults(_run=module.run, _parser=p)
    return parser


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in parser._subparsers._group_actions if parser._subparsers else ():
        if isinstance(action, argparse._SubParsersAction) and name in action.choices:
            return action.choices[name]
    raise KeyError(name)


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse ``argv``. A subcommand module with ``split_argv(subparser, argv)`` (``run``) takes
    the arguments that are not its own for a tool it drives (Locust): they land in
    ``args.locust_args`` instead of being refused."""
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] | None = None
    if argv and argv[0] in COMMANDS:
        module = importlib.import_module(f"loadmem.cli.{argv[0]}")
        split = getattr(module, "split_argv", None)
        if split is not None and not {"-h", "--help"} & set(argv[1:]):
            own, extra = split(_subparser(parser, argv[0]), argv[1:])
            argv = [argv[0], *own]
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # said by the subcommand's parser, so the error names the command
        getattr(args, "_parser", parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    if extra is not None:
        args.locust_args = extra
    return args


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parse(parser, argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args._run(args) or 0)
    except LoadmemError as e:
        # One line, whatever the message quotes (a path, a process name, a library's error)
        print(f"loadmem {args.command}: error: {terminal(e)}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"loadmem {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


def entry_point() -> None:
    sys.exit(main())
