"""The agents' counters as a Prometheus instant query returns them, turned back into each agent's own samples.

The Prometheus accounting source (``--source prometheus``) asks the Prometheus HTTP API (or Thanos Querier, Mimir)
for the latest value of every agent series the ledger reads, in one instant query (:func:`agent_query`), and
feeds :func:`~jouleledger.core.deltas.parse_agent_samples` with exactly the ``(name, labels, value)`` samples a
direct scrape of that agent would have produced, grouped by node (:func:`samples_by_node`). Everything after that
is the direct mode's code: epochs, resets, regressions, watermarks, and completion waiting for each node's last
tick (the ``jouleledger_agent_last_tick_timestamp_seconds`` Prometheus holds).

Prometheus adds target labels (``job``, ``instance``, ...); they are dropped. When the scrape job does not honour
the agent's labels, Prometheus renames a clashing agent label ``x`` to ``exported_x``: the agent's value wins back.
Float64 holds the agents' counters exactly (joules with millijoule resolution far beyond any realistic total), and
Prometheus' JSON writes each value as the shortest decimal that reads back to the same float64.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Container, Iterable, Mapping
from typing import Final

from jouleledger.core import contract
from jouleledger.core.deltas import (
    AGENT_INFO_SAMPLE,
    AGENT_TICKS_SAMPLE,
    GPU_ENERGY_SAMPLE,
    GPU_UNALLOCATED_SAMPLE,
    POD_ENERGY_SAMPLE,
    POD_FROM_POWER_SAMPLE,
    POD_GPU_SECONDS_SAMPLE,
    POD_INFO_SAMPLE,
    Sample,
)
from jouleledger.core.memo import SameObjectMemo

__all__ = [
    "AGENT_SAMPLE_NAMES",
    "TARGET_LABELS",
    "RegroupMemo",
    "agent_query",
    "node_matcher",
    "samples_by_node",
]

AGENT_SAMPLE_NAMES: Final = (
    AGENT_INFO_SAMPLE,
    contract.AGENT_LAST_TICK,
    AGENT_TICKS_SAMPLE,
    POD_INFO_SAMPLE,
    POD_ENERGY_SAMPLE,
    POD_GPU_SECONDS_SAMPLE,
    POD_FROM_POWER_SAMPLE,
    contract.POD_FINISHED,
    GPU_ENERGY_SAMPLE,
    GPU_UNALLOCATED_SAMPLE,
    contract.GPU_POWER_LIMIT,
)
"""Every sample the ledger reads from an agent (the rest of an agent's exposition is not queried)."""

TARGET_LABELS: Final = frozenset({"job", "instance", "endpoint", "service", "container_port", "prometheus_replica"})
"""Labels that Prometheus and its operators attach to scraped series; never part of an agent's own samples."""

_EXPORTED: Final = "exported_"
_MATCHER: Final = re.compile(r'^\s*[a-zA-Z_][a-zA-Z0-9_]*\s*(=|!=|=~|!~)\s*"(?:[^"\\]|\\.)*"\s*$')


def agent_query(selector: str = "", nodes: Iterable[str] | None = None) -> str:
    """The instant query of every agent sample; ``selector`` adds matchers (``job="jouleledger-agent"``); ``nodes``
    (a completion read's) asks for those nodes' agents only (:func:`node_matcher`)."""
    matchers = [part for part in (selector.strip().strip(","),) if part]
    for part in _split(matchers[0] if matchers else ""):
        if not _MATCHER.match(part):
            raise ValueError(f"--prometheus-selector: not a label matcher: {part.strip()!r}")
    names = "|".join(re.escape(name) for name in AGENT_SAMPLE_NAMES)
    if nodes is not None:
        matchers.append(node_matcher(nodes))
    return "{" + ",".join([f'__name__=~"{names}"', *matchers]) + "}"


_NODE_NAME: Final = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


def node_matcher(nodes: Iterable[str]) -> str:
    """``node=~"..."`` matching exactly ``nodes`` (Kubernetes node names: lower-case letters, digits, ``-`` and
    ``.``; anything else is refused rather than written into a query)."""
    names = sorted(set(nodes))
    if not names:
        raise ValueError("a node matcher needs at least one node")
    for name in names:
        if len(name) > 253 or not _NODE_NAME.match(name):
            raise ValueError(f"not a Kubernetes node name: {name!r}")
    # A "." is the only regular-expression character a node name holds; in the query's string its backslash is
    # written twice.
    return 'node=~"' + "|".join(name.replace(".", "\\\\.") for name in names) + '"'


def _split(selector: str) -> list[str]:
    parts: list[str] = []
    current = ""
    quoted = escaped = False
    for char in selector:
        if char == "," and not quoted:
            parts.append(current)
            current = ""
            continue
        current += char
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
    if current.strip():
        parts.append(current)
    return parts


def _agent_labels(labels: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    name = labels.get("__name__", "")
    own: dict[str, str] = {}
    for key, value in labels.items():
        if key == "__name__" or key in TARGET_LABELS:
            continue
        if key.startswith(_EXPORTED):
            own[key[len(_EXPORTED) :]] = value  # the agent's own value of a label the target also has
        else:
            own.setdefault(key, value)
    return name, own


_FIRST: Final = operator.itemgetter(0)
_NODE: Final = operator.itemgetter(2)
_ORDER: Final = {name: index for index, name in enumerate(AGENT_SAMPLE_NAMES)}

_Regrouped = tuple[str, dict[str, str], str, tuple[int, str]]
"""What one series' labels become: ``(sample name, the agent's labels, node, sort key)``; the key is the sample's
place in :data:`AGENT_SAMPLE_NAMES`, then its sorted labels as one string (NUL-separated: one string comparison
instead of a list of pairs). The node is ``""`` for a series no agent exports (another name, or no ``node``)."""

_Keyed = tuple[tuple[int, bool, str], int, str, dict[str, str]]
"""One series of a node being ordered: its sort key (with whether its pod exists), its place in the answer, its
sample name and agent labels."""


class _NodeOrder:
    """How one node's series were ordered at the previous pass: the label mappings as they arrived, the UIDs of
    its ``pod_info`` series (in order) and whether each pod existed, and the order itself (each series' place in
    the answer, sample name and agent labels)."""

    __slots__ = ("live", "raws", "steps", "uids")

    def __init__(self, raws: list[Mapping[str, str]], keyed: list[_Keyed]) -> None:
        self.raws = raws
        self.steps = [(index, name, labels) for _, index, name, labels in keyed]
        self.uids = [labels.get("uid", "") for _, _, name, labels in keyed if name == POD_INFO_SAMPLE]
        self.live = [key[1] for key, _, name, _ in keyed if name == POD_INFO_SAMPLE]


class RegroupMemo:
    """What :func:`samples_by_node` made of each label mapping of the previous answer, for a client that returns
    the same read-only mapping for an unchanged series (:mod:`jouleledger.promapi`; see
    :class:`~jouleledger.core.memo.SameObjectMemo`), and each node's order. The agent labels it hands out are then
    the same objects every pass too, which the agent-sample parser's memo builds on."""

    __slots__ = ("entries", "orders")

    def __init__(self) -> None:
        self.entries: SameObjectMemo[_Regrouped] = SameObjectMemo()
        self.orders: dict[str, _NodeOrder] = {}


def _regrouped(raw_labels: Mapping[str, str]) -> _Regrouped:
    name, labels = _agent_labels(raw_labels)
    ordered = "\0".join(f"{key}\0{value}" for key, value in sorted(labels.items()))
    node = labels.get("node", "") if name in _ORDER else ""
    return name, labels, node, (_ORDER.get(name, -1), ordered)


def samples_by_node(
    result: Iterable[tuple[Mapping[str, str], float]],
    memo: RegroupMemo | None = None,
    *,
    live_pods: Container[str] = (),
) -> dict[str, list[Sample]]:
    """The vector of :func:`agent_query` as each node's agent samples (``node`` label; series without one are
    dropped: no agent exports them). Series are ordered by name, then labels, except that the ``pod_info`` of a pod
    in ``live_pods`` (UIDs of the pods that exist now) comes after those of pods that do not.

    That order is what the agent-sample parser reads as "oldest first" among identities of one name: new energy
    of a series goes to its newest pod. An agent writes a re-created pod's records in the order it first saw them;
    Prometheus keeps no order, and of two pods of one name on a node only the re-created one can still exist.

    With ``memo``, a node whose series arrive as the same label mappings in the same order as at the previous
    pass, with the same of its pods existing, takes that pass's order without sorting again."""
    if memo is None:
        memo = RegroupMemo()
    entries, orders = memo.entries, memo.orders
    items = result if isinstance(result, list) else list(result)
    groups: dict[str, list[tuple[Mapping[str, str], float]]] = {}
    for item, node in zip(items, map(_NODE, entries.derive_all(map(_FIRST, items), _regrouped)), strict=True):
        if not node:
            continue
        group = groups.get(node)
        if group is None:
            groups[node] = [item]
        else:
            group.append(item)
    by_node: dict[str, list[Sample]] = {}
    kept: dict[str, _NodeOrder] = {}
    for node, group in groups.items():
        raws = list(map(_FIRST, group))
        known = orders.get(node)
        if known is not None and known.raws == raws and [uid in live_pods for uid in known.uids] == known.live:
            kept[node] = known
            by_node[node] = [(name, labels, group[index][1]) for index, name, labels in known.steps]
            continue
        keyed: list[_Keyed] = []
        for index, raw_labels in enumerate(raws):
            name, labels, _, (rank, ordered) = entries.derive(raw_labels, _regrouped)
            live = name == POD_INFO_SAMPLE and labels.get("uid", "") in live_pods
            keyed.append(((rank, live, ordered), index, name, labels))
        keyed.sort(key=_FIRST)
        kept[node] = _NodeOrder(raws, keyed)
        by_node[node] = [(name, labels, group[index][1]) for _, index, name, labels in keyed]
    entries.turn()
    memo.orders = kept
    return by_node
