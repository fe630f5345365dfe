"""``jouleledger record --out TRACE``: write what the agent sees on this node as a JSONL trace (docs/trace-format.md).

On a GPU node it reads NVML, the kubelet and ``/proc`` exactly as the agent does; the trace replays with
``jouleledger replay`` and serves as a bug report or a test fixture. ``--backend simulated`` records the
simulated node instead (for trying the format without a GPU).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import TextIO

from jouleledger.agent.main import build_source
from jouleledger.core.flags import positive_float, positive_int
from jouleledger.core.tracefile import dump_header, dump_sample
from jouleledger.hardware.base import BackendError
from jouleledger.kube import KUBELET_SOCKET

__all__ = ["add_arguments", "record", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="trace file to write ('-' for stdout)")
    parser.add_argument("--backend", choices=("nvml", "simulated"), default="nvml", help="what to record")
    parser.add_argument("--samples", type=positive_int, default=60, help="samples to record (default 60)")
    parser.add_argument("--interval-s", type=positive_float, default=1.0, help="seconds between samples (default 1)")
    parser.add_argument("--node-name", default="", help="this node's name (default: env NODE_NAME or hostname)")
    parser.add_argument("--kubelet-socket", default=KUBELET_SOCKET, help="kubelet PodResources gRPC socket")
    parser.add_argument("--proc-root", default="/proc", help="the host's /proc")
    parser.add_argument("--extra-gpu-resources", type=lambda v: tuple(x for x in v.split(",") if x), default=())
    parser.add_argument("--pod-metadata", choices=("api", "none"), default="api", help="pod UIDs/labels from the API")
    parser.add_argument("--seed", type=int, default=0, help="seed for --backend simulated")
    parser.add_argument("--gpus", type=positive_int, default=4, help="GPUs for --backend simulated")


def record(args: argparse.Namespace, out: list[str] | None = None) -> int:
    """Record ``args.samples`` samples; returns how many were written."""
    import os
    import socket

    args.node_name = args.node_name or os.environ.get("NODE_NAME") or socket.gethostname()
    args.trace = None
    stream = sys.stdout if str(args.out) == "-" else _open_out(args.out)
    try:
        source = build_source(args)
    except BaseException:
        if stream is not sys.stdout:
            stream.close()
        raise
    stop = threading.Event()
    written = 0
    try:
        stream.write(dump_header(source.header()) + "\n")
        next_at = time.monotonic()
        for _ in range(args.samples):
            sample = source.sample()
            if sample is None:
                break
            stream.write(dump_sample(sample) + "\n")
            stream.flush()
            written += 1
            if args.backend != "simulated":
                next_at += args.interval_s
                stop.wait(max(0.0, next_at - time.monotonic()))
    finally:
        source.close()
        if stream is not sys.stdout:
            stream.close()
    return written


def _open_out(path: Path) -> TextIO:
    try:
        return path.open("w", encoding="utf-8")
    except OSError as error:
        raise BackendError(f"--out {path}: cannot write there ({error.strerror or error})") from error


def run(args: argparse.Namespace) -> int:
    try:
        written = record(args)
    except (BackendError, ValueError) as error:
        print(f"jouleledger record: {error}", file=sys.stderr)
        return 1
    print(f"recorded {written} samples to {args.out}", file=sys.stderr)
    return 0
