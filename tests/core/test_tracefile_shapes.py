"""The trace format rejects lines of the wrong shape with the line number (core/tracefile.py)."""

from __future__ import annotations

import json

import pytest

from jouleledger.core.tracefile import TraceError, read_trace
from tests.core.test_tracefile import HEADER, sample


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"type": "sample", "t": 1.0, "gpus": [5]}, r"gpus\[0\] must be an object"),
        ({"type": "sample", "t": 1.0, "gpus": 5}, "gpus must be a list"),
        (
            {"type": "sample", "t": 1.0, "gpus": [{"uuid": "GPU-a", "power_mw": 1}, {"uuid": "GPU-a", "power_mw": 2}]},
            "GPU 'GPU-a' appears twice in one sample",
        ),
    ],
    ids=["gpu-not-an-object", "gpus-not-a-list", "gpu-twice"],
)
def test_wrong_shapes_name_their_line(bad: dict[str, object], message: str) -> None:
    _, samples = read_trace([json.dumps(HEADER), json.dumps(sample(0.5)), json.dumps(bad)])
    with pytest.raises(TraceError, match=message) as info:
        list(samples)
    assert info.value.line == 3
