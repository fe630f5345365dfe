"""Turns a node's stream of samples into attributed intervals: baselines, measurement and split per GPU.

:class:`NodeAccountant` is the agent's pipeline in pure form. It keeps each GPU's last reading as the baseline
of its next interval (every reading that was read becomes a baseline, also one whose delta was rejected; a GPU
missing from samples has its next reading cover the whole gap) and counts what it could not trust.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from jouleledger.core.attribution import GpuSplit, HolderIndex, split_gpu
from jouleledger.core.integration import Baseline, Measurement, measure, power_rejected
from jouleledger.core.model import GpuInfo, NodeHeader, Sample

__all__ = ["GpuInterval", "IntervalResult", "NodeAccountant"]

UNKNOWN_GPU = "unknown_gpu"
TIME_NOT_INCREASING = "time_not_increasing"


@dataclass(frozen=True, slots=True)
class GpuInterval:
    """One GPU's interval: how much it used, how that was measured, and who it went to."""

    gpu: GpuInfo
    measurement: Measurement
    split: GpuSplit


@dataclass(frozen=True, slots=True)
class IntervalResult:
    """Everything attributed by one sample (the intervals that end at ``t_s``)."""

    t_s: float
    grid_g_per_kwh: float | None
    gpus: tuple[GpuInterval, ...]
    power_mw: Mapping[str, int]


class NodeAccountant:
    """Attributes each sample's GPU energy to pods by the attribution rules (docs/attribution.md)."""

    def __init__(self, header: NodeHeader) -> None:
        self.header = header
        self._gpus: dict[str, GpuInfo] = {gpu.uuid: gpu for gpu in header.gpus}
        self._baselines: dict[str, Baseline] = {}
        self.rejected: Counter[tuple[str, str]] = Counter()
        self._index: HolderIndex | None = None

    @property
    def baselines(self) -> Mapping[str, Baseline]:
        """Each GPU's last reading: the start of its next interval (saved in checkpoints)."""
        return dict(self._baselines)

    def restore(self, baselines: Mapping[str, Baseline], rejected: Mapping[tuple[str, str], int]) -> None:
        """Resume from a checkpoint: the next reading of each GPU closes the interval since its baseline."""
        self._baselines = {uuid: base for uuid, base in baselines.items() if uuid in self._gpus}
        self.rejected = Counter(rejected)

    def ingest(self, sample: Sample) -> IntervalResult:
        """Measure and split every GPU interval that ends at ``sample.t_s``."""
        index: HolderIndex | None = None
        intervals: list[GpuInterval] = []
        power_mw: dict[str, int] = {}
        for reading in sample.gpus:
            gpu = self._gpus.get(reading.uuid)
            if gpu is None:
                self.rejected[(reading.uuid, UNKNOWN_GPU)] += 1
                continue
            power = reading.power_mw
            if power is not None:
                reason = power_rejected(gpu, power)
                if reason is not None:  # counted, never integrated nor shown; the counter reading still counts
                    self.rejected[(gpu.uuid, reason.value)] += 1
                    power = None
                else:
                    power_mw[gpu.uuid] = power
            current = Baseline(sample.t_s, reading.energy_mj, power)
            previous = self._baselines.get(gpu.uuid)
            self._baselines[gpu.uuid] = current
            if previous is None:
                continue
            if not sample.t_s > previous.t_s:
                self.rejected[(gpu.uuid, TIME_NOT_INCREASING)] += 1
                continue
            measurement = measure(gpu, previous, current)
            for reason in measurement.rejected:
                self.rejected[(gpu.uuid, reason.value)] += 1
            if index is None:
                index = self._holder_index(sample)
            split = split_gpu(gpu, measurement.delta_mj, reading, index)
            intervals.append(GpuInterval(gpu, measurement, split))
        return IntervalResult(sample.t_s, sample.grid_g_per_kwh, tuple(intervals), power_mw)

    def _holder_index(self, sample: Sample) -> HolderIndex:
        # Sources that keep the same pods tuple while nothing changes (the simulated node) skip the rebuild.
        if self._index is None or self._index.pods is not sample.pods:
            self._index = HolderIndex(sample.pods, self._index)
        return self._index
