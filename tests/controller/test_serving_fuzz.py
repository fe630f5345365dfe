"""Fuzzing what a tenant's serving pod answers the operator (``controller/serving.py`` over ``httpx.MockTransport``,
the exposition parser and ``core/serving.py``'s counters): whatever one pod sends, the serving pass never raises
(an exception there would abort the operator's accounting pass before it persists anything), the other pod's
figures stay exact, and the serving metrics stay finite and non-negative."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Mapping
from typing import Any

import httpx
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from jouleledger.controller.serving import ServingAccounting
from jouleledger.core.deltas import PodDelta, PodIdentity, ScrapeDeltas, SeriesKey
from jouleledger.core.footprints import IntervalRates
from jouleledger.core.serving import PROFILES, read_counters
from jouleledger.metrics.serving import ServingCollector
from tests._figures import figure
from tests._fuzz import HOSTILE_NUMBERS, mutated_exposition

RATES = IntervalRates(0.0, 15.0, "z", 250.0, "static", 1.2, 0.2, "EUR", "measured-nvml-energy-counter")
GOOD_IP, BAD_IP = "10.0.0.1", "10.0.0.2"


def vllm_text(requests: float, prompt: float, output: float) -> str:
    return (
        "# TYPE vllm:request_success_total counter\n"
        f'vllm:request_success_total{{finished_reason="stop"}} {requests}\n'
        f'vllm:request_success_total{{finished_reason="length"}} {requests / 10}\n'
        f"vllm:prompt_tokens_total {prompt}\nvllm:generation_tokens_total {output}\n"
    )


def _pod(name: str, ip: str, annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name, "namespace": "serving", "uid": f"uid-{name}",
            "labels": {"jouleledger.io/serving": "vllm"}, "annotations": dict(annotations or {}),
            "ownerReferences": [{"kind": "ReplicaSet", "name": f"{name}-rs", "controller": True}],
        },
        "status": {"podIP": ip, "phase": "Running"},
    }  # fmt: skip


class Pods:
    """The API's pod list (what ``ServingAccounting.refresh`` reads); the bad pod carries ``annotations``."""

    def __init__(self, annotations: Mapping[str, str] | None = None) -> None:
        self.annotations = annotations

    async def list(self, path: str, *, params: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        return [_pod("good", GOOD_IP), _pod("bad", BAD_IP, self.annotations)]


def _delta(name: str, energy_mj: int) -> PodDelta:
    key = SeriesKey("n1", "serving", name, "vllm", "GPU-1")
    return PodDelta(key, PodIdentity("serving", name, f"uid-{name}"), energy_mj, 15.0, "counter", energy_mj, 15.0)


async def _passes(bodies: list[bytes], annotations: Mapping[str, str] | None = None) -> tuple[ServingAccounting, str]:
    """Three reads: the good pod serves 10 more requests each time, the bad one ``bodies`` (its second hostile)."""
    step = 0

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.host == GOOD_IP:
            return httpx.Response(200, text=vllm_text(100.0 * step, 1000.0 * step, 500.0 * step))
        return httpx.Response(200, content=bodies[step])

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        serving = ServingAccounting(client)
        for step in range(len(bodies)):
            if step:
                serving.add_deltas(ScrapeDeltas("n1", False, (_delta("good", 11_000), _delta("bad", 5_000)), {}), RATES)
            await serving.run_pass(Pods(annotations), 15.0 * step)  # type: ignore[arg-type]
        registry = CollectorRegistry()
        registry.register(ServingCollector(serving.view))
        return serving, generate_latest(registry).decode()


def _check(text: str) -> dict[tuple[str, str], float]:
    values: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            assert math.isfinite(sample.value), sample
            assert sample.value >= 0, sample
            values[sample.name, sample.labels.get("workload", "")] = sample.value
    return values


def test_a_hostile_serving_pod_never_fails_the_pass_nor_the_other_pod() -> None:
    reads: Counter[str] = Counter()

    @settings(max_examples=200, deadline=None)
    @example(vllm_text(1e308, 1, 1).encode())  # two request samples of 1e308: OverflowError in math.fsum
    @given(mutated_exposition(vllm_text(110.0, 2000.0, 1000.0)))
    def run(body: bytes) -> None:
        valid = [vllm_text(100.0 * step, 1000.0 * step, 500.0 * step).encode() for step in range(3)]
        serving, text = asyncio.run(_passes([valid[0], body, valid[2]]))
        values = _check(text)
        # the good pod: 11 J per 110 requests at each of its two intervals
        assert values["jouleledger_workload_energy_joules_per_request", "good-rs"] == pytest.approx(0.1)
        assert values["jouleledger_workload_serving_requests_total", "good-rs"] == pytest.approx(220.0)
        reads.update(serving.reads)

    run()
    figure(
        f"serving pod fuzz: {reads.total()} reads next to a valid pod (exact), by result {dict(sorted(reads.items()))}"
    )


@pytest.mark.parametrize("value", [*HOSTILE_NUMBERS[:8], "9007199254740993", "1e16"])
def test_read_counters_refuses_what_no_server_counts(value: str) -> None:
    samples = [("vllm:request_success_total", {"a": "1"}, float(value)), ("vllm:request_success_total", {}, 1e308)]
    with pytest.raises(ValueError, match="vllm:request_success_total"):
        read_counters(samples, PROFILES["vllm"])


ANNOTATION_KEYS = [
    "jouleledger.io/serving",
    "jouleledger.io/serving-port",
    "jouleledger.io/serving-path",
    "jouleledger.io/serving-requests-metric",
    "jouleledger.io/serving-prompt-tokens-metric",
    "jouleledger.io/serving-output-tokens-metric",
]
ANNOTATION_VALUES = [
    "", " ", "custom", "vllm", "TGI", "0", "65536", "8000", "\u00b2", "\u0661\u0662", "9" * 5000, "-1", "/",
    "/metrics\n", "/\x00", "/a b", "metrics", "/" + "a" * 70_000, "//evil.example/x", "/@evil", "/?q=1#f",
    "a,,b", ",", "x" * 10_000, "\ud800", "/\u00e9",
]  # fmt: skip


def test_hostile_serving_annotations_never_fail_the_pass_nor_the_other_pod() -> None:
    """A tenant writes any annotation on its pod. Before: a superscript-two port raised ValueError out of the pod
    list (int() refuses what isdigit() accepts) and a path ending in a newline raised httpx.InvalidURL out of the
    read: either aborted the operator's whole pass."""
    reads: Counter[str] = Counter()
    valid = [vllm_text(100.0 * step, 1000.0 * step, 500.0 * step).encode() for step in range(3)]

    @settings(max_examples=150, deadline=None)
    @example({"jouleledger.io/serving-port": "\u00b2"})
    @example({"jouleledger.io/serving-port": "9" * 5000})
    @example({"jouleledger.io/serving-path": "/metrics\n"})
    @example({"jouleledger.io/serving-path": "/" + "a" * 70_000})
    @given(st.dictionaries(st.sampled_from(ANNOTATION_KEYS), st.sampled_from(ANNOTATION_VALUES) | st.text()))
    def run(annotations: dict[str, str]) -> None:
        serving, text = asyncio.run(_passes(valid, annotations))
        values = _check(text)
        assert values["jouleledger_workload_serving_requests_total", "good-rs"] == pytest.approx(220.0)
        reads.update(serving.reads)

    run()
    figure(f"serving annotation fuzz: {reads.total()} reads and pod settings, by result {dict(sorted(reads.items()))}")
