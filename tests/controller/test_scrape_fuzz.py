"""Fuzzing what an agent can answer the operator's scrape (``controller/scrape.py`` and its HTTP client over an
in-memory connection, the exposition parser and :func:`parse_agent_samples`), folded into a footprint book as a
pass folds it.

Whatever one agent sends (broken lines, NaN/inf/negative/huge values, 4,300-digit numbers, duplicate series,
hostile label values, missing labels, wrong types, truncated or non-UTF-8 bodies, odd status codes and headers):
the scrape returns an outcome (no exception escapes), an accepted scrape holds only finite, bounded, non-negative
numbers, the footprints and the operator's own ``/metrics`` stay finite and non-negative, every rejected value is
counted, and the agent next to it is accounted to the millijoule."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from dataclasses import dataclass, field

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from jouleledger.controller.agent_http import AgentConnection, AgentHttpClient
from jouleledger.controller.cluster import AgentTarget
from jouleledger.controller.scrape import ERROR, OK, TOO_LARGE, AgentScraper, ScrapeOutcome
from jouleledger.core.deltas import MAX_COUNTER_J
from tests._figures import figure
from tests._fuzz import HOSTILE_NUMBERS, mutated_exposition
from tests.controller._exposition import Pod, agent_text
from tests.controller._fold import FoldedLedger

GOOD = AgentTarget(node="good", pod="agent-good", ip="10.0.0.1", port=9470)
BAD = AgentTarget(node="bad", pod="agent-bad", ip="10.0.0.2", port=9470)
EPOCH = "0123456789abcdef"
T0 = 1_700_000_000.0


def good_text(step: int) -> str:
    """The well-behaved agent at pass ``step``: 300 W for 100 s more at every pass."""
    pod = Pod("team-a", "trainer", "uid-good", 30_000.0 * step, 100.0 * step, team="a")
    return agent_text("good", T0 + 100 * step, [pod], epoch=EPOCH, ticks=10.0 * step)


def bad_text(step: int) -> str:
    """The agent whose answers get mutated, as it would be without the mutation: two pods."""
    pods = [
        Pod("team-b", "p", "uid-p", 20_000.0 * step, 100.0 * step, team="b"),
        Pod("team-b", "q", "uid-q", 5_000.0 * step, 50.0 * step, device="GPU-a::1", from_power_j=1_000.0 * step),
    ]
    return agent_text("bad", T0 + 100 * step, pods, epoch=EPOCH, ticks=10.0 * step, unallocated_j=3_000.0 * step)


OVERFLOWING_INFO = (
    bad_text(2)
    .replace('{backend="nvml",', "{,")  # a line the fast path leaves to prometheus_client's parser
    .replace('version="0.1.0"} 1.0', 'version="0.1.0"} ' + "9" * 4300)  # an int no float64 holds
    .encode()
)


def good_energy_mj(step: int) -> int:
    return 30_000_000 * step


@dataclass
class Answer:
    """What the mock agent answers: a status, headers and a body."""

    body: bytes
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


class _Wire(asyncio.Transport):
    """An in-memory transport: each request written to it is answered by the agent its Host header names."""

    def __init__(self, connection: AgentConnection, agents: Agents) -> None:
        super().__init__()
        self._connection = connection
        self._agents = agents
        self._closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        head = bytes(data).decode("latin-1")
        host = next(line[6:] for line in head.split("\r\n") if line.startswith("Host: ")).rpartition(":")[0]
        asyncio.get_running_loop().call_soon(self._connection.data_received, self._agents.raw(host))

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            asyncio.get_running_loop().call_soon(self._connection.connection_lost, None)

    def abort(self) -> None:
        self.close()

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class Agents(AgentHttpClient):
    """Both agents, in process, behind the operator's real agent client: each answers the body of its IP (status,
    headers and body as given, on the wire as an HTTP/1.1 answer; a Content-Length unless the headers give one)."""

    def __init__(self) -> None:
        super().__init__()
        self.answers: dict[str, Answer] = {}

    def raw(self, host: str) -> bytes:
        answer = self.answers[host]
        headers = {"Content-Type": "text/plain; version=0.0.4", "Content-Length": str(len(answer.body))}
        headers.update(answer.headers)
        head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        return f"HTTP/1.1 {answer.status} Whatever\r\n{head}\r\n".encode("latin-1") + answer.body

    async def _open(self, host: str, port: int, server_name: str) -> AgentConnection:
        connection = AgentConnection()
        connection.connection_made(_Wire(connection, self))
        return connection


async def _passes(agents: Agents, answers: list[tuple[Answer, Answer]], ledger: FoldedLedger) -> list[ScrapeOutcome]:
    scraper = AgentScraper(
        agents,
        timeout_s=5.0,
        concurrency=2,
        backoff_base_s=0.0,
        backoff_max_s=0.0,
    )
    bad_outcomes: list[ScrapeOutcome] = []
    for step, (good, bad) in enumerate(answers, start=1):
        agents.answers = {GOOD.ip: good, BAD.ip: bad}
        outcomes = await scraper.scrape_all([GOOD, BAD])
        by_node = {outcome.target.node: outcome for outcome in outcomes}
        assert by_node["good"].result == OK, by_node["good"].error
        assert by_node["bad"].result in (OK, ERROR, TOO_LARGE)
        assert by_node["bad"].result == OK or by_node["bad"].error
        bad_outcomes.append(by_node["bad"])
        ledger.fold(outcomes, T0 + 100 * step)
        assert ledger.energy_mj("uid-good") == good_energy_mj(step)
        ledger.check_footprints()
    return bad_outcomes


def _answer(text: str) -> Answer:
    return Answer(text.encode())


transport_quirks = st.sampled_from(
    [
        *[{}] * 12,
        {"Content-Encoding": "gzip"},  # a body that is not gzip
        {"Content-Encoding": "identity, br, bogus"},
        {"Content-Type": "text/html; charset=latin-1"},
        {"Content-Length": "999999999999999999999"},
    ]
)


def test_hostile_agent_answers_never_escape_nor_stop_the_other_agent() -> None:
    results: Counter[str] = Counter()
    rejections: Counter[str] = Counter()

    @settings(max_examples=250, deadline=None)
    @example(OVERFLOWING_INFO, 200, {})  # raised OverflowError out of the scrape: the pass of every agent stopped
    @given(
        mutated_exposition(bad_text(2)),
        st.sampled_from([200] * 12 + [204, 301, 404, 500]),
        transport_quirks,
    )
    def run(body: bytes, status: int, headers: dict[str, str]) -> None:
        ledger = FoldedLedger()
        hostile = Answer(body, status, headers)
        steps = [(_answer(good_text(s)), _answer(bad_text(s)) if s != 2 else hostile) for s in (1, 2, 3)]
        outcomes = asyncio.run(_passes(Agents(), steps, ledger))
        results[outcomes[1].result] += 1
        rejections.update(ledger.stats.rejected)
        assert ledger.exported()

    run()
    figure(
        f"agent scrape fuzz: {results.total()} hostile answers next to a valid agent "
        f"({dict(sorted(results.items()))}), rejected samples by reason {dict(sorted(rejections.items()))}, "
        "valid agent accounted to the mJ in every one"
    )
    assert results[OK]
    assert results[ERROR]


def _expected_reason(value: str) -> str:
    """How the operator must treat a pod energy of ``value`` J where the baseline is 20,000 J (the text is read as
    Python's float() reads it: ``1_000`` is 1000)."""
    try:
        number = float(value)
    except ValueError:
        return "invalid_exposition"
    if not math.isfinite(number):
        return "not_finite"
    if number < 0:
        return "negative"
    if number > MAX_COUNTER_J:
        return "out_of_range"
    return "counter_regression" if number < 20_000 else "implausible_energy"


def test_each_hostile_value_is_rejected_counted_and_spares_the_rest() -> None:
    """One pod energy value replaced by each of the values no agent may send: the scrape is still read, that
    series is held (neither counted nor forgotten) and counted under a reason, the agent's other pod is accounted."""
    counted: Counter[str] = Counter()

    @settings(max_examples=80, deadline=None)
    @given(st.sampled_from(HOSTILE_NUMBERS) | st.floats(max_value=-1e-9).map(repr) | st.just("2e16"))
    def run(value: str) -> None:
        text = bad_text(2)
        line = next(
            line
            for line in text.splitlines()
            if line.startswith("jouleledger_pod_gpu_energy_joules_total{") and 'pod="p"' in line
        )
        body = text.replace(line, f"{line.rpartition(' ')[0]} {value}").encode()
        ledger = FoldedLedger()
        steps = [(_answer(good_text(1)), _answer(bad_text(1))), (_answer(good_text(2)), Answer(body))]
        [_, outcome] = asyncio.run(_passes(Agents(), steps, ledger))
        expected = _expected_reason(value)
        counted[expected] += 1
        if expected == "invalid_exposition":  # not a number at all: the whole scrape is rejected, and counted
            assert outcome.result == ERROR
            assert ledger.stats.scrapes[ERROR] == 1
            return
        assert outcome.scrape is not None
        if expected == "counter_regression":  # a valid number below the baseline under the same epoch
            assert ledger.stats.rejected == {"counter_regression": 1}
        else:
            [rejection] = [r for r in outcome.scrape.rejected if r.labels.get("pod") == "p"]
            assert rejection.reason == expected
            assert ledger.stats.rejected == {expected: 1}
        # the held series keeps its baseline; the other pod's second interval is counted
        assert ledger.energy_mj("uid-p") == 20_000_000
        assert ledger.energy_mj("uid-q") == 10_000_000

    run()
    figure(f"hostile pod energy values: {counted.total()} examples, outcome by reason {dict(sorted(counted.items()))}")


@pytest.mark.parametrize("value", ["NaN", "+Inf", "-1", "9" * 4300])
def test_a_hostile_tick_count_is_rejected_and_counted(value: str) -> None:
    """Regression: a non-finite or negative ``jouleledger_agent_ticks_total`` was silently read as 0, uncounted."""
    text = bad_text(2)
    body = text.replace(
        'jouleledger_agent_ticks_total{node="bad"} 20.0', f'jouleledger_agent_ticks_total{{node="bad"}} {value}'
    )
    assert body != text
    ledger = FoldedLedger()
    steps = [(_answer(good_text(1)), _answer(bad_text(1))), (_answer(good_text(2)), Answer(body.encode()))]
    [_, outcome] = asyncio.run(_passes(Agents(), steps, ledger))
    assert outcome.scrape is not None
    assert outcome.scrape.ticks == 0
    assert ledger.stats.rejected == {_expected_reason(value): 1}
    assert ledger.energy_mj("uid-p") == 40_000_000  # the agent's counters are still accounted


@pytest.mark.parametrize("value", ["40000.0", "1e9", "0", "NaN"])
def test_a_duplicate_series_with_another_value_is_rejected_and_counted(value: str) -> None:
    """Regression: a counter series given twice silently took the last value (an agent could pick the one it liked;
    Prometheus refuses such a scrape). A copy with another value is now ``duplicate_series``, the series held; an
    identical copy (two Prometheus jobs reading one agent) is harmless."""
    text = bad_text(2)
    energy = next(line for line in text.splitlines() if line.startswith("jouleledger_pod_gpu_energy_joules_total{"))
    idle = next(line for line in text.splitlines() if line.startswith("jouleledger_gpu_unallocated_energy_joules"))
    assert 'pod="p"' in energy
    idle_value = "6000.0" if value == "40000.0" else value
    copies = f"{energy}\n{energy.rpartition(' ')[0]} {value}\n{idle}\n{idle.rpartition(' ')[0]} {idle_value}\n"
    body = text.replace(f"{energy}\n", "").replace(f"{idle}\n", "") + copies
    ledger = FoldedLedger()
    steps = [(_answer(good_text(1)), _answer(bad_text(1))), (_answer(good_text(2)), Answer(body.encode()))]
    [_, outcome] = asyncio.run(_passes(Agents(), steps, ledger))
    assert outcome.scrape is not None
    assert ledger.energy_mj("uid-q") == 10_000_000
    if value == "40000.0":  # the same value twice: counted once, nothing rejected
        assert ledger.stats.rejected == {}
        assert ledger.energy_mj("uid-p") == 40_000_000
        assert outcome.scrape.unallocated_mj == {"GPU-a": 6_000_000}
    else:
        assert ledger.stats.rejected == {"duplicate_series": 2}
        assert ledger.energy_mj("uid-p") == 20_000_000  # held: its baseline stays
        assert outcome.scrape.unallocated_mj == {}
