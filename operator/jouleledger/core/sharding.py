"""Which operator shard owns which workload: a stable hash-mod of a stable key, as kube-state-metrics shards.

With ``--total-shards M`` each of M operator processes (``--shard 0`` .. ``M-1``, usually a StatefulSet's pod
ordinals) accounts and writes only the workloads it owns: the owner of a workload is
``sha256(workload uid) mod M``. A workload's ``WorkloadFootprint`` and its Job annotation therefore have exactly
one writer, with no coordination between the shards: the assignment depends only on the UID and M, never on time,
on the process (Python's ``hash()`` is salted per process, so it is not used) or on which shards are up.

Energy that belongs to no workload (a node's unallocated and idle energy) is owned by the shard of the node name, so
the shards' totals add up to exactly one unsharded operator's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from jouleledger.core.deltas import PodIdentity, ScrapeDeltas

__all__ = ["UNSHARDED", "ShardSpec", "owned_deltas", "shard_from_pod_name", "shard_of"]

_ORDINAL: Final = re.compile(r"-(\d+)$")


def shard_of(key: str, total_shards: int) -> int:
    """The shard (``0 .. total_shards-1``) that owns ``key``; the same for every process and every run."""
    if total_shards < 1:
        raise ValueError(f"total_shards must be at least 1, got {total_shards}")
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % total_shards


@dataclass(frozen=True, slots=True)
class ShardSpec:
    """This process's shard: ``shard`` of ``total`` (``0`` of ``1``: one operator owns everything)."""

    shard: int = 0
    total: int = 1

    def __post_init__(self) -> None:
        if self.total < 1:
            raise ValueError(f"--total-shards must be at least 1, got {self.total}")
        if not 0 <= self.shard < self.total:
            raise ValueError(f"--shard must be in 0..{self.total - 1} (--total-shards {self.total}), got {self.shard}")

    @property
    def sharded(self) -> bool:
        return self.total > 1

    def owns(self, key: str) -> bool:
        """Whether this shard owns ``key`` (a workload UID, or a node name for energy of no workload)."""
        return self.total == 1 or shard_of(key, self.total) == self.shard


UNSHARDED: Final = ShardSpec()


def shard_from_pod_name(pod_name: str) -> int:
    """The ordinal of a StatefulSet pod name (``jouleledger-operator-3`` -> 3)."""
    match = _ORDINAL.search(pod_name.strip())
    if match is None:
        raise ValueError(f"pod name {pod_name!r} does not end in a StatefulSet ordinal (-N)")
    return int(match.group(1))


def owned_deltas(deltas: ScrapeDeltas, workload_uid_of: Callable[[PodIdentity], str], spec: ShardSpec) -> ScrapeDeltas:
    """The part of one agent's deltas that ``spec`` accounts: the pods of the workloads it owns, and the node's
    unallocated energy when it owns the node. Every shard observes every series (its baselines stay exact); the
    shards' parts partition the deltas, so together they fold exactly what one unsharded operator folds."""
    if not spec.sharded:
        return deltas
    pods = tuple(delta for delta in deltas.pods if spec.owns(workload_uid_of(delta.pod)))
    unallocated = deltas.unallocated_mj if spec.owns(deltas.node) else {}
    return dataclasses.replace(deltas, pods=pods, unallocated_mj=unallocated)
