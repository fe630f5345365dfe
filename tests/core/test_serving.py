"""Energy per request and per token (core/serving.py): annotations, counters, and two vLLM-like pods time-sliced
on one GPU, run through the agent's real pipeline, each getting its own figure from its own energy share."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jouleledger.agent.pipeline import Pipeline
from jouleledger.core.serving import (
    PROFILES,
    ServingConfigError,
    ServingCounters,
    ServingMeter,
    combine,
    read_counters,
    serving_profile,
)
from jouleledger.hardware.replay import ReplaySource


def test_profiles_and_overrides() -> None:
    assert serving_profile({}) is None
    vllm = serving_profile({"jouleledger.io/serving": "vLLM"})
    assert vllm == PROFILES["vllm"]
    custom = serving_profile({
        "jouleledger.io/serving": "custom", "jouleledger.io/serving-port": "9000",
        "jouleledger.io/serving-requests-metric": "my_requests_total",
        "jouleledger.io/serving-output-tokens-metric": "my_out_total, my_out_v2_total",
    })  # fmt: skip
    assert custom is not None
    assert (custom.port, custom.requests, custom.output_tokens, custom.prompt_tokens) == (
        9000, ("my_requests_total",), ("my_out_total", "my_out_v2_total"), ()
    )  # fmt: skip


@pytest.mark.parametrize(
    ("annotations", "message"),
    [
        ({"jouleledger.io/serving": "llamacpp"}, "is not one of vllm, tgi, sglang, triton, nim, custom"),
        ({"jouleledger.io/serving": "vllm", "jouleledger.io/serving-port": "99999"}, "is not a port"),
        ({"jouleledger.io/serving": "custom"}, "serving-port: required"),
        ({"jouleledger.io/serving": "custom", "jouleledger.io/serving-port": "1"}, "requests-metric: required"),
        ({"jouleledger.io/serving": "tgi", "jouleledger.io/serving-path": "metrics"}, "must start with /"),
    ],
)
def test_bad_annotations(annotations: dict[str, str], message: str) -> None:
    with pytest.raises(ServingConfigError, match=message):
        serving_profile(annotations)


def test_read_counters_sums_label_sets_and_refuses_bad_values() -> None:
    samples = [
        ("vllm:request_success_total", {"finished_reason": "stop"}, 7.0),
        ("vllm:request_success_total", {"finished_reason": "length"}, 3.0),
        ("vllm:prompt_tokens_total", {}, 1000.0),
        ("vllm:generation_tokens_total", {}, 500.0),
        ("vllm:num_requests_running", {}, 2.0),
    ]
    assert read_counters(samples, PROFILES["vllm"]) == ServingCounters(10.0, 1000.0, 500.0)
    assert read_counters([("nv_inference_request_success", {"model": "m"}, 4.0)], PROFILES["triton"]) == (
        ServingCounters(4.0, None, None)
    )
    with pytest.raises(ValueError, match="no request counter"):
        read_counters([("vllm:prompt_tokens_total", {}, 1.0)], PROFILES["vllm"])
    with pytest.raises(ValueError, match="not a finite"):
        read_counters([("vllm:request_success_total", {}, float("nan"))], PROFILES["vllm"])


def test_no_requests_no_ratio_and_a_restart_drops_the_interval() -> None:
    meter = ServingMeter()
    assert meter.observe("p", 0.0, ServingCounters(10, 100, 50)) is None
    meter.add_energy("p", 5_000, 1.0)
    idle = meter.observe("p", 10.0, ServingCounters(10, 100, 50))
    assert idle is not None
    assert (idle.energy_mj, idle.joules_per_request, idle.joules_per_token, idle.grams_per_1000_requests) == (
        5_000, None, None, None
    )  # fmt: skip
    meter.add_energy("p", 8_000, 2.0)
    assert meter.observe("p", 20.0, ServingCounters(2, 10, 5)) is None  # counters went down: restarted
    assert meter.resets == 1
    meter.add_energy("p", 4_000, 0.5)
    interval = meter.observe("p", 30.0, ServingCounters(6, 30, 15))
    assert interval is not None
    assert interval.joules_per_request == pytest.approx(1.0)  # 4 J / 4 requests
    assert interval.joules_per_output_token == pytest.approx(0.4)
    assert interval.joules_per_token == pytest.approx(4 / 30)
    assert interval.grams_per_1000_requests == pytest.approx(125.0)
    assert (interval.start_s, interval.end_s) == (20.0, 30.0)
    meter.add_energy("q", 1, 1.0)  # not a serving pod: ignored
    assert "q" not in meter.pods


def _trace(path: Path) -> Path:
    """One H100 time-sliced between two vLLM pods: pod a runs 3 processes' worth of SM, pod b one."""
    header = {"type": "header", "version": 1, "node": "n1",
              "gpus": [{"uuid": "GPU-1", "model": "H100", "energy_counter": True, "power_limit_w": 700}]}  # fmt: skip

    def pod(name: str, replica: int, pid: int) -> dict[str, object]:
        return {"namespace": "serving", "name": name, "uid": f"uid-{name}", "labels": {"team": "llm"},
                "owner": {"kind": "ReplicaSet", "name": name, "uid": f"rs-{name}"},
                "containers": [{"name": "vllm", "devices": [f"GPU-1::{replica}"], "pids": [pid]}]}  # fmt: skip

    lines = [header]
    energy = 1_000_000
    for t in range(0, 70, 10):
        lines.append({
            "type": "sample", "t": float(t), "grid_g_per_kwh": 200.0,
            "gpus": [{"uuid": "GPU-1", "energy_mj": energy, "power_mw": 400_000,
                      "processes": [{"pid": 11, "sm_util": 60}, {"pid": 22, "sm_util": 20}]}],
            "pods": [pod("chat-a", 0, 11), pod("chat-b", 1, 22)],
        })  # fmt: skip
        energy += 4_000_003  # ~400 W for 10 s, an odd number so that the split has a remainder
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return path


def test_two_pods_sharing_a_gpu_each_get_their_own_figure(tmp_path: Path) -> None:
    source = ReplaySource(str(_trace(tmp_path / "t.jsonl")))
    pipeline = Pipeline(source.header(), retention_s=1e12)
    meter = ServingMeter()
    # per 10 s: pod a completes 3 requests with 300 output tokens, pod b 1 request with 50; 20 prompt tokens each
    work = {"uid-chat-a": (3, 300), "uid-chat-b": (1, 50)}
    gpu_mj = 0
    for step, sample in enumerate(source):
        result = pipeline.step(sample)
        for interval in result.gpus:
            gpu_mj += interval.measurement.delta_mj
            for share in interval.split.shares:
                meter.add_energy(share.pod.key, share.energy_mj, share.energy_mj / 3_600_000_000 * 200.0)
        for key, (requests, output) in work.items():  # the operator reads the servers after folding
            meter.observe(key, sample.t_s, ServingCounters(requests * step, 20 * requests * step, output * step))
    source.close()
    a, b = meter.totals["uid-chat-a"], meter.totals["uid-chat-b"]
    assert gpu_mj == 6 * 4_000_003
    assert a.energy_mj + b.energy_mj == gpu_mj  # the two pods' energies add up to the GPU's, to the mJ
    assert a.energy_mj == pytest.approx(3 * b.energy_mj, abs=10)  # SM 60 vs 20: three quarters to a
    assert (a.requests, a.output_tokens, b.requests, b.output_tokens) == (18, 1800, 6, 300)
    ja = meter.latest["uid-chat-a"].joules_per_output_token
    jb = meter.latest["uid-chat-b"].joules_per_output_token
    assert ja is not None
    assert jb is not None
    assert ja == pytest.approx(3_000.002 / 300, rel=1e-6)  # 3/4 of 4,000.003 J over 300 tokens
    assert jb == pytest.approx(1_000.001 / 50, rel=1e-6)
    assert jb > ja  # the lightly loaded pod pays more per token for its share of the GPU
    both = combine(meter.latest.values())
    assert both is not None
    assert both.energy_mj == 4_000_003  # one interval of the GPU, split exactly
    assert both.requests == 4
