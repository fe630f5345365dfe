"""The ``jouleledger`` command: one entry point for the agent, the operator and the offline tools.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``; modules are
imported only when their subcommand runs, so ``jouleledger --help`` loads neither kopf nor NVML.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn, Protocol, cast

from jouleledger import __version__

__all__ = ["main"]

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "agent": ("jouleledger.agent.main", "run the per-node agent (DaemonSet): measure, attribute, serve /metrics"),
    "operator": ("jouleledger.controller.main", "run the operator: ledger, carbon, cost, Job annotations"),
    "demo": ("jouleledger.agent.demo", "run the agent on a simulated GPU node and print a footprint table"),
    "replay": ("jouleledger.agent.replay", "run the agent pipeline over a recorded JSONL trace"),
    "record": ("jouleledger.agent.record", "record what the agent sees on this node as a JSONL trace"),
    "report": ("jouleledger.report.command", "chargeback of a period per team, namespace, workload or node"),
}


class _Command(Protocol):
    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


class _Parser(argparse.ArgumentParser):
    """Bad arguments: one line naming the argument and what is wrong with it, exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _load(name: str) -> _Command:
    return cast(_Command, importlib.import_module(SUBCOMMANDS[name][0]))


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = _Parser(prog="jouleledger", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"jouleledger {__version__}")
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="log verbosity"
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = next((arg for arg in argv if arg in SUBCOMMANDS), None)
    for name, (_, help_text) in SUBCOMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            _load(name).add_arguments(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(args_list)
    args = parser.parse_args(args_list)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        code = _load(args.command).run(args)
        sys.stdout.flush()
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (``| head``): stop quietly, as the Python docs recommend for SIGPIPE.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
