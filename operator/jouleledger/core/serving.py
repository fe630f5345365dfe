"""Energy per inference request and per token, from the same per-pod energy deltas the ledger folds.

A serving pod opts in with the annotation ``jouleledger.io/serving`` (``vllm``, ``tgi``, ``sglang``, ``triton``,
``nim``, or ``custom`` with explicit metric names); the operator reads the server's own request and token counters
from its ``/metrics`` once per pass. Between two such readings the pod's energy is the sum of the energy deltas the
ledger attributed to that pod (its share of each GPU, time-slicing and MPS included) — never the device's power —
so two serving pods that share one GPU each get their own figure.

A ratio covers the interval between two readings of the pod's counters. An interval with no completed request has
no per-request ratio (not zero, not infinity); likewise for tokens. A counter that went down (the server restarted)
makes that interval unusable: its energy is not put against any request, and it is counted.

Pure: stdlib only, no I/O, no clocks (times are given).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

__all__ = [
    "ANNOTATION",
    "PROFILES",
    "ServingConfigError",
    "ServingCounters",
    "ServingInterval",
    "ServingMeter",
    "ServingProfile",
    "ServingTotals",
    "ServingView",
    "WorkloadServing",
    "combine",
    "read_counters",
    "serving_profile",
]

ANNOTATION: Final = "jouleledger.io/serving"
PORT_ANNOTATION: Final = "jouleledger.io/serving-port"
PATH_ANNOTATION: Final = "jouleledger.io/serving-path"
REQUESTS_ANNOTATION: Final = "jouleledger.io/serving-requests-metric"
PROMPT_TOKENS_ANNOTATION: Final = "jouleledger.io/serving-prompt-tokens-metric"
OUTPUT_TOKENS_ANNOTATION: Final = "jouleledger.io/serving-output-tokens-metric"
MJ_PER_J: Final = 1000


class ServingConfigError(ValueError):
    """A pod's serving annotations cannot be used; the message names the annotation."""


@dataclass(frozen=True, slots=True)
class ServingProfile:
    """Where a server's metrics are and which samples count requests and tokens (a sample name may be listed
    several times over versions: the first one present is used)."""

    server: str
    port: int
    path: str
    requests: tuple[str, ...]
    prompt_tokens: tuple[str, ...] = ()
    output_tokens: tuple[str, ...] = ()


# The servers' own sample names (as exposed, ``_total`` included): vLLM, Hugging Face TGI (histogram sums for
# tokens), SGLang, NVIDIA Triton (no token counters) and NVIDIA NIM for LLMs (vLLM's counters without the prefix).
PROFILES: Final[Mapping[str, ServingProfile]] = {
    "vllm": ServingProfile(
        "vllm", 8000, "/metrics", ("vllm:request_success_total",), ("vllm:prompt_tokens_total",),
        ("vllm:generation_tokens_total",),
    ),
    "tgi": ServingProfile(
        "tgi", 80, "/metrics", ("tgi_request_success", "tgi_request_success_total"),
        ("tgi_request_input_length_sum",), ("tgi_request_generated_tokens_sum",),
    ),
    "sglang": ServingProfile(
        "sglang", 30000, "/metrics", ("sglang:num_requests_total",), ("sglang:prompt_tokens_total",),
        ("sglang:generation_tokens_total",),
    ),
    "triton": ServingProfile("triton", 8002, "/metrics", ("nv_inference_request_success",)),
    "nim": ServingProfile(
        "nim", 8000, "/v1/metrics", ("request_success_total", "vllm:request_success_total"),
        ("prompt_tokens_total", "vllm:prompt_tokens_total"),
        ("generation_tokens_total", "vllm:generation_tokens_total"),
    ),
}  # fmt: skip


MAX_PATH_CHARS: Final = 1024
"""The longest ``jouleledger.io/serving-path`` accepted (a tenant's annotation becomes a URL the operator reads)."""


def _names(annotations: Mapping[str, str], key: str, default: tuple[str, ...]) -> tuple[str, ...]:
    value = annotations.get(key)
    if value is None:
        return default
    names = tuple(name.strip() for name in value.split(",") if name.strip())
    if not names:
        raise ServingConfigError(f"{key}: empty")
    return names


def serving_profile(annotations: Mapping[str, str]) -> ServingProfile | None:
    """The profile a pod's annotations ask for; None when it did not opt in."""
    server = annotations.get(ANNOTATION)
    if server is None:
        return None
    server = server.strip().lower()
    if server == "custom":
        base = ServingProfile("custom", 0, "/metrics", ())
    elif server in PROFILES:
        base = PROFILES[server]
    else:
        raise ServingConfigError(f"{ANNOTATION}: {server!r} is not one of {', '.join([*PROFILES, 'custom'])}")
    port = base.port
    if PORT_ANNOTATION in annotations:
        text = annotations[PORT_ANNOTATION].strip()
        # isdigit() alone also accepts digits int() refuses ("²") and thousands of them: ASCII, at most 5
        if not (text.isascii() and text.isdigit() and len(text) <= 5) or not 0 < int(text) < 65536:
            raise ServingConfigError(f"{PORT_ANNOTATION}: {text[:40]!r} is not a port")
        port = int(text)
    if not port:
        raise ServingConfigError(f"{PORT_ANNOTATION}: required with {ANNOTATION}: custom")
    path = annotations.get(PATH_ANNOTATION, base.path).strip() or "/metrics"
    if not path.startswith("/"):
        raise ServingConfigError(f"{PATH_ANNOTATION}: {path[:40]!r} must start with /")
    if len(path) > MAX_PATH_CHARS or not (path.isascii() and path.isprintable()) or " " in path:
        raise ServingConfigError(f"{PATH_ANNOTATION}: {path[:40]!r} is not a URL path (printable ASCII, no spaces)")
    requests = _names(annotations, REQUESTS_ANNOTATION, base.requests)
    if not requests:
        raise ServingConfigError(f"{REQUESTS_ANNOTATION}: required with {ANNOTATION}: custom")
    return ServingProfile(
        server,
        port,
        path,
        requests,
        _names(annotations, PROMPT_TOKENS_ANNOTATION, base.prompt_tokens),
        _names(annotations, OUTPUT_TOKENS_ANNOTATION, base.output_tokens),
    )


@dataclass(frozen=True, slots=True)
class ServingCounters:
    """A server's cumulative counters at one reading (summed over their label sets); None: not exposed."""

    requests: float
    prompt_tokens: float | None = None
    output_tokens: float | None = None


MAX_COUNT: Final = float(2**53)
"""The largest request or token count read from a server (float64 counts every integer up to it exactly): a larger
one is refused, so that a tenant's exposition cannot overflow a sum (``math.fsum`` raises ``OverflowError``)."""


def _sum(samples: Mapping[str, list[float]], names: tuple[str, ...]) -> float | None:
    for name in names:
        values = samples.get(name)
        if values:
            return math.fsum(values)
    return None


def read_counters(samples: Iterable[tuple[str, Mapping[str, str], float]], profile: ServingProfile) -> ServingCounters:
    """The counters of ``profile`` in an exposition's ``(name, labels, value)`` samples.

    ValueError when the request counter is missing or a value is not finite, non-negative and at most
    :data:`MAX_COUNT` (sums of such values never overflow)."""
    wanted = {*profile.requests, *profile.prompt_tokens, *profile.output_tokens}
    found: dict[str, list[float]] = {}
    for name, _, value in samples:
        if name in wanted:
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} = {value!r}: not a finite non-negative number")
            if value > MAX_COUNT:
                raise ValueError(f"{name} = {value!r}: more than any server counts (at most 2**53)")
            found.setdefault(name, []).append(value)
    requests = _sum(found, profile.requests)
    if requests is None:
        raise ValueError(f"no request counter ({', '.join(profile.requests)}) in the exposition")
    return ServingCounters(requests, _sum(found, profile.prompt_tokens), _sum(found, profile.output_tokens))


@dataclass(frozen=True, slots=True)
class ServingInterval:
    """One pod's energy and work between two readings of its counters, ``(start_s, end_s]``."""

    start_s: float
    end_s: float
    energy_mj: int
    carbon_g: float
    requests: float
    prompt_tokens: float | None
    output_tokens: float | None

    @property
    def tokens(self) -> float | None:
        if self.prompt_tokens is None or self.output_tokens is None:
            return None
        return self.prompt_tokens + self.output_tokens

    def _per(self, amount: float | None) -> float | None:
        return self.energy_mj / MJ_PER_J / amount if amount is not None and amount > 0 else None

    @property
    def joules_per_request(self) -> float | None:
        return self._per(self.requests)

    @property
    def joules_per_output_token(self) -> float | None:
        return self._per(self.output_tokens)

    @property
    def joules_per_token(self) -> float | None:
        return self._per(self.tokens)

    @property
    def grams_per_1000_requests(self) -> float | None:
        return self.carbon_g / self.requests * 1000 if self.requests > 0 else None


@dataclass(slots=True)
class _PodState:
    counters: ServingCounters | None = None
    since_s: float = 0.0
    energy_mj: int = 0  # attributed since the last reading
    carbon_g: float = 0.0


@dataclass(slots=True)
class ServingTotals:
    """What a pod (or workload) did over every usable interval: the counters a report divides."""

    energy_mj: int = 0
    carbon_g: float = 0.0
    requests: float = 0.0
    prompt_tokens: float = 0.0
    output_tokens: float = 0.0

    def add(self, interval: ServingInterval) -> None:
        self.energy_mj += interval.energy_mj
        self.carbon_g += interval.carbon_g
        self.requests += interval.requests
        self.prompt_tokens += interval.prompt_tokens or 0.0
        self.output_tokens += interval.output_tokens or 0.0


@dataclass(slots=True)
class ServingMeter:
    """Per serving pod: energy attributed since its last reading, and its interval at each reading."""

    pods: dict[str, _PodState] = field(default_factory=dict)
    latest: dict[str, ServingInterval] = field(default_factory=dict)
    totals: dict[str, ServingTotals] = field(default_factory=dict)
    resets: int = 0

    def add_energy(self, pod_key: str, energy_mj: int, carbon_g: float) -> None:
        """A ledger delta of ``pod_key`` (kept only for pods being read)."""
        state = self.pods.get(pod_key)
        if state is not None and state.counters is not None:
            state.energy_mj += energy_mj
            state.carbon_g += carbon_g

    def observe(self, pod_key: str, time_s: float, counters: ServingCounters) -> ServingInterval | None:
        """A reading of the pod's counters at ``time_s``: the interval since the previous reading, or None for the
        first reading and after a counter went down (the server restarted: that interval's energy is dropped from
        the ratios and counted in ``resets``)."""
        state = self.pods.setdefault(pod_key, _PodState())
        previous, since_s = state.counters, state.since_s
        energy_mj, carbon_g = state.energy_mj, state.carbon_g
        state.counters, state.since_s, state.energy_mj, state.carbon_g = counters, time_s, 0, 0.0
        if previous is None:
            return None

        def delta(now: float | None, before: float | None) -> float | None:
            if now is None or before is None:
                return None
            return now - before

        deltas = (
            counters.requests - previous.requests,
            delta(counters.prompt_tokens, previous.prompt_tokens),
            delta(counters.output_tokens, previous.output_tokens),
        )
        if any(d is not None and d < 0 for d in deltas):
            self.resets += 1
            self.latest.pop(pod_key, None)
            return None
        interval = ServingInterval(since_s, time_s, energy_mj, carbon_g, deltas[0], deltas[1], deltas[2])
        self.latest[pod_key] = interval
        self.totals.setdefault(pod_key, ServingTotals()).add(interval)
        return interval

    def forget(self, pod_key: str) -> None:
        """The pod is gone (its totals stay with its workload's exported counters until the process ends)."""
        self.pods.pop(pod_key, None)
        self.latest.pop(pod_key, None)


def combine(intervals: Iterable[ServingInterval]) -> ServingInterval | None:
    """Several pods' latest intervals as one (a workload's figure: summed energy over summed work)."""
    chosen = list(intervals)
    if not chosen:
        return None

    def total(values: list[float | None]) -> float | None:
        return None if any(v is None for v in values) else math.fsum(v for v in values if v is not None)

    return ServingInterval(
        min(i.start_s for i in chosen),
        max(i.end_s for i in chosen),
        sum(i.energy_mj for i in chosen),
        math.fsum(i.carbon_g for i in chosen),
        math.fsum(i.requests for i in chosen),
        total([i.prompt_tokens for i in chosen]),
        total([i.output_tokens for i in chosen]),
    )


@dataclass(frozen=True, slots=True)
class WorkloadServing:
    """A serving workload's latest interval (its pods' latest intervals summed) and its totals so far."""

    namespace: str
    kind: str
    name: str
    latest: ServingInterval | None
    totals: ServingTotals


@dataclass(frozen=True, slots=True)
class ServingView:
    workloads: tuple[WorkloadServing, ...] = ()
    reads: Mapping[str, int] = field(default_factory=dict)
    resets: int = 0
