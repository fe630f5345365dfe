"""The JSONL trace format, version 1 (docs/trace-format.md): parsing and writing, pure and strict.

A trace is what the agent saw on one node: a header line, then one sample per line. Parsing validates every
value (types, finiteness, ranges, increasing time) and names the line of the first problem; writing produces
exactly what parsing accepts, so ``record`` output replays byte for byte.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

from jouleledger.core.model import (
    ContainerDevices,
    GpuInfo,
    GpuReading,
    MigInstance,
    NodeHeader,
    Owner,
    PodInfo,
    ProcessUsage,
    Sample,
)
from jouleledger.core.units import MAX_COUNTER_MJ, PID_MAX, InvalidValueError, checked_float, checked_int

__all__ = [
    "TRACE_VERSION",
    "TraceError",
    "dump_header",
    "dump_sample",
    "parse_header",
    "parse_sample",
    "read_trace",
]

_T = TypeVar("_T")

TRACE_VERSION = 1
MAX_POWER_LIMIT_W = 10_000.0
MAX_G_PER_KWH = 5_000.0
MAX_ABS_T_S = 1e12  # sample times in seconds: about 31,700 years either side of zero (unix time fits)
MAX_POWER_MW = 2**63 - 1  # readable; a reading above the GPU's power limit is rejected and counted, not an error
MAX_STRING_CHARS = 1024  # names, ids and labels: Kubernetes' own limits are 63 to 317 characters


class TraceError(ValueError):
    """A trace line that cannot be used; ``line`` is its 1-based line number."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"trace line {line}: {message}")
        self.line = line


def _obj(value: object, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{what} must be an object")
    return value


def _list(value: object, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError(f"{what} must be a list")
    return value


def _str(value: object, what: str, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str) or (not value and not allow_empty):
        raise ValueError(f"{what} must be a non-empty string")
    if len(value) > MAX_STRING_CHARS:
        raise ValueError(f"{what} is longer than {MAX_STRING_CHARS} characters ({len(value)})")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:  # a lone surrogate (JSON "\ud800"): no exporter could write it
        raise ValueError(f"{what} is not valid Unicode (a lone surrogate at character {error.start + 1})") from None
    return value


def parse_header(data: Mapping[str, Any]) -> NodeHeader:
    """Parse the header object (line 1)."""
    if data.get("type") != "header":
        raise ValueError('the first line must be the header ({"type": "header", ...})')
    if data.get("version") != TRACE_VERSION:
        raise ValueError(f"unsupported trace version {data.get('version')!r} (this reader knows {TRACE_VERSION})")
    gpus = []
    seen: set[str] = set()
    for i, raw in enumerate(_list(data.get("gpus"), "header.gpus")):
        gpu = _obj(raw, f"header.gpus[{i}]")
        uuid = _str(gpu.get("uuid"), f"header.gpus[{i}].uuid")
        mig = []
        for j, raw_instance in enumerate(_list(gpu.get("mig") or [], f"header.gpus[{i}].mig")):
            instance = _obj(raw_instance, f"header.gpus[{i}].mig[{j}]")
            mig.append(
                MigInstance(
                    _str(instance.get("uuid"), f"header.gpus[{i}].mig[{j}].uuid"),
                    checked_int(f"header.gpus[{i}].mig[{j}].slices", instance.get("slices"), minimum=1),
                )
            )
        energy_counter = gpu.get("energy_counter")
        if not isinstance(energy_counter, bool):
            raise ValueError(f"header.gpus[{i}].energy_counter must be true or false")
        for identity in [uuid, *(instance.uuid for instance in mig)]:
            if identity in seen:
                raise ValueError(f"device {identity!r} appears twice in the header")
            seen.add(identity)
        gpus.append(
            GpuInfo(
                uuid=uuid,
                model=_str(gpu.get("model", "unknown"), f"header.gpus[{i}].model"),
                energy_counter=energy_counter,
                power_limit_w=_power_limit_w(i, gpu.get("power_limit_w")),
                mig=tuple(mig),
            )
        )
    return NodeHeader(node=_str(data.get("node"), "header.node"), gpus=tuple(gpus))


def _power_limit_w(index: int, value: object) -> float:
    what = f"header.gpus[{index}].power_limit_w"
    if value is None:
        raise ValueError(f"{what} is required (the GPU's power limit in watts bounds every reading)")
    limit = checked_float(what, value, maximum=MAX_POWER_LIMIT_W)
    if not limit > 0:
        raise InvalidValueError(what, value, "must be positive")
    return limit


def _parse_pod(raw: object, where: str) -> PodInfo:
    pod = _obj(raw, where)
    labels_raw = _obj(pod.get("labels") or {}, f"{where}.labels")
    labels = {
        _str(k, f"{where}.labels key"): _str(v, f"{where}.labels[{k}]", allow_empty=True) for k, v in labels_raw.items()
    }
    owner_raw = pod.get("owner")
    owner = None
    if owner_raw is not None:
        owner_obj = _obj(owner_raw, f"{where}.owner")
        owner = Owner(
            _str(owner_obj.get("kind"), f"{where}.owner.kind"),
            _str(owner_obj.get("name"), f"{where}.owner.name"),
            _str(owner_obj.get("uid", ""), f"{where}.owner.uid", allow_empty=True),
        )
    containers = []
    for k, raw_container in enumerate(_list(pod.get("containers") or [], f"{where}.containers")):
        container = _obj(raw_container, f"{where}.containers[{k}]")
        containers.append(
            ContainerDevices(
                name=_str(container.get("name"), f"{where}.containers[{k}].name"),
                devices=tuple(
                    _str(device, f"{where}.containers[{k}].devices[]")
                    for device in _list(container.get("devices") or [], f"{where}.containers[{k}].devices")
                ),
                pids=tuple(
                    checked_int(f"{where}.containers[{k}].pids[]", pid, minimum=1, maximum=PID_MAX)
                    for pid in _list(container.get("pids") or [], f"{where}.containers[{k}].pids")
                ),
            )
        )
    return PodInfo(
        namespace=_str(pod.get("namespace"), f"{where}.namespace"),
        name=_str(pod.get("name"), f"{where}.name"),
        uid=_str(pod.get("uid", ""), f"{where}.uid", allow_empty=True),
        labels=labels,
        owner=owner,
        containers=tuple(containers),
    )


def parse_sample(data: Mapping[str, Any]) -> Sample:
    """Parse one sample object (any line after the header)."""
    if data.get("type") != "sample":
        raise ValueError(f"expected a sample line, got type {data.get('type')!r}")
    t_s = checked_float("t", data.get("t"), minimum=-MAX_ABS_T_S, maximum=MAX_ABS_T_S)
    grid = data.get("grid_g_per_kwh")
    grid_g_per_kwh = None if grid is None else checked_float("grid_g_per_kwh", grid, maximum=MAX_G_PER_KWH)
    readings = []
    seen: set[str] = set()
    for i, raw in enumerate(_list(data.get("gpus") or [], "gpus")):
        gpu = _obj(raw, f"gpus[{i}]")
        uuid = _str(gpu.get("uuid"), f"gpus[{i}].uuid")
        if uuid in seen:
            raise ValueError(f"GPU {uuid!r} appears twice in one sample")
        seen.add(uuid)
        energy = gpu.get("energy_mj")
        power = gpu.get("power_mw")
        processes = tuple(
            ProcessUsage(
                checked_int(
                    f"gpus[{i}].processes[{j}].pid",
                    _obj(p, f"gpus[{i}].processes[{j}]").get("pid"),
                    minimum=1,
                    maximum=PID_MAX,
                ),
                checked_float(f"gpus[{i}].processes[{j}].sm_util", p.get("sm_util", 0), maximum=100.0),
            )
            for j, p in enumerate(_list(gpu.get("processes") or [], f"gpus[{i}].processes"))
        )
        readings.append(
            GpuReading(
                uuid=uuid,
                energy_mj=None
                if energy is None
                else checked_int(f"gpus[{i}].energy_mj", energy, maximum=MAX_COUNTER_MJ),
                power_mw=None if power is None else checked_int(f"gpus[{i}].power_mw", power, maximum=MAX_POWER_MW),
                processes=processes,
            )
        )
    pods = tuple(_parse_pod(raw, f"pods[{i}]") for i, raw in enumerate(_list(data.get("pods") or [], "pods")))
    return Sample(t_s=t_s, gpus=tuple(readings), pods=pods, grid_g_per_kwh=grid_g_per_kwh)


def _decoded(lines: Iterable[str | bytes]) -> Iterator[str]:
    for number, line in enumerate(lines, start=1):
        if isinstance(line, bytes):
            try:
                yield line.decode("utf-8")
            except UnicodeDecodeError as error:
                raise TraceError(number, f"not valid UTF-8 (byte {error.start + 1} of the line)") from error
        else:
            yield line


def read_trace(lines: Iterable[str | bytes]) -> tuple[NodeHeader, Iterator[Sample]]:
    """Parse a trace from its lines: the header now, samples lazily. Errors are :class:`TraceError` (also for
    text that is not valid UTF-8, when ``lines`` are bytes)."""
    numbered = enumerate(_decoded(lines), start=1)
    header: NodeHeader | None = None
    for number, line in numbered:
        if not line.strip():
            continue
        header = _parse_line(number, line, parse_header)
        break
    if header is None:
        raise TraceError(1, "the trace is empty (no header line)")

    def samples() -> Iterator[Sample]:
        last_t: float | None = None
        for number, line in numbered:
            if not line.strip():
                continue
            sample = _parse_line(number, line, parse_sample)
            if last_t is not None and not sample.t_s > last_t:
                raise TraceError(number, f"sample time t={sample.t_s} does not increase (previous t={last_t})")
            last_t = sample.t_s
            yield sample

    return header, samples()


def _parse_line(number: int, line: str, parse: Callable[[Mapping[str, Any]], _T]) -> _T:
    try:
        data = json.loads(line)
    except json.JSONDecodeError as error:
        raise TraceError(number, f"not valid JSON ({error.msg} at column {error.colno})") from error
    except ValueError as error:  # e.g. an integer of more than 4,300 digits
        raise TraceError(number, f"not usable JSON ({error})") from error
    except RecursionError as error:
        raise TraceError(number, "not usable JSON (nested too deeply)") from error
    try:
        return parse(_obj(data, "the line"))
    except (ValueError, InvalidValueError) as error:
        raise TraceError(number, str(error)) from error


# --- writing ---------------------------------------------------------------------------------------------------


def dump_header(header: NodeHeader) -> str:
    """One JSON line for ``header``."""
    gpus: list[dict[str, Any]] = []
    for gpu in header.gpus:
        entry: dict[str, Any] = {
            "uuid": gpu.uuid,
            "model": gpu.model,
            "energy_counter": gpu.energy_counter,
            "power_limit_w": gpu.power_limit_w,
        }
        if gpu.mig:
            entry["mig"] = [{"uuid": instance.uuid, "slices": instance.slices} for instance in gpu.mig]
        gpus.append(entry)
    return json.dumps({"type": "header", "version": TRACE_VERSION, "node": header.node, "gpus": gpus})


def dump_sample(sample: Sample) -> str:
    """One JSON line for ``sample``."""
    data: dict[str, Any] = {"type": "sample", "t": sample.t_s}
    if sample.grid_g_per_kwh is not None:
        data["grid_g_per_kwh"] = sample.grid_g_per_kwh
    data["gpus"] = [
        {
            "uuid": reading.uuid,
            "energy_mj": reading.energy_mj,
            "power_mw": reading.power_mw,
            "processes": [{"pid": p.pid, "sm_util": p.sm_util} for p in reading.processes],
        }
        for reading in sample.gpus
    ]
    data["pods"] = [
        {
            "namespace": pod.namespace,
            "name": pod.name,
            "uid": pod.uid,
            "labels": dict(pod.labels),
            "owner": None
            if pod.owner is None
            else {"kind": pod.owner.kind, "name": pod.owner.name, "uid": pod.owner.uid},
            "containers": [{"name": c.name, "devices": list(c.devices), "pids": list(c.pids)} for c in pod.containers],
        }
        for pod in sample.pods
    ]
    return json.dumps(data)
