"""Up to when the operator has durably folded each agent's finished pods: the ``?folded_until=`` it sends.

An agent keeps a finished pod's final totals in its exposition for its retention window (an hour), so that no
consumer misses them; a consumer that has folded them asks the agent to leave them out: ``/metrics?folded_until=T``
omits every pod record that finished at or before ``T`` (``T`` a finish time the consumer read from that agent).
Leaving a pod out is safe only once its final totals are **durable**: folded into its workload's account *and*
that account written to its footprint, so that an operator restart neither loses them nor counts them again.

:class:`FoldedUntil` keeps, per node, the largest safe ``T``:

- After a node's scrape is folded (:meth:`FoldedUntil.folded`), every record of that scrape whose totals are final
  is *pending*: each record of a pod name with a finish time (the agent exports one only when every record of the
  name finished), and each record of a re-created name but the newest (new energy goes to the newest; the older one
  finished at a time the exposition does not say). A record's totals are in its shares of the scrape's series.
- :meth:`FoldedUntil.advance` (after the pass's writes) drops the pending records that became durable
  (``persisted(series, pod uid)``, the caller's: the footprint that holds that share is written with it, or no
  footprint holds one) and moves ``T`` to the largest finish time of the node's latest folded scrape that is below
  the finish time of every record still pending (below all of them when such a record's finish time is unknown).
  ``T`` never goes back within one run of the agent's counters.
- ``T`` belongs to one run of the agent's counters: a scrape under another ``epoch`` forgets it (the new run's
  records all finished after it; none is sent until a scrape of the new run was folded).
- A pod left out is not gone: the agent still holds it. Its series miss from the scrapes and are eventually pruned
  (their watermarks leave the footprints); so every footprint, when written, stores the ``T`` of each node it has
  series on (:meth:`FoldedUntil.persisted_for`), and after a restart :meth:`FoldedUntil.restore` takes the largest
  per node. A footprint that stopped holding a left-out pod's watermark was written after the pod was left out,
  with a ``T`` that covers it: the restarted operator's first scrape leaves the pod out again instead of counting
  its totals a second time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from jouleledger.core.deltas import AgentScrape, SeriesKey

__all__ = ["FoldedUntil"]

Persisted = Callable[[SeriesKey, str], bool]
"""``(series, pod uid) -> whether the footprint holding that share is written with it (True when none holds it)``."""


@dataclass(slots=True)
class _Pending:
    finished_s: float  # the record's finish time, -inf when the exposition does not say it
    keys: tuple[SeriesKey, ...]  # the series that hold its shares


@dataclass(slots=True)
class _Node:
    epoch: str = ""
    until_s: float | None = None
    finish_times: list[float] = field(default_factory=list)  # of the latest folded scrape, above until_s
    pending: dict[str, _Pending] = field(default_factory=dict)  # pod uid -> final, not yet durable
    durable: set[str] = field(default_factory=set)  # pod uids final and durable, still exported


class FoldedUntil:
    """Per node: the ``folded_until`` value to send, and what it waits for (see the module docstring)."""

    def __init__(self) -> None:
        self._nodes: dict[str, _Node] = {}

    def value(self, node: str) -> float | None:
        """The ``folded_until`` to send to the agent of ``node`` (None: send none)."""
        state = self._nodes.get(node)
        return None if state is None else state.until_s

    def values(self, nodes: Iterable[str] | None = None) -> dict[str, float]:
        """Every node's ``folded_until`` (or those of ``nodes`` only), where there is one."""
        if nodes is None:
            return {node: state.until_s for node, state in self._nodes.items() if state.until_s is not None}
        return {node: until_s for node in nodes if (until_s := self.value(node)) is not None}

    def restore(self, node: str, epoch: str, until_s: float) -> None:
        """A value read back from a footprint (before the first scrape): the largest per node is kept."""
        if not math.isfinite(until_s):
            return
        state = self._nodes.setdefault(node, _Node())
        if state.until_s is None or until_s > state.until_s:
            state.until_s, state.epoch = until_s, epoch

    def persisted_for(self, nodes: Iterable[str]) -> dict[str, tuple[str, float]]:
        """``node -> (epoch, folded_until)`` of the given nodes, for a footprint to store."""
        stored: dict[str, tuple[str, float]] = {}
        for node in nodes:
            state = self._nodes.get(node)
            if state is not None and state.until_s is not None:
                stored[node] = (state.epoch, state.until_s)
        return stored

    def folded(self, scrape: AgentScrape) -> None:
        """A scrape of ``scrape.node`` was folded: its final records wait to be durable."""
        state = self._nodes.setdefault(scrape.node, _Node())
        if scrape.epoch and state.epoch and scrape.epoch != state.epoch:
            state.until_s = None  # another run of the agent's counters: nothing of the last one applies
            state.pending.clear()
            state.durable.clear()
        if scrape.epoch:
            state.epoch = scrape.epoch
        final: dict[str, float] = {}
        for name, identities in scrape.pods.items():
            finished_s = scrape.finished_unix_s.get(name)
            if finished_s is not None:
                only = len(identities) == 1
                for identity in identities:
                    final[identity.uid] = finished_s if only else -math.inf
            else:
                for identity in identities[:-1]:
                    final[identity.uid] = -math.inf
        if state.durable:
            state.durable.intersection_update(final)  # in place: most nodes have nothing durable to drop
        waiting = {uid for uid in final if uid not in state.durable}
        keys: dict[tuple[str, str], list[SeriesKey]] = {}
        if waiting:
            names = {name for name, identities in scrape.pods.items() if any(i.uid in waiting for i in identities)}
            for key in scrape.series:
                name = (key.namespace, key.pod)
                if name in names:
                    keys.setdefault(name, []).append(key)
        pending: dict[str, _Pending] = {}
        for name, identities in scrape.pods.items():
            for identity in identities:
                if identity.uid in waiting:
                    pending[identity.uid] = _Pending(final[identity.uid], tuple(keys.get(name, ())))
        state.pending = pending
        until = state.until_s
        finish_times = sorted({f for f in scrape.finished_unix_s.values() if until is None or f > until})
        if finish_times or state.finish_times:  # (an empty list stays the one the node has)
            state.finish_times = finish_times

    def advance(self, persisted: Persisted) -> None:
        """After the pass's writes: drop what became durable and move each node's value as far as is safe."""
        for state in self._nodes.values():
            if not state.finish_times:
                continue
            for uid, record in list(state.pending.items()):
                if all(persisted(key, uid) for key in record.keys):
                    del state.pending[uid]
                    state.durable.add(uid)
            blocked_s = min((record.finished_s for record in state.pending.values()), default=math.inf)
            best = max((f for f in state.finish_times if f < blocked_s), default=None)
            if best is not None and (state.until_s is None or best > state.until_s):
                state.until_s = best
                state.finish_times = [f for f in state.finish_times if f > best]

    def restored_from(self, stored: Mapping[str, tuple[str, float]]) -> None:
        """:meth:`restore` every ``node -> (epoch, folded_until)`` of one footprint."""
        for node, (epoch, until_s) in stored.items():
            self.restore(node, epoch, until_s)
