"""The agent's per-sample pipeline: attribute (core.accounting), then count (core.ledger).

Shared by the live agent, ``replay`` and ``demo`` so that all three run exactly the same code.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jouleledger.core.accounting import IntervalResult, NodeAccountant
from jouleledger.core.integration import Baseline
from jouleledger.core.ledger import DEFAULT_RETENTION_S, LedgerStateError, PodCounters
from jouleledger.core.model import NodeHeader, Sample
from jouleledger.core.snapshot import LedgerSnapshot
from jouleledger.core.units import MAX_COUNTER_MJ, InvalidValueError, checked_float, checked_int

__all__ = ["Pipeline"]

STATE_VERSION = 2
READABLE_VERSIONS = (1, 2)  # 1: the ledger state before energy from power was counted apart


class Pipeline:
    """Attribution and cumulative counters for one node."""

    def __init__(
        self, header: NodeHeader, *, retention_s: float = DEFAULT_RETENTION_S, journaling: bool = True
    ) -> None:
        """``journaling``: whether :meth:`journal_entry` is called after every step (the agent with a checkpoint);
        without it the counters' change tracking is dropped every step instead of growing with every pod."""
        self.header = header
        self.accountant = NodeAccountant(header)
        self.ledger = PodCounters(header, retention_s)
        self.journaling = journaling

    def step(self, sample: Sample, *, pods_known: bool = True) -> IntervalResult:
        """Attribute ``sample``'s intervals and add them to the counters."""
        result = self.accountant.ingest(sample)
        self.ledger.apply(result, sample.pods, pods_known=pods_known)
        if not self.journaling:
            self.ledger.discard_changes()
        return result

    def snapshot(self) -> LedgerSnapshot:
        return self.ledger.snapshot(self.accountant.rejected)

    def to_state(self) -> dict[str, Any]:
        """Counters, baselines and rejection counts: all that a restart needs to neither lose nor double-count."""
        return {
            "version": STATE_VERSION,
            "ledger": self.ledger.to_state(),
            "baselines": self._baselines_state(),
            "rejected": [[uuid, reason, count] for (uuid, reason), count in self.accountant.rejected.items()],
        }

    def journal_entry(self) -> dict[str, Any]:
        """What changed since the last entry or full state (absolute values, idempotent), plus the baselines."""
        return {
            "ledger": self.ledger.drain_delta(),
            "baselines": self._baselines_state(),
            "rejected": [[uuid, reason, count] for (uuid, reason), count in self.accountant.rejected.items()],
        }

    def apply_journal_entry(self, entry: Mapping[str, Any]) -> None:
        """Fold in one :meth:`journal_entry` after :meth:`restore`; raises :class:`LedgerStateError`.

        The entry is validated whole first (baselines and rejections here, the counters by the ledger): a rejected
        entry changes nothing.
        """
        try:
            baselines, rejected = _load_baselines(entry["baselines"]), _load_rejected(entry["rejected"])
            self.ledger.apply_delta(entry["ledger"])
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            if isinstance(error, LedgerStateError):
                raise
            detail = error if isinstance(error, InvalidValueError) else repr(error)
            raise LedgerStateError(f"malformed journal entry: {detail}") from error
        self.accountant.restore(baselines, rejected)

    def _baselines_state(self) -> dict[str, Any]:
        return {
            uuid: {"t_s": base.t_s, "energy_mj": base.energy_mj, "power_mw": base.power_mw}
            for uuid, base in self.accountant.baselines.items()
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Resume from :meth:`to_state`; raises :class:`LedgerStateError` when the state cannot be trusted."""
        try:
            if state.get("version") not in READABLE_VERSIONS or isinstance(state.get("version"), bool):
                raise LedgerStateError(f"unsupported pipeline state version {state.get('version')!r}")
            ledger = PodCounters.from_state(self.header, self.ledger.retention_s, state["ledger"])
            baselines = _load_baselines(state["baselines"])
            rejected = _load_rejected(state["rejected"])
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            if isinstance(error, LedgerStateError):
                raise
            detail = error if isinstance(error, InvalidValueError) else repr(error)
            raise LedgerStateError(f"malformed pipeline state: {detail}") from error
        self.ledger = ledger
        self.accountant.restore(baselines, rejected)


def _load_baselines(data: Mapping[str, Any]) -> dict[str, Baseline]:
    return {
        str(uuid): Baseline(
            checked_float("t_s", base["t_s"], minimum=-1e300),
            None if base["energy_mj"] is None else checked_int("energy_mj", base["energy_mj"], maximum=MAX_COUNTER_MJ),
            None if base["power_mw"] is None else checked_int("power_mw", base["power_mw"], maximum=MAX_COUNTER_MJ),
        )
        for uuid, base in dict(data).items()
    }


def _load_rejected(data: Any) -> dict[tuple[str, str], int]:
    return {
        (str(uuid), str(reason)): checked_int("rejected", count, maximum=MAX_COUNTER_MJ) for uuid, reason, count in data
    }
