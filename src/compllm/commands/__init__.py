"""The CLI's subcommands besides `ask`: `fit` (router calibration, a core feature) and
`bench` (the benchmark harness). `compllm bench` is declared here without importing the
harness: its arguments are parsed by `compllm.commands.bench`, imported only when it runs, so
`compllm ask` and `compllm fit` never load it."""

from __future__ import annotations

import argparse
from typing import Any, TextIO

from compllm.commands import fit
from compllm.models import ModelProvider

__all__ = ["add_commands", "run_command"]


def add_commands(commands: Any) -> None:
    """Declare `fit` and `bench` on the CLI's subparsers."""
    fit.add_command(commands)
    bench = commands.add_parser(
        "bench",
        help="build a composite-query suite, run systems on it, report",
        add_help=False,  # `compllm bench --help` is answered by the bench module's parser
        prefix_chars="\0",  # so that every argument, options included, reaches it untouched
    )
    bench.add_argument("arguments", nargs=argparse.REMAINDER)


def run_command(args: argparse.Namespace, out: TextIO, err: TextIO, provider: ModelProvider) -> int:
    if args.command == "fit":
        return fit.run(args, out, provider)
    if args.command == "bench":
        from compllm.commands import bench

        return bench.main(args.arguments, out, err, provider)
    raise ValueError(f"not a subcommand of compllm.commands: {args.command}")
