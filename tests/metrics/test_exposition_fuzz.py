"""Fuzzing the operator's parser of an agent's ``/metrics`` text (:func:`parse_exposition`): whatever the text,
only :class:`ExpositionError` escapes, and the strict fast path never disagrees with ``prometheus_client``'s
parser on a text both accept (the fast path must not read a hostile line differently from the reference)."""

from __future__ import annotations

import math
from collections import Counter

from hypothesis import example, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from jouleledger.metrics.operator_collector import ExpositionError, _parse_simple, parse_exposition
from tests._figures import figure
from tests._fuzz import mutated_exposition
from tests.controller._exposition import Pod, agent_text

VALID = agent_text(
    "node-a",
    1_700_000_000.0,
    [Pod("ns", "p", "u1", 5000.0, 100.0, team="a"), Pod("ns", "q", "u2", 20.0, 3.0, device="GPU-a::1")],
    epoch="0123456789abcdef",
)


def _same(left: float, right: float) -> bool:
    return left == right or (math.isnan(left) and math.isnan(right))


def _reference(text: str) -> list[tuple[str, dict[str, str], float]] | None:
    try:
        return [
            (sample.name, dict(sample.labels), float(sample.value))
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        ]
    except Exception:
        return None


def _parse(text: str, outcomes: Counter[str]) -> None:
    try:
        samples = parse_exposition(text)
    except ExpositionError:
        outcomes["rejected"] += 1
        return
    outcomes["parsed"] += 1
    for name, labels, value in samples:
        assert isinstance(name, str)
        assert isinstance(value, float)
        assert all(isinstance(key, str) and isinstance(item, str) for key, item in labels.items())
    fast = _parse_simple(text)
    # The fast path reads sample names as written (as Prometheus does); prometheus_client renames samples after a
    # conflicting TYPE line, so the two are compared on the samples alone (the fast path ignores comments anyway).
    reference = _reference("\n".join(line for line in text.split("\n") if not line.lstrip().startswith("#")))
    if fast is not None and reference is not None:
        outcomes["both_parsers"] += 1
        assert [(name, dict(labels)) for name, labels, _ in fast] == [(name, labels) for name, labels, _ in reference]
        assert all(_same(a[2], b[2]) for a, b in zip(fast, reference, strict=True))


def test_mutated_agent_expositions_raise_only_exposition_errors() -> None:
    outcomes: Counter[str] = Counter()

    @settings(max_examples=400, deadline=None)
    @given(mutated_exposition(VALID))
    def run(body: bytes) -> None:
        _parse(body.decode("utf-8", "replace"), outcomes)

    run()
    figure(f"agent exposition parser fuzz: {outcomes.total()} mutated expositions, {dict(sorted(outcomes.items()))}")
    assert outcomes["parsed"]
    assert outcomes["rejected"]


@settings(max_examples=300, deadline=None)
@example("# TYPE x counter\nx 1\n")  # prometheus_client reads the sample as x_total
@given(st.text(alphabet=st.sampled_from('ab_{}="\\, \t\n#+-.0123456789eEInfNa'), max_size=80))
@example('x{a="1"} 1')
@example('x{a="1",} 1 2')
def test_arbitrary_text_raises_only_exposition_errors(text: str) -> None:
    _parse(text, Counter())


def test_the_valid_exposition_parses_on_the_fast_path() -> None:
    fast = _parse_simple(VALID)
    assert fast is not None
    assert fast == parse_exposition(VALID)
    assert "jouleledger_pod_gpu_energy_joules_total" in {name for name, _, _ in fast}


def test_an_integer_beyond_float64_is_infinite_not_an_overflow() -> None:
    """Regression: on the ``prometheus_client`` path (a line the fast path does not take) a 4,300-digit integer
    raised ``OverflowError`` out of the scrape, stopping the pass for every agent."""
    text = 'x{,a="b"} ' + "9" * 4300 + '\ny{a="b"} -' + "9" * 4300 + "\n"
    assert _parse_simple(text) is None
    assert [value for _, _, value in parse_exposition(text)] == [math.inf, -math.inf]
