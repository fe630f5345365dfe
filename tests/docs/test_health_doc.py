"""The agent's ``/healthz`` details are what docs/metrics.md says they are."""

from __future__ import annotations

import re

from jouleledger.agent.runner import AgentRunner
from jouleledger.hardware.replay import ReplaySource
from tests._tools import REPO_ROOT

_AGENT_LINE = re.compile(r"- \*\*agent\*\*: `(\{[^`]*\})`", re.DOTALL)


def _documented_agent_keys() -> set[str]:
    text = (REPO_ROOT / "docs" / "metrics.md").read_text(encoding="utf-8")
    match = _AGENT_LINE.search(text)
    assert match, "docs/metrics.md no longer describes the agent's /healthz details"
    return set(re.findall(r'"([a-z_]+)"', match.group(1))) - {"ok", "degraded", "stalled"}


def test_the_agent_health_details_are_documented() -> None:
    trace = REPO_ROOT / "tests" / "fixtures" / "mixed-node.jsonl"
    source = ReplaySource(trace)
    runner = AgentRunner(source, backend="replay", wall_clock=lambda: 1_000.0)
    try:
        while runner.tick():
            pass
        healthy, details = runner.health()
    finally:
        runner.close()
        source.close()
    assert healthy
    assert details["status"] == "ok"
    assert set(details) == _documented_agent_keys()
