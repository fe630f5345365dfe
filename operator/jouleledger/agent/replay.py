"""``jouleledger replay TRACE``: the agent pipeline over a recorded trace, with per-pod carbon.

Prints ``{"node", "measured_mj", "unallocated_mj", "pods": [...], "gpus": [...]}`` with ``--json``
(docs/attribution.md), or a readable table otherwise. Carbon per interval uses that interval's ``grid_g_per_kwh``
where the trace has one and ``--intensity-g-per-kwh`` elsewhere.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from typing import Any

from jouleledger.agent.pipeline import Pipeline
from jouleledger.agent.report import Pricing, add_price_arguments, pricing_from_args
from jouleledger.core.carbon import CarbonRates, CarbonTally
from jouleledger.core.snapshot import LedgerSnapshot
from jouleledger.core.tracefile import TraceError
from jouleledger.core.units import InvalidValueError
from jouleledger.hardware.base import BackendError
from jouleledger.hardware.replay import ReplaySource

__all__ = ["ReplayReport", "add_arguments", "replay", "run"]


@dataclass(frozen=True, slots=True)
class ReplayReport:
    """The outcome of replaying a trace: the final counters and per-pod carbon (grams)."""

    snapshot: LedgerSnapshot
    carbon_g: dict[str, float]
    intervals: int
    unallocated_carbon_g: float = 0.0  # operational grams of the idle (unallocated) energy
    pricing: Pricing = field(default_factory=Pricing)

    def to_json(self) -> dict[str, Any]:
        energy: dict[str, int] = {}
        from_power: dict[str, int] = {}
        gpu_seconds: dict[str, float] = {}
        for device in self.snapshot.devices:
            energy[device.pod_key] = energy.get(device.pod_key, 0) + device.energy_mj
            from_power[device.pod_key] = from_power.get(device.pod_key, 0) + device.energy_from_power_mj
            gpu_seconds[device.pod_key] = gpu_seconds.get(device.pod_key, 0.0) + device.gpu_seconds
        cost = self.pricing.cost
        return {
            "node": self.snapshot.node,
            "measured_mj": self.snapshot.measured_mj,
            "unallocated_mj": self.snapshot.unallocated_mj,
            "unallocated_carbon_g": self.unallocated_carbon_g,
            "unallocated_cost": cost(self.snapshot.unallocated_mj),
            "price_per_kwh": self.pricing.price_per_kwh,
            "currency": self.pricing.currency or None,
            "pods": [
                {
                    "namespace": pod.namespace,
                    "name": pod.name,
                    "uid": pod.uid,
                    "energy_mj": energy.get(key, 0),
                    "energy_from_power_mj": from_power.get(key, 0),
                    "gpu_seconds": gpu_seconds.get(key, 0.0),
                    "carbon_g": self.carbon_g.get(key, 0.0),
                    "cost": cost(energy.get(key, 0)),
                }
                for key, pod in self.snapshot.pods.items()
            ],
            "gpus": [
                {
                    "uuid": gpu.uuid,
                    "measured_mj": gpu.measured_mj,
                    "unallocated_mj": gpu.unallocated_mj,
                    "energy_from_power_mj": gpu.energy_from_power_mj,
                }
                for gpu in self.snapshot.gpus
            ],
        }


def replay(source: ReplaySource, rates: CarbonRates, pricing: Pricing | None = None) -> ReplayReport:
    """Run the agent pipeline over every sample of ``source``; pods are never expired during a replay."""
    pipeline = Pipeline(source.header(), retention_s=math.inf, journaling=False)
    tally = CarbonTally(rates)
    intervals = 0
    for sample in source:
        result = pipeline.step(sample)
        tally.add(result)
        intervals += len(result.gpus)
    return ReplayReport(
        pipeline.snapshot(), tally.grams, intervals, tally.unallocated_g, pricing or Pricing(pue=rates.pue)
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("trace", help="JSONL trace, version 1 (format: docs/trace-format.md); '-' reads stdin")
    parser.add_argument("--json", action="store_true", help="print the machine-readable report")
    parser.add_argument("--pue", type=float, default=1.0, help="power usage effectiveness (default 1.0)")
    parser.add_argument(
        "--intensity-g-per-kwh",
        type=float,
        default=0.0,
        help="grid intensity for intervals without grid_g_per_kwh in the trace (default 0)",
    )
    parser.add_argument(
        "--embodied-g-per-gpu-hour", type=float, default=0.0, help="embodied carbon per GPU-hour (default 0)"
    )
    add_price_arguments(parser)


def run(args: argparse.Namespace) -> int:
    try:
        rates = CarbonRates(args.pue, args.intensity_g_per_kwh, args.embodied_g_per_gpu_hour)
        pricing = pricing_from_args(args, args.pue)
    except (InvalidValueError, ValueError) as error:
        print(f"jouleledger replay: invalid option: {error}", file=sys.stderr)
        return 2
    try:
        source = ReplaySource(args.trace)
        try:
            report = replay(source, rates, pricing)
        finally:
            source.close()
    except (TraceError, BackendError) as error:
        print(f"jouleledger replay: {args.trace}: {error}", file=sys.stderr)
        return 1
    if args.json:
        try:
            text = json.dumps(report.to_json(), indent=2, allow_nan=False)
        except ValueError:
            print(
                f"jouleledger replay: {args.trace}: a result is not a finite number (carbon overflows with "
                f"--embodied-g-per-gpu-hour {args.embodied_g_per_gpu_hour:g}?)",
                file=sys.stderr,
            )
            return 1
        sys.stdout.writelines(text.splitlines(keepends=True))
        sys.stdout.write("\n")
        return 0
    from jouleledger.agent.report import format_report

    # Names come from the trace: a lone surrogate or other unencodable text is shown escaped, never a crash.
    text = format_report(
        report.snapshot, report.carbon_g, unallocated_g=report.unallocated_carbon_g, pricing=report.pricing
    )
    sys.stdout.write(
        text.encode(sys.stdout.encoding or "utf-8", "backslashreplace").decode(sys.stdout.encoding or "utf-8")
    )
    return 0
