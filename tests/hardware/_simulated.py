"""Helpers for the simulated-node tests: collecting samples and checking device ids against the header."""

from __future__ import annotations

from dataclasses import dataclass

from jouleledger.core.model import NodeHeader, Sample
from jouleledger.hardware.simulated import SimulatedNode


def take(node: SimulatedNode, count: int) -> list[Sample]:
    """The next ``count`` samples (the node must not run out)."""
    samples = []
    for _ in range(count):
        sample = node.sample()
        assert sample is not None
        samples.append(sample)
    return samples


@dataclass(frozen=True)
class Devices:
    """Which device ids a header allows, and the physical GPU each belongs to."""

    whole: frozenset[str]  # non-MIG GPU uuids (exclusive or time-sliced)
    mig_gpus: frozenset[str]  # physical GPUs in MIG mode
    mig: dict[str, str]  # MIG instance uuid -> physical GPU uuid

    @classmethod
    def of(cls, header: NodeHeader) -> Devices:
        return cls(
            whole=frozenset(gpu.uuid for gpu in header.gpus if not gpu.mig),
            mig_gpus=frozenset(gpu.uuid for gpu in header.gpus if gpu.mig),
            mig={instance.uuid: gpu.uuid for gpu in header.gpus for instance in gpu.mig},
        )

    def gpu_of(self, device_id: str) -> str:
        """The physical GPU of a kubelet device id; raises AssertionError for an id not in the header."""
        if device_id in self.mig:
            return self.mig[device_id]
        base, sep, replica = device_id.partition("::")
        assert base in self.whole, f"{device_id} names no non-MIG GPU of the header"
        if sep:
            assert replica.isdigit(), device_id
        return base
