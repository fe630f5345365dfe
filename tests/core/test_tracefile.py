"""The trace format: strict parsing with line numbers, and writing what parsing accepts."""

from __future__ import annotations

import json

import pytest

from jouleledger.core.model import ContainerDevices, GpuReading, Owner, PodInfo, ProcessUsage, Sample
from jouleledger.core.tracefile import TraceError, dump_header, dump_sample, parse_header, read_trace

HEADER = {
    "type": "header",
    "version": 1,
    "node": "n1",
    "gpus": [
        {
            "uuid": "GPU-a",
            "model": "H100",
            "energy_counter": True,
            "power_limit_w": 700,
            "mig": [{"uuid": "MIG-a-1", "slices": 3}],
        },
    ],
}


def lines(*samples: dict[str, object]) -> list[str]:
    return [json.dumps(HEADER), *(json.dumps(s) for s in samples)]


def sample(t: float, **extra: object) -> dict[str, object]:
    return {"type": "sample", "t": t, "gpus": [{"uuid": "GPU-a", "energy_mj": 1, "power_mw": 2}], **extra}


def parse_all(text_lines: list[str]) -> list[Sample]:
    _, samples = read_trace(text_lines)
    return list(samples)


def test_header_is_parsed() -> None:
    header = parse_header(HEADER)
    assert header.node == "n1"
    assert header.gpus[0].mig[0].slices == 3
    assert header.gpus[0].total_slices == 3


@pytest.mark.parametrize(
    ("mutation", "message"),
    [
        ({"version": 2}, "unsupported trace version"),
        ({"type": "sample"}, "first line must be the header"),
        ({"node": ""}, "header.node"),
        ({"gpus": [{"uuid": "GPU-a", "energy_counter": "yes", "power_limit_w": 1}]}, "energy_counter"),
        ({"gpus": [{"uuid": "GPU-a", "energy_counter": True, "power_limit_w": -1}]}, "power_limit_w"),
        ({"gpus": [{"uuid": "GPU-a", "energy_counter": True, "power_limit_w": 1}] * 2}, "appears twice"),
    ],
)
def test_bad_headers_name_line_one(mutation: dict[str, object], message: str) -> None:
    with pytest.raises(TraceError, match=message) as info:
        read_trace([json.dumps({**HEADER, **mutation})])
    assert info.value.line == 1


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"type": "sample", "t": 1.0, "gpus": [{"uuid": "GPU-a", "energy_mj": -1}]}, "energy_mj"),
        ({"type": "sample", "t": 1.0, "gpus": [{"uuid": "GPU-a", "energy_mj": 1.5}]}, "not an integer"),
        ({"type": "sample", "t": 1.0, "gpus": [{"uuid": "GPU-a", "power_mw": True}]}, "power_mw"),
        ({"type": "sample", "t": 1.0, "grid_g_per_kwh": -3}, "grid_g_per_kwh"),
        ({"type": "sample", "t": "soon"}, "not a number"),
        (
            {"type": "sample", "t": 1.0, "gpus": [{"uuid": "GPU-a", "processes": [{"pid": 1, "sm_util": 101}]}]},
            "sm_util",
        ),
        (
            {"type": "sample", "t": 1.0, "pods": [{"namespace": "a", "name": "b", "containers": [{"name": ""}]}]},
            "containers",
        ),
        ({"type": "sample", "t": 0.5}, "does not increase"),
        ({"type": "mystery", "t": 2.0}, "expected a sample line"),
    ],
)
def test_bad_samples_name_their_line(bad: dict[str, object], message: str) -> None:
    with pytest.raises(TraceError, match=message) as info:
        parse_all(lines(sample(0.5), bad))
    assert info.value.line == 3
    assert str(info.value).startswith("trace line 3:")


def test_invalid_json_and_nan_are_rejected() -> None:
    with pytest.raises(TraceError, match="not valid JSON") as info:
        parse_all([*lines(sample(1.0)), "{not json"])
    assert info.value.line == 3
    with pytest.raises(TraceError, match="not finite"):
        parse_all([json.dumps(HEADER), '{"type": "sample", "t": NaN}'])


def test_empty_trace() -> None:
    with pytest.raises(TraceError, match="empty"):
        read_trace(["", "  "])


def test_blank_lines_are_skipped_and_numbering_stays_true() -> None:
    with pytest.raises(TraceError) as info:
        parse_all([json.dumps(HEADER), "", json.dumps(sample(1.0)), "", '{"type": "sample", "t": 0}'])
    assert info.value.line == 5


def test_write_then_read_round_trips() -> None:
    header = parse_header(HEADER)
    original = Sample(
        3.5,
        (GpuReading("GPU-a", 123, 456, (ProcessUsage(7, 12.5),)),),
        (
            PodInfo(
                "ns", "p", "u", {"team": "a"}, Owner("Job", "j", "ju"), (ContainerDevices("c", ("MIG-a-1",), (7,)),)
            ),
        ),
        250.0,
    )
    header_back, samples = read_trace([dump_header(header), dump_sample(original)])
    assert header_back == header
    assert list(samples) == [original]
