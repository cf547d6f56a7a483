"""The `mia-tuner` command line. With no arguments it runs the offline demo.

One module per command, each with ``add_parser(commands)`` and ``run(args)``; the option groups
several commands share, and the configurations read back from them, are in ``cli.options``;
options generated from the configuration dataclasses in ``cli.fields``; argument types and
output checks (run before any work) in ``cli.args``.
"""

from __future__ import annotations

import argparse
import logging
import sys

from ..errors import MiaTunerError
from . import benchmark, data, defend, demo, detect, models, scores, train

# command -> (add its parser, run it), in the order `mia-tuner --help` lists them
COMMANDS = {
    "demo": (demo.add_parser, demo.run),
    "scores": (scores.add_parser, scores.run),
    "models": (models.add_parser, models.run),
    "data": (data.add_parser, data.run),
    "methods": (models.add_methods_parser, models.run_methods),
    "train": (train.add_parser, train.run),
    "detect": (detect.add_parser, detect.run),
    "defend": (defend.add_parser, defend.run),
    "benchmark": (benchmark.add_parser, benchmark.run),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mia-tuner", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log what each step does (INFO level)")
    commands = parser.add_subparsers(dest="command")
    for add_parser, _ in COMMANDS.values():
        add_parser(commands)
    return parser


def dispatch(args) -> None:
    """Run the command ``args`` name (the demo when none)."""
    COMMANDS[args.command or "demo"][1](args)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        dispatch(args)
    except MiaTunerError as error:
        print(f"mia-tuner: {'stopped' if error.exit_code == 130 else 'error'}: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("mia-tuner: stopped (Ctrl-C)", file=sys.stderr)
        return 130
    except OSError as error:  # a file system refusal (permissions, full disk, ...): no traceback
        print(f"mia-tuner: error: {error}", file=sys.stderr)
        return 2
    return 0
