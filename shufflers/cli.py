"""The `shufflelm` command (the original release's entry point, `shufflers.cli:main`): one word
per job, each handed to the entry point that already does it, with the rest of the line.

    shufflelm generate "Why is the sky blue?" --max-new-tokens 64
    shufflelm generate "Hi" --model tiny --max-tokens 4     # the original release's spellings
    shufflelm app --model tiny                               # the web app
    shufflelm COMMAND --help                                 # that command's own options
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import NamedTuple


class Command(NamedTuple):
    module: str  # its main(argv) does the work
    help: str
    first: tuple[str, ...] = ()  # arguments put before the user's (a subcommand of its own)
    takes_prog: bool = False  # its main(argv, prog=...) names the program in its usage line


COMMANDS = {
    "app": Command("shufflers.app", "serve the web app (--model tiny|default|HEAD_DIR, --port)"),
    "demo": Command("shufflers.app", "the same as app (the original release's name)"),
    "generate": Command(
        "shuffle_model.cli.generate",
        "generate text and print step statistics (--model, --max-tokens: see its --help)",
        ("generate",),
        takes_prog=True,
    ),
    "cost": Command(
        "shuffle_model.cli.generate",
        "show (or --remeasure) this machine's cost of a pass over n tokens",
        ("cost",),
        takes_prog=True,
    ),
    "bench": Command("shuffle_model.bench.run", "benchmark against greedy and prompt lookup"),
    "distill": Command("shuffle_model.cli.distill", "answer prompts with the backbone (data)"),
    "train": Command("shuffle_model.cli.train", "train a shuffle head on distilled data"),
    "calibrate": Command("shuffle_model.cli.calibrate", "fit a head's keep probabilities"),
    "evaluate": Command("shuffle_model.cli.evaluate", "compare trained heads"),
    "lossless": Command("shuffle_model.cli.lossless", "measure the near-tie bound"),
}


def parser() -> argparse.ArgumentParser:
    listing = "\n".join(f"  {name:<10} {command.help}" for name, command in COMMANDS.items())
    p = argparse.ArgumentParser(
        prog="shufflelm",
        description="ShuffleLM: parallel drafting, shuffling, filtering and verification of "
        "tokens.",
        epilog=f"commands:\n{listing}\n\n`shufflelm COMMAND --help` gives a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("command", choices=COMMANDS, metavar="COMMAND", help="one of those below")
    p.add_argument(
        "args", nargs="*", default=[], metavar="ARGS", help="the command's own arguments"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser().parse_args(argv[:1])  # --help, no command or an unknown one: argparse says so
    name, rest = argv[0], argv[1:]  # the rest goes on untouched (a "--" included)
    command = COMMANDS[name]
    entry = importlib.import_module(command.module).main
    arguments = [*command.first, *rest]
    if command.takes_prog:
        return entry(arguments, prog="shufflelm") or 0
    program = sys.argv[0]
    sys.argv[0] = f"shufflelm {name}"  # the usage line of a parser that takes its name from here
    try:
        return entry(arguments) or 0
    finally:
        sys.argv[0] = program


if __name__ == "__main__":
    raise SystemExit(main())
