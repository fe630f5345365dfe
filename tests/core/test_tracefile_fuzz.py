"""Fuzzing the trace parser: whatever the bytes, only :class:`TraceError` escapes, and what is accepted is sane
(finite, non-negative, within the documented bounds)."""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from jouleledger.core.model import NodeHeader, Sample
from jouleledger.core.tracefile import TraceError, read_trace
from tests._fuzz import mutated

VALID_HEADER: dict[str, Any] = {
    "type": "header",
    "version": 1,
    "node": "n",
    "gpus": [
        {"uuid": "GPU-a", "model": "H100", "energy_counter": True, "power_limit_w": 700},
        {
            "uuid": "GPU-m",
            "model": "H100",
            "energy_counter": True,
            "power_limit_w": 700,
            "mig": [{"uuid": "MIG-1", "slices": 3}],
        },
    ],
}
VALID_SAMPLE: dict[str, Any] = {
    "type": "sample",
    "t": 1.0,
    "grid_g_per_kwh": 100.0,
    "gpus": [{"uuid": "GPU-a", "energy_mj": 5, "power_mw": 1000, "processes": [{"pid": 7, "sm_util": 50}]}],
    "pods": [
        {
            "namespace": "ns",
            "name": "p",
            "uid": "u",
            "labels": {"team": "a"},
            "owner": {"kind": "Job", "name": "j", "uid": "ju"},
            "containers": [{"name": "c", "devices": ["GPU-a", "MIG-1"], "pids": [7]}],
        }
    ],
}


def _check_accepted(header: NodeHeader, samples: list[Sample]) -> None:
    for gpu in header.gpus:
        assert math.isfinite(gpu.power_limit_w)
        assert gpu.power_limit_w > 0
        assert all(instance.slices >= 1 for instance in gpu.mig)
    for sample in samples:
        assert math.isfinite(sample.t_s)
        assert abs(sample.t_s) <= 1e12
        assert sample.grid_g_per_kwh is None or 0 <= sample.grid_g_per_kwh <= 5000
        for reading in sample.gpus:
            assert reading.energy_mj is None or 0 <= reading.energy_mj < 2**63
            assert reading.power_mw is None or 0 <= reading.power_mw < 2**63
            assert all(p.pid >= 1 and 0 <= p.sm_util <= 100 for p in reading.processes)
        for pod in sample.pods:
            assert pod.namespace
            assert pod.name
            for text in (pod.namespace, pod.name, pod.uid, *pod.labels, *pod.labels.values()):
                text.encode("utf-8")  # every accepted name can be exported
            assert all(pid >= 1 for container in pod.containers for pid in container.pids)


def _parse(lines: list[bytes]) -> None:
    try:
        header, samples = read_trace(lines)
        accepted = list(samples)
    except TraceError:
        return
    _check_accepted(header, accepted)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=4))
def test_arbitrary_bytes_raise_only_trace_errors(lines: list[bytes]) -> None:
    _parse(lines)


@settings(max_examples=300, deadline=None)
@given(mutated(VALID_HEADER))
def test_mutated_headers_raise_only_trace_errors(header: Any) -> None:
    _parse([json.dumps(header).encode(), json.dumps(VALID_SAMPLE).encode()])


@settings(max_examples=500, deadline=None)
@given(mutated(VALID_SAMPLE))
def test_mutated_samples_raise_only_trace_errors(sample: Any) -> None:
    _parse([json.dumps(VALID_HEADER).encode(), json.dumps(sample).encode()])


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text_lines_raise_only_trace_errors(text: str) -> None:
    try:
        header, samples = read_trace(text.splitlines())
        list(samples)
    except TraceError:
        pass
    else:
        assert isinstance(header, NodeHeader)


def test_the_valid_documents_parse() -> None:
    header, samples = read_trace([json.dumps(VALID_HEADER), json.dumps(VALID_SAMPLE)])
    assert len(header.gpus) == 2
    assert len(list(samples)) == 1
