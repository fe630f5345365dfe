"""NVML read benchmark: library calls and CPU per read of an 8-GPU node, Joule Ledger next to CodeCarbon and Zeus.

Prints figures; asserts nothing. Every meter runs in this one process over the same fake ``libnvidia-ml`` (the
tests' ``tests/hardware/fake_nvml/fake_nvml.c``, compiled with gcc), through the real ``nvidia-ml-py`` bindings.
The fake counts the calls of each entry point, so calls per read are exact; CPU per read (process time, median)
includes the fake's own work per call (it re-reads its state file), which is the same for every meter: compare
the ratios, not the absolute times, with a real driver.

    python -m bench.nvml_read [--gpus 8] [--reads 2000]

CodeCarbon and Zeus are used for real where they are importable from ``.cache/bench-peers`` (``make bench``
installs them there without their dependencies; they are never part of this project): CodeCarbon's
``AllGPUDevices.get_delta`` (what its tracker calls every measurement) and Zeus's ``get_gpus()`` energy read per GPU
as ``ZeusMonitor`` does it at each window boundary (``supports_get_total_energy_consumption`` then
``get_total_energy_consumption``; the monitor itself needs pandas and a CPU/SoC probe). Where a peer cannot be
imported, its read pattern is reproduced with the same bindings (one ``nvmlDeviceGetTotalEnergyConsumption`` per
GPU for both; read from their sources) and the output says so.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.hardware.fake_nvml_build import STATE_ENV, build_fake_nvml, call_counter, install

from jouleledger.hardware.nvml import NvmlMeter

PEERS_DIR = Path(__file__).resolve().parent.parent / ".cache" / "bench-peers"


@dataclass(frozen=True, slots=True)
class Figures:
    name: str
    calls: list[int]
    cpu_us: list[float]
    note: str = ""

    @property
    def median_calls(self) -> float:
        return statistics.median(self.calls)

    @property
    def mean_calls(self) -> float:
        return statistics.fmean(self.calls)

    @property
    def median_cpu_us(self) -> float:
        return statistics.median(self.cpu_us)


def node_state(gpus: int) -> str:
    """``gpus`` H100s, each running one process with a utilisation sample."""
    lines = []
    for index in range(gpus):
        lines += [
            f"gpu GPU-{index:08x}-0000-1111-2222-333344445555 NVIDIA H100 80GB HBM3",
            f"energy {81_000_000 + index}",
            "power 312000",
            "limit 700000",
            f"proc {4000 + index}",
            f"util {4000 + index} 1000 60",
        ]
    return "\n".join(lines) + "\n"


def measure(name: str, read: Callable[[], object], library: ctypes.CDLL, reads: int, note: str = "") -> Figures:
    """Calls and CPU of each of ``reads`` reads, after 20 warm-up reads (baselines, caches, the first sizing)."""
    count = call_counter(library)
    for _ in range(20):
        read()
    calls: list[int] = []
    cpu_us: list[float] = []
    for _ in range(reads):
        library.fake_nvml_reset_calls()
        start = time.process_time_ns()
        read()
        cpu_us.append((time.process_time_ns() - start) / 1000)
        calls.append(int(count(None)))
    return Figures(name, calls, cpu_us, note)


def _stub_package(name: str, directory: Path) -> None:
    """Import ``name``'s submodules from ``directory`` without running its ``__init__`` (which pulls in the
    peer's whole dependency tree: pandas, a CPU probe...); only the GPU modules are needed."""
    module = types.ModuleType(name)
    module.__path__ = [str(directory)]
    sys.modules[name] = module


def codecarbon_read(pynvml: Any, gpus: int) -> tuple[Callable[[], object], str]:
    if (PEERS_DIR / "codecarbon").is_dir():
        try:
            _stub_package("codecarbon", PEERS_DIR / "codecarbon")
            gpu = importlib.import_module("codecarbon.core.gpu")
            units = importlib.import_module("codecarbon.core.units")
            if gpu.PYNVML_AVAILABLE:
                devices = gpu.AllGPUDevices()
                duration = units.Time.from_seconds(1.0)
                return lambda: devices.get_delta(duration), "CodeCarbon's own AllGPUDevices.get_delta"
        except Exception as error:  # a peer that does not import is reproduced, and the output says why
            reason = f"CodeCarbon not usable here ({type(error).__name__}: {error})"
        else:
            reason = "CodeCarbon did not initialise NVML"
    else:
        reason = "CodeCarbon not installed in .cache/bench-peers"
    handles = [pynvml.nvmlDeviceGetHandleByIndex(index) for index in range(gpus)]
    return lambda: [pynvml.nvmlDeviceGetTotalEnergyConsumption(h) for h in handles], f"reproduced: {reason}"


def zeus_read(pynvml: Any, gpus: int) -> tuple[Callable[[], object], str]:
    if (PEERS_DIR / "zeus").is_dir():
        try:
            _stub_package("zeus", PEERS_DIR / "zeus")
            _stub_package("zeus.device", PEERS_DIR / "zeus" / "device")
            logging.getLogger("zeus").setLevel(logging.ERROR)
            zeus_gpus = importlib.import_module("zeus.device.gpu").get_gpus()
            indices = list(range(len(zeus_gpus)))

            def read() -> object:
                # ZeusMonitor.begin_window / end_window, the GPU part
                return [
                    zeus_gpus.get_total_energy_consumption(index) / 1000.0
                    for index in indices
                    if zeus_gpus.supports_get_total_energy_consumption(index)
                ]

            return read, "Zeus's own get_gpus() energy read, as ZeusMonitor's window does it"
        except Exception as error:  # a peer that does not import is reproduced, and the output says why
            reason = f"Zeus not usable here ({type(error).__name__}: {error})"
    else:
        reason = "Zeus not installed in .cache/bench-peers"
    handles = [pynvml.nvmlDeviceGetHandleByIndex(index) for index in range(gpus)]
    return lambda: [pynvml.nvmlDeviceGetTotalEnergyConsumption(h) / 1000.0 for h in handles], f"reproduced: {reason}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, default=8, help="GPUs on the node (1-8, the fake's limit)")
    parser.add_argument("--reads", type=int, default=2000, help="measured reads per meter")
    args = parser.parse_args()
    if not 1 <= args.gpus <= 8:
        print(f"bench.nvml_read: --gpus must be 1 to 8, not {args.gpus}", file=sys.stderr)
        return 2
    gcc = shutil.which("gcc")
    if gcc is None:
        print("bench.nvml_read: gcc is not installed (it builds the fake libnvidia-ml)", file=sys.stderr)
        return 2
    import pynvml

    with tempfile.TemporaryDirectory() as tmp:
        library_path = Path(tmp) / "libnvidia-ml.so.1"
        failure = build_fake_nvml(gcc, library_path)
        if failure is not None:
            print(f"bench.nvml_read: building the fake NVML failed: {failure.strip()}", file=sys.stderr)
            return 2
        state = Path(tmp) / "state"
        state.write_text(node_state(args.gpus))
        os.environ[STATE_ENV] = str(state)
        library = ctypes.CDLL(str(library_path))
        install(pynvml, library)
        pynvml.nvmlInit()  # the peers initialise NVML at import; the bindings count references

        figures: list[Figures] = []
        all_gpus = None  # every GPU's processes, as before
        exclusive: frozenset[str] = frozenset()
        with NvmlMeter(refresh_every_reads=1) as meter:
            meter.gpus()
            figures.append(
                measure(
                    "Joule Ledger before (limit + processes every read)",
                    lambda: meter.read(all_gpus),
                    library,
                    args.reads,
                    "the previous read, plus one device count per read (refresh_every_reads=1)",
                )
            )
        with NvmlMeter() as meter:
            meter.gpus()
            after = measure(
                "Joule Ledger after, exclusive GPUs",
                lambda: meter.read(exclusive),
                library,
                args.reads,
                "processes_for=() as for GPUs with one kubelet holder each; limits + count every 60 reads",
            )
            figures.append(after)
            figures.append(
                measure(
                    "Joule Ledger after, every GPU shared",
                    lambda: meter.read(all_gpus),
                    library,
                    args.reads,
                    "processes and utilisation queried on every GPU",
                )
            )
        peers: list[Figures] = []
        for name, make in (("CodeCarbon", codecarbon_read), ("Zeus", zeus_read)):
            read, note = make(pynvml, args.gpus)
            peers.append(measure(name, read, library, args.reads, note))
        figures += peers
        pynvml.nvmlShutdown()

    print(f"NVML read benchmark: {args.gpus} GPUs, {args.reads} reads each, one fake libnvidia-ml, real bindings")
    for figure in figures:
        print(
            f"  {figure.name:<52} calls/read median {figure.median_calls:5.1f} (mean {figure.mean_calls:5.2f}, "
            f"{figure.median_calls / args.gpus:.2f}/GPU)  CPU/read median {figure.median_cpu_us:7.1f} us"
        )
        if figure.note:
            print(f"    {figure.note}")
    before = figures[0]
    print(
        f"  after vs before (exclusive GPUs): calls {after.median_calls / before.median_calls:.2f}x, "
        f"CPU {after.median_cpu_us / before.median_cpu_us:.2f}x"
    )
    for peer in peers:
        print(
            f"  Joule Ledger (exclusive) vs {peer.name}: calls {after.median_calls / peer.median_calls:.2f}x, "
            f"CPU {after.median_cpu_us / peer.median_cpu_us:.2f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
