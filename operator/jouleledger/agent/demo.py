"""``jouleledger demo``: the real agent pipeline on a simulated GPU node, no GPU and no cluster needed.

It runs the agent (attribution, counters, ``/metrics`` on localhost) over a seeded simulated node with
exclusive, time-sliced and MIG pods that come and go, compressing ``--duration-s`` of simulated time into a few
seconds, then prints the footprint per team, namespace and pod with idle (unallocated) energy as its own row.
Everything it shows is simulated and labelled so.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time

from jouleledger.agent.main import serve_metrics
from jouleledger.agent.report import add_price_arguments, format_report, pricing_from_args
from jouleledger.agent.runner import AgentRunner
from jouleledger.core.carbon import CarbonRates, CarbonTally
from jouleledger.core.contract import AGENT_PORT
from jouleledger.core.flags import non_negative_float, port_number, positive_float, positive_int
from jouleledger.core.units import InvalidValueError
from jouleledger.hardware.simulated import SimulatedNode

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gpus", type=positive_int, default=4, help="GPUs of the simulated node (default 4)")
    parser.add_argument("--seed", type=int, default=7, help="simulation seed (default 7)")
    parser.add_argument(
        "--duration-s", type=positive_float, default=1800.0, help="simulated seconds to run (default 1800 = 30 min)"
    )
    parser.add_argument("--interval-s", type=positive_float, default=5.0, help="simulated seconds per tick (default 5)")
    parser.add_argument(
        "--wall-s", type=non_negative_float, default=3.0, help="real seconds to spread the run over (default 3)"
    )
    parser.add_argument(
        "--port", type=port_number, default=AGENT_PORT, help="serve /metrics on 127.0.0.1:PORT (0: do not serve)"
    )
    parser.add_argument(
        "--hold-s", type=non_negative_float, default=0.0, help="keep serving /metrics this long after the run"
    )
    parser.add_argument("--pue", type=float, default=1.2, help="power usage effectiveness (default 1.2)")
    parser.add_argument(
        "--embodied-g-per-gpu-hour", type=float, default=25.0, help="embodied carbon per GPU-hour (default 25)"
    )
    add_price_arguments(parser)


def run(args: argparse.Namespace) -> int:
    try:
        rates = CarbonRates(args.pue, 0.0, args.embodied_g_per_gpu_hour)
        pricing = pricing_from_args(args, args.pue)
        node = SimulatedNode(
            node="demo-gpu-node",
            gpus=args.gpus,
            seed=args.seed,
            interval_s=args.interval_s,
            start_s=8 * 3600.0,  # 08:00 simulated: the grid intensity follows the simulated day
            mean_lifetime_s=600.0,
            mixed_models=args.gpus >= 2,
        )
    except (ValueError, InvalidValueError) as error:
        print(f"jouleledger demo: {error}", file=sys.stderr)
        return 2
    tally = CarbonTally(rates)
    runner = AgentRunner(node, backend="simulated", interval_s=args.interval_s, retention_s=1e9, on_interval=tally.add)
    try:
        server = serve_metrics(runner, "127.0.0.1", args.port)
    except OSError as error:
        print(f"jouleledger demo: cannot serve on 127.0.0.1:{args.port} ({error}); use --port", file=sys.stderr)
        return 1
    if server is not None:
        print(f"SIMULATED node: serving /metrics on http://127.0.0.1:{server.port}/metrics while it runs", flush=True)
    ticks = max(2, int(args.duration_s / args.interval_s) + 1)
    pause_s = args.wall_s / ticks
    stop = threading.Event()
    try:
        for _ in range(ticks):
            runner.tick()
            if pause_s > 0:
                stop.wait(pause_s)
        snapshot = runner.view().ledger
        print(
            f"\nJoule Ledger demo: {ticks - 1} intervals of {args.interval_s:g} s on a SIMULATED node "
            f"(seed {args.seed}, PUE {args.pue:g}, embodied {args.embodied_g_per_gpu_hour:g} g/GPU-hour, "
            "grid intensity varying over the simulated day)\n"
        )
        sys.stdout.write(format_report(snapshot, tally.grams, unallocated_g=tally.unallocated_g, pricing=pricing))
        if server is not None and args.hold_s > 0:
            print(f"holding /metrics for {args.hold_s:g} s", flush=True)
            time.sleep(args.hold_s)
    finally:
        if server is not None:
            server.stop()
    return 0
