"""Shard ownership (core/sharding.py): every key has exactly one owner for any shard count, the assignment is
stable (same process or not), and the shards' parts of one agent's deltas partition it."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jouleledger.core.deltas import PodDelta, PodIdentity, ScrapeDeltas, SeriesKey, SeriesValue
from jouleledger.core.sharding import UNSHARDED, ShardSpec, owned_deltas, shard_from_pod_name, shard_of

UIDS = st.uuids().map(str) | st.text(min_size=0, max_size=40)
TOTALS = st.integers(min_value=1, max_value=64)


@given(UIDS, TOTALS)
def test_every_uid_has_exactly_one_owner(uid: str, total: int) -> None:
    owners = [shard for shard in range(total) if ShardSpec(shard, total).owns(uid)]
    assert owners == [shard_of(uid, total)]


@given(UIDS, TOTALS)
def test_the_assignment_is_stable(uid: str, total: int) -> None:
    assert shard_of(uid, total) == shard_of(uid, total)
    assert 0 <= shard_of(uid, total) < total


def test_the_assignment_is_the_same_in_another_process() -> None:
    # Python's hash() is salted per process: a shard in another pod must compute the same owner.
    uids = [f"uid-{index}" for index in range(50)]
    here = [shard_of(uid, 7) for uid in uids]
    code = f"from jouleledger.core.sharding import shard_of;print([shard_of(u, 7) for u in {uids!r}])"
    there = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert there.strip() == repr(here)


def test_the_assignment_spreads_keys_over_the_shards() -> None:
    counts = [0, 0, 0, 0]
    for index in range(4000):
        counts[shard_of(f"00000000-0000-4000-8000-{index:012d}", 4)] += 1
    assert min(counts) > 800  # a hash-mod, not everything on one shard


def test_one_shard_owns_everything() -> None:
    assert UNSHARDED.owns("anything")
    assert not UNSHARDED.sharded


@pytest.mark.parametrize(("shard", "total"), [(-1, 2), (2, 2), (0, 0)])
def test_a_shard_outside_its_range_is_refused(shard: int, total: int) -> None:
    with pytest.raises(ValueError, match="shard"):
        ShardSpec(shard, total)


@pytest.mark.parametrize(("name", "ordinal"), [("jouleledger-operator-0", 0), ("op-12", 12), ("a-b-3\n", 3)])
def test_the_ordinal_of_a_statefulset_pod_name(name: str, ordinal: int) -> None:
    assert shard_from_pod_name(name) == ordinal


@pytest.mark.parametrize("name", ["", "operator", "operator-x", "operator-1a"])
def test_a_pod_name_without_an_ordinal_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="ordinal"):
        shard_from_pod_name(name)


def _delta(pod_uid: str, workload: str, energy_mj: int) -> PodDelta:
    key = SeriesKey("n1", "ml", f"p-{pod_uid}", "c", "GPU-0")
    pod = PodIdentity("ml", f"p-{pod_uid}", pod_uid, labels={"workload": workload})
    return PodDelta(key, pod, energy_mj, 1.0, "delta", SeriesValue(energy_mj, 1.0))


@given(
    st.lists(st.tuples(st.text(max_size=8), st.integers(0, 10**9)), max_size=30),
    st.integers(0, 10**9),
    st.integers(min_value=1, max_value=8),
)
def test_the_shards_parts_of_an_agents_deltas_partition_it(
    pods: list[tuple[str, int]], unallocated_mj: int, total: int
) -> None:
    deltas = ScrapeDeltas(
        node="n1",
        first=False,
        pods=tuple(_delta(str(index), workload, energy) for index, (workload, energy) in enumerate(pods)),
        unallocated_mj={"GPU-0": unallocated_mj},
    )
    parts = [owned_deltas(deltas, lambda pod: pod.labels["workload"], ShardSpec(s, total)) for s in range(total)]
    seen = sorted(delta.pod.uid for part in parts for delta in part.pods)
    assert seen == sorted(delta.pod.uid for delta in deltas.pods)  # every pod delta in exactly one part
    assert sum(d.energy_mj for part in parts for d in part.pods) == sum(d.energy_mj for d in deltas.pods)
    assert sum(sum(part.unallocated_mj.values()) for part in parts) == unallocated_mj
    for part in parts:  # a workload's pods all go to one shard
        for delta in part.pods:
            assert shard_of(delta.pod.labels["workload"], total) == parts.index(part)
