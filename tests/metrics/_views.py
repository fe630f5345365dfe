"""Hand-built export views for the collector tests; the expected numbers in the tests are worked out from these.

Node ``gpu-node-1``:

- ``team-a/train-0`` (Job ``train``), running: ``main`` on ``GPU-aaaa`` 3 000 000 mJ / 100 GPU-s and ``sidecar`` on
  ``GPU-aaaa`` 1 500 mJ / 0.25 GPU-s.
- ``team-b/infer-0`` (no owner), running: ``server`` on ``MIG-cccc`` 123 456 mJ / 30.25 GPU-s.
- ``team-a/done-0`` (Job ``done``), finished at 1 700 000 050 s: ``main`` on ``GPU-bbbb`` 250 mJ / 0.5 GPU-s.
- ``team-a/web-0`` re-created: the old record (finished at 1 700 000 020 s) 750 mJ / 3 GPU-s and the new one
  (running) 250 mJ / 1.5 GPU-s, both ``c`` on ``GPU-aaaa``.
- ``team-a/batch-0`` re-created, both finished (at 1 700 000 030 s and 1 700 000 060 s): 2 000 mJ / 1 GPU-s and
  3 000 mJ / 2 GPU-s, both ``main`` on ``GPU-bbbb``.
"""

from __future__ import annotations

from jouleledger.core.model import Owner
from jouleledger.core.snapshot import AgentStatus, ExportView, GpuTotals, LedgerSnapshot, PodDeviceTotals, PodRecord

NODE = "gpu-node-1"
ALLOWLIST = ("app.kubernetes.io/name", "team")
T0 = 1_700_000_000.0


def _record(
    namespace: str,
    name: str,
    uid: str,
    *,
    labels: dict[str, str] | None = None,
    owner: Owner | None = None,
    first_seen_s: float = T0,
    finished_s: float | None = None,
) -> PodRecord:
    return PodRecord(
        namespace=namespace,
        name=name,
        uid=uid,
        labels=labels or {},
        owner=owner,
        first_seen_s=first_seen_s,
        last_seen_s=finished_s if finished_s is not None else T0 + 100,
        finished_s=finished_s,
    )


def _device(record: PodRecord, container: str, device: str, energy_mj: int, gpu_seconds: float) -> PodDeviceTotals:
    return PodDeviceTotals(
        pod_key=record.uid,
        namespace=record.namespace,
        pod=record.name,
        container=container,
        device=device,
        energy_mj=energy_mj,
        gpu_seconds=gpu_seconds,
    )


def example_view() -> ExportView:
    train = _record(
        "team-a",
        "train-0",
        "uid-train-0",
        labels={"app.kubernetes.io/name": "trainer", "team": "a", "secret": "do-not-export"},
        owner=Owner(kind="Job", name="train", uid="uid-job-train"),
    )
    infer = _record("team-b", "infer-0", "uid-infer-0", labels={"team": "b"})
    done = _record(
        "team-a",
        "done-0",
        "uid-done-0",
        owner=Owner(kind="Job", name="done", uid="uid-job-done"),
        finished_s=T0 + 50,
    )
    web_old = _record("team-a", "web-0", "uid-web-old", first_seen_s=T0, finished_s=T0 + 20)
    web_new = _record("team-a", "web-0", "uid-web-new", first_seen_s=T0 + 21)
    batch_1 = _record("team-a", "batch-0", "uid-batch-1", first_seen_s=T0, finished_s=T0 + 30)
    batch_2 = _record("team-a", "batch-0", "uid-batch-2", first_seen_s=T0 + 31, finished_s=T0 + 60)
    records = (train, infer, done, web_old, web_new, batch_1, batch_2)
    ledger = LedgerSnapshot(
        node=NODE,
        t_s=T0 + 100,
        pods={record.uid: record for record in records},
        devices=(
            _device(train, "main", "GPU-aaaa", 3_000_000, 100.0),
            _device(train, "sidecar", "GPU-aaaa", 1_500, 0.25),
            _device(infer, "server", "MIG-cccc", 123_456, 30.25),
            _device(done, "main", "GPU-bbbb", 250, 0.5),
            _device(web_old, "c", "GPU-aaaa", 750, 3.0),
            _device(web_new, "c", "GPU-aaaa", 250, 1.5),
            _device(batch_1, "main", "GPU-bbbb", 2_000, 1.0),
            _device(batch_2, "main", "GPU-bbbb", 3_000, 2.0),
        ),
        gpus=(
            GpuTotals(
                uuid="GPU-aaaa",
                model="NVIDIA H100 80GB HBM3",
                measured_mj=5_000_000,
                unallocated_mj=1_997_500,
                power_w=312.5,
                power_limit_w=700.0,
            ),
            GpuTotals(
                uuid="GPU-bbbb",
                model="NVIDIA A100-SXM4-40GB",
                measured_mj=2_000_000,
                unallocated_mj=1_994_750,
                power_w=None,
            ),
        ),
        rejected={("GPU-aaaa", "above_power_limit"): 4},
    )
    status = AgentStatus(
        node=NODE,
        backend="nvml",
        simulated=False,
        version="0.1.0",
        epoch="0123456789abcdef",
        ticks_total=42,
        tick_cpu_seconds_total=1.25,
        last_tick_unix_s=T0 + 100.5,
        pod_source_up=False,
        pod_source_errors_total=3,
        reading_errors={("GPU-bbbb", "gpu_lost"): 2},
        checkpoint_errors_total=1,
        checkpoint_writes_total=7,
        started_unix_s=T0,
    )
    return ExportView(ledger=ledger, status=status, label_allowlist=ALLOWLIST)


def running_pods_view(count: int) -> ExportView:
    """``count`` running pods, each with one container on its own device, and no GPUs."""
    records = [_record("ns", f"pod-{index}", f"uid-{index}") for index in range(count)]
    ledger = LedgerSnapshot(
        node=NODE,
        t_s=T0,
        pods={record.uid: record for record in records},
        devices=tuple(_device(record, "main", f"GPU-{index}", 1_000, 1.0) for index, record in enumerate(records)),
        gpus=(),
    )
    return ExportView(ledger=ledger, status=AgentStatus(node=NODE, backend="replay", simulated=True, version="t"))
