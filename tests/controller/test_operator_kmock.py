"""The operator in-process (kopf as an asyncio task) against a stateful Kubernetes API (kmock) and fake agents.

Passes are driven by the test (the scrape interval is an hour, so only the start-up pass runs on its own), which
makes every interval's intensity and every agent reading deterministic. Expected values are computed by hand.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

import aiohttp
import jsonschema
import kopf
import pytest
import yaml

from jouleledger.controller.app import OperatorApp, OperatorOptions
from jouleledger.controller.config import parse_config
from jouleledger.core.footprints import KEY_VERSION
from tests._kube_emulator import (
    AGENT_NAMESPACE,
    Emulator,
    FakeAgents,
    Fault,
    completed,
    job_object,
    place_agents,
    pod_object,
    rfc3339,
)
from tests._prometheus import SCRAPE_ACCEPT
from tests._tools import REPO_ROOT
from tests.controller._exposition import Pod, agent_text
from tests.controller._operator import (
    FIXTURE_CONFIG,
    Running,
    ScriptedIntensity,
    StartOperator,
    eventually,
    no_sleep,
    stop,
    test_settings,
)

pytestmark = pytest.mark.slow

JOB_PATH = "/apis/batch/v1/namespaces/ml/jobs/train"
CRD = REPO_ROOT / "charts" / "jouleledger" / "crds" / "workloadfootprints.jouleledger.io.yaml"


def train_pod(energy_j: float, gpu_seconds: float, *, uid: str = "pod-1") -> Pod:
    return Pod("ml", "train-x", uid, energy_j, gpu_seconds, "Job", "train", "job-1", "vision")


def setup_cluster(api: Emulator, agents: FakeAgents, nodes: dict[str, str], job_node: str = "n1") -> None:
    """Nodes (name -> loopback IP), their agents, and Job ``ml/train`` (uid job-1) with one pod on ``job_node``."""
    place_agents(api, agents, nodes)
    api.objects["batch/v1/jobs", "ml", "train"] = job_object("ml", "train", "job-1")
    api.objects["v1/pods", "ml", "train-x"] = pod_object(
        "ml", "train-x", "pod-1", job_node, owner_kind="Job", owner_name="train", owner_uid="job-1"
    )


def job_annotations(api: Emulator) -> dict[str, str]:
    annotations: dict[str, str] = api.objects["batch/v1/jobs", "ml", "train"].get("metadata", {}).get("annotations", {})
    return {key: value for key, value in annotations.items() if key.startswith("jouleledger.io/")}


def requests_to(api: Emulator, method: str, path: str) -> int:
    return sum(1 for request in api.requests if request.method.value == method and request.url.path == path)


def events(api: Emulator) -> list[dict[str, Any]]:
    return [obj.raw for (resource, _, _), obj in api.objects.items() if resource.plural == "events" and not obj.deleted]


async def complete_job(api: Emulator, when_unix_s: float, kind: str = "Complete") -> None:
    async with api.patch(JOB_PATCH_STATUS, json=completed(rfc3339(when_unix_s), kind)) as response:
        assert response.status == 200, await response.text()


JOB_PATCH_STATUS = JOB_PATH + "/status"


async def job_seen_finished(running: Running) -> None:
    await eventually(
        lambda: "job-1" in running.app.cluster.jobs and running.app.cluster.jobs["job-1"].state.finished,
        what="the Job's completion event",
    )


async def scrape_metrics(running: Running) -> str:
    """The operator's ``/metrics`` as Prometheus scrapes it (preferring OpenMetrics): the operator answers in the
    classic text format, which it writes about twice as fast."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{running.app.metrics_port}/metrics", headers={"Accept": SCRAPE_ACCEPT}) as r,
    ):
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return await r.text()


def crd_validator() -> jsonschema.Draft7Validator:
    crd = yaml.safe_load(CRD.read_text())
    return jsonschema.Draft7Validator(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


async def test_job_footprint_recorded_once_with_hand_computed_values(
    api: Emulator, agents: FakeAgents, start_operator: StartOperator, pue_config: Any
) -> None:
    setup_cluster(api, agents, {"n1": "127.0.0.1"})
    base = time.time()
    agents.texts["n1"] = agent_text("n1", base)  # tracking starts before the pod's counters appear
    provider = ScriptedIntensity({"z1": 400.0})
    running = await start_operator(provider, config=pue_config)
    accountant = running.accountant

    # Interval 1: 1.8 MJ (0.5 kWh) and 1800 GPU-s at 400 g/kWh; interval 2: +1 kWh and +3600 GPU-s at 200 g/kWh.
    agents.texts["n1"] = agent_text("n1", base + 1, [train_pod(1_800_000.0, 1800.0)])
    await accountant.run_pass()
    provider.g_per_kwh["z1"] = 200.0
    agents.texts["n1"] = agent_text("n1", base + 2, [train_pod(5_400_000.0, 5400.0)])
    await accountant.run_pass()

    await complete_job(api, base + 2.5)
    await job_seen_finished(running)
    await accountant.run_pass()  # the agent's last tick (base + 2) is before the completion: not final yet
    assert job_annotations(api) == {}

    agents.texts["n1"] = agent_text("n1", base + 3, [train_pod(5_400_000.0, 5400.0)])
    await accountant.run_pass()
    # 1.5 kWh; 1.5 GPU-h; 0.5 x 1.5 x 400 + 1.0 x 1.5 x 200 = 600 g + 1.5 GPU-h x 20 g = 630 g; 1.5 x 1.5 x 0.10 USD.
    assert job_annotations(api) == {
        "jouleledger.io/energy-kwh": "1.500000",
        "jouleledger.io/gpu-hours": "1.500000",
        "jouleledger.io/co2e-grams": "630.000",
        "jouleledger.io/cost": "0.2250 USD",
        "jouleledger.io/intensity-source": "static",
        "jouleledger.io/method": "measured-nvml-energy-counter",
        KEY_VERSION: "1",
    }
    footprint = api.objects["jouleledger.io/v1alpha1/workloadfootprints", "ml", "job-1"].raw
    assert footprint["status"]["finalized"] is True
    assert footprint["status"]["final"]["energyMillijoules"] == 5_400_000_000
    assert footprint["status"]["pods"] == 1
    assert footprint["spec"]["workload"] == {"apiVersion": "batch/v1", "kind": "Job", "name": "train", "uid": "job-1"}
    assert not list(crd_validator().iter_errors(footprint))
    (event,) = events(api)
    assert (event["reason"], event["type"], event["involvedObject"]["uid"]) == ("FootprintRecorded", "Normal", "job-1")

    # Re-delivered events, a relist after 410 Gone and more passes never write the Job again.
    await api.gone("batch/v1/jobs")
    await api.gone("v1/pods")
    agents.texts["n1"] = agent_text("n1", base + 4, [train_pod(5_400_000.0, 5400.0)])
    for _ in range(3):
        await accountant.run_pass()
    assert requests_to(api, "PATCH", JOB_PATH) == 1
    assert len(events(api)) == 1

    metrics = await scrape_metrics(running)
    assert 'jouleledger_namespace_gpu_energy_joules_total{namespace="ml"} 5.4e+06' in metrics
    assert 'jouleledger_team_carbon_grams_total{scope="embodied",team="vision"} 30.0' in metrics
    assert "jouleledger_operator_job_footprints_written_total 1.0" in metrics
    assert 'jouleledger_operator_scrapes_total{result="ok"}' in metrics


async def test_operator_restart_mid_job_counts_every_joule_once(
    api: Emulator, agents: FakeAgents, start_operator: StartOperator
) -> None:
    setup_cluster(api, agents, {"n1": "127.0.0.1"})
    base = time.time()
    agents.texts["n1"] = agent_text("n1", base)
    first = await start_operator(ScriptedIntensity(), write_interval_s=0.0)
    agents.texts["n1"] = agent_text("n1", base + 1, [train_pod(3600.0, 10.0)])  # 1 Wh
    await first.accountant.run_pass()
    agents.texts["n1"] = agent_text("n1", base + 2, [train_pod(7200.0, 20.0)])  # folded, not persisted
    first.accountant.write_interval_s = 3600.0
    await first.accountant.run_pass()
    await stop(first)

    # While no operator runs the pod draws another 3600 J; then the operator restarts (its start-up pass restores).
    agents.texts["n1"] = agent_text("n1", base + 3, [train_pod(10_800.0, 30.0)])
    second = await start_operator(ScriptedIntensity())
    await complete_job(api, base + 3.5)
    await job_seen_finished(second)
    agents.texts["n1"] = agent_text("n1", base + 4, [train_pod(10_800.0, 30.0)])
    await second.accountant.run_pass()
    # 10 800 J = 0.003 kWh in total: the 1 Wh persisted before the restart is not counted again.
    assert job_annotations(api)["jouleledger.io/energy-kwh"] == "0.003000"
    assert job_annotations(api)["jouleledger.io/gpu-hours"] == f"{30 / 3600:.6f}"

    # A stale view of the Job (an event from before the annotation) must not write it again: the Job is re-read.
    job = second.app.cluster.jobs["job-1"]
    second.app.cluster.jobs["job-1"] = dataclasses.replace(job, state=dataclasses.replace(job.state, annotations={}))
    second.accountant.recorder.done.clear()
    await second.accountant.run_pass()
    assert requests_to(api, "PATCH", JOB_PATH) == 1


async def test_agent_restart_without_checkpoint_counts_the_new_value(
    api: Emulator, agents: FakeAgents, start_operator: StartOperator
) -> None:
    setup_cluster(api, agents, {"n1": "127.0.0.1"})
    base = time.time()
    agents.texts["n1"] = agent_text("n1", base)
    running = await start_operator(ScriptedIntensity())
    for tick, energy_j in ((1, 7200.0), (2, 1800.0), (3, 3600.0)):  # 7200 J, reset to 1800 J, +1800 J
        agents.texts["n1"] = agent_text("n1", base + tick, [train_pod(energy_j, 1.0)])
        await running.accountant.run_pass()
    await complete_job(api, base + 3.5)
    await job_seen_finished(running)
    agents.texts["n1"] = agent_text("n1", base + 4, [train_pod(3600.0, 1.0)])
    await running.accountant.run_pass()
    assert job_annotations(api)["jouleledger.io/energy-kwh"] == f"{10_800 / 3_600_000:.6f}"
    assert running.accountant.stats.counter_resets == {"n1": 1}
    assert 'jouleledger_operator_agent_resets_total{node="n1"} 1.0' in await scrape_metrics(running)


async def test_api_errors_and_relists_are_retried_and_still_write_once(
    api: Emulator, agents: FakeAgents, start_operator: StartOperator
) -> None:
    setup_cluster(api, agents, {"n1": "127.0.0.1"})
    base = time.time()
    agents.texts["n1"] = agent_text("n1", base)
    running = await start_operator(ScriptedIntensity(), api_sleep=no_sleep)  # retries back off without waiting
    footprints = "/apis/jouleledger.io/v1alpha1/namespaces/ml/workloadfootprints"
    api.faults += [
        Fault("POST", footprints + "$", 500, count=2),
        Fault("PATCH", footprints + "/job-1/status$", 429, retry_after="0"),
        Fault("GET", JOB_PATH + "$", 503),
        Fault("PATCH", JOB_PATH + "$", 500, count=2),
    ]
    agents.texts["n1"] = agent_text("n1", base + 1, [train_pod(3600.0, 1.0)])
    await running.accountant.run_pass()

    # The watch of Jobs gets 410 Gone; the relist fails once (500), then is throttled once (429).
    api.faults += [Fault("GET", "/apis/batch/v1/jobs$", 500), Fault("GET", "/apis/batch/v1/jobs$", 429)]
    await api.gone("batch/v1/jobs")
    await complete_job(api, base + 1.5)
    await job_seen_finished(running)
    agents.texts["n1"] = agent_text("n1", base + 2, [train_pod(3600.0, 1.0)])
    await running.accountant.run_pass()
    assert job_annotations(api)["jouleledger.io/energy-kwh"] == "0.001000"
    assert all(fault.count == 0 for fault in api.faults)
    assert requests_to(api, "PATCH", JOB_PATH) == 3  # two 500s, then the one write
    await running.accountant.run_pass()
    assert requests_to(api, "PATCH", JOB_PATH) == 3


async def test_agent_timeout_backs_off_and_the_job_is_recorded_incomplete_at_the_deadline(
    api: Emulator, agents: FakeAgents, start_operator: StartOperator
) -> None:
    setup_cluster(api, agents, {"n1": "127.0.0.1", "n2": "127.0.0.2"}, job_node="n2")
    base = time.time()
    agents.texts["n1"] = agent_text("n1", base)
    agents.texts["n2"] = agent_text("n2", base)
    # The hung agent never answers within the scrape deadline; the healthy one answers far inside it even on a
    # loaded machine. The finalisation deadline is passed by stepping the operator's clock, not by waiting.
    config = parse_config({"scrape": {"timeoutSeconds": 2.0}, "maxGpuPowerW": 10_000})
    stepped_s = [0.0]
    running = await start_operator(
        ScriptedIntensity(), config=config, finalize_deadline_s=60.0, clock=lambda: time.time() + stepped_s[0]
    )
    agents.texts["n2"] = agent_text("n2", base + 1, [train_pod(3600.0, 1.0)])
    await running.accountant.run_pass()
    agents.delay_s["n2"] = 6.0  # the agent on n2 stops answering in time
    agents.texts["n1"] = agent_text("n1", base + 2)  # the agent on n1 keeps ticking
    await complete_job(api, base + 1.5)
    await job_seen_finished(running)
    await running.accountant.run_pass()
    assert running.accountant.stats.scrapes["timeout"] == 1
    assert job_annotations(api) == {}
    hits = agents.hits["n2"]
    await running.accountant.run_pass()  # second failure ... wait: the first retry is immediate
    assert running.accountant.stats.scrapes["timeout"] == 2
    await running.accountant.run_pass()  # now backing off: not even tried
    assert agents.hits["n2"] == hits + 1
    stepped_s[0] = 61.0  # past the finalisation deadline
    await running.accountant.run_pass()
    assert job_annotations(api)["jouleledger.io/energy-kwh"] == "0.001000"
    (event,) = events(api)
    assert (event["reason"], event["type"]) == ("FootprintIncomplete", "Warning")
    assert "n2" in event["message"]
    footprint = api.objects["jouleledger.io/v1alpha1/workloadfootprints", "ml", "job-1"].raw
    assert footprint["status"]["final"]["complete"] is False
    assert footprint["status"]["final"]["missingNodes"] == ["n2"]


async def test_intensity_fallbacks_are_recorded_and_a_failing_provider_loses_nothing(
    api: Emulator, agents: FakeAgents, start_operator: StartOperator
) -> None:
    setup_cluster(api, agents, {"n1": "127.0.0.1"})
    base = time.time()
    agents.texts["n1"] = agent_text("n1", base)
    provider = ScriptedIntensity({"z1": 100.0}, fallback="timeout")
    running = await start_operator(provider)
    provider.raises = True
    agents.texts["n1"] = agent_text("n1", base + 1, [train_pod(3600.0, 1.0)])
    await running.accountant.run_pass()  # not folded: the zone has no intensity this pass
    assert "job-1" not in running.accountant.ledger.accounts
    provider.raises = False
    agents.texts["n1"] = agent_text("n1", base + 2, [train_pod(7200.0, 2.0)])
    await running.accountant.run_pass()
    await complete_job(api, base + 2.5)
    await job_seen_finished(running)
    agents.texts["n1"] = agent_text("n1", base + 3, [train_pod(7200.0, 2.0)])
    await running.accountant.run_pass()
    annotations = job_annotations(api)
    assert annotations["jouleledger.io/energy-kwh"] == "0.002000"  # all 7200 J, folded one pass late
    assert annotations["jouleledger.io/intensity-source"] == "static-fallback"
    assert annotations["jouleledger.io/co2e-grams"] == f"{0.002 * 100:.3f}"  # PUE 1.0 by default
    metrics = await scrape_metrics(running)
    assert 'jouleledger_operator_intensity_fallbacks_total{provider="electricitymaps",reason="timeout"}' in metrics
    assert 'jouleledger_operator_job_footprint_errors_total{reason="intensity_error"} 1.0' in metrics


async def test_dry_run_writes_nothing(api: Emulator, agents: FakeAgents, start_operator: StartOperator) -> None:
    setup_cluster(api, agents, {"n1": "127.0.0.1"})
    base = time.time()
    agents.texts["n1"] = agent_text("n1", base)
    running = await start_operator(ScriptedIntensity(), dry_run=True)
    agents.texts["n1"] = agent_text("n1", base + 1, [train_pod(3600.0, 1.0)])
    await running.accountant.run_pass()
    await complete_job(api, base + 1.5)
    await job_seen_finished(running)
    writes_before = sum(1 for request in api.requests if request.method.value in ("POST", "PATCH"))
    agents.texts["n1"] = agent_text("n1", base + 2, [train_pod(3600.0, 1.0)])
    await running.accountant.run_pass()
    assert running.accountant.ledger.accounts["job-1"].final is not None
    assert sum(1 for request in api.requests if request.method.value in ("POST", "PATCH")) == writes_before
    assert job_annotations(api) == {}


async def test_once_runs_one_pass_and_writes(api: Emulator, agents: FakeAgents) -> None:
    setup_cluster(api, agents, {"n1": "127.0.0.1"})
    base = time.time()
    api.objects["batch/v1/jobs", "ml", "train"] = {
        **job_object("ml", "train", "job-1"),
        **completed(rfc3339(base - 10)),
    }
    agents.texts["n1"] = agent_text("n1", base, [train_pod(3600.0, 1.0)])
    import kopf

    options = OperatorOptions(agent_namespace=AGENT_NAMESPACE, agent_port=agents.port, serve_metrics=False)
    app = OperatorApp(
        options,
        FIXTURE_CONFIG,
        ScriptedIntensity(),
        connection=kopf.ConnectionInfo(server=str(api.url).rstrip("/")),
    )
    summary = await app.once()
    assert (summary.restored, summary.agents, summary.scraped_ok, summary.annotated) == (True, 1, 1, 1)
    # The pod was present at the first (only) scrape and no footprint held it: its full value is counted.
    assert job_annotations(api)["jouleledger.io/energy-kwh"] == "0.001000"


async def test_kopf_shutdown_flushes_every_changed_footprint(api: Emulator, agents: FakeAgents) -> None:
    """SIGTERM (a rolling upgrade): kopf stops and runs its cleanup handler, which persists what was folded since the
    last write; without the flush the pass's energy would wait for a write interval that never comes."""
    setup_cluster(api, agents, {"n1": "127.0.0.1"})
    base = time.time()
    agents.texts["n1"] = agent_text("n1", base)
    options = OperatorOptions(
        listen_address="127.0.0.1",
        port=0,
        agent_namespace=AGENT_NAMESPACE,
        agent_port=agents.port,
        scrape_interval_s=3600.0,
        standalone=True,
    )
    app = OperatorApp(
        options,
        FIXTURE_CONFIG,
        ScriptedIntensity(),
        connection=kopf.ConnectionInfo(server=str(api.url).rstrip("/")),
        write_interval_s=3600.0,
        clock_skew_s=0.0,
    )
    stop_flag = asyncio.Event()
    task = asyncio.create_task(app.operate(stop_flag=stop_flag, settings=test_settings()))
    try:
        await eventually(lambda: app.accountant is not None and app.accountant.passes >= 1, what="first pass")
        await eventually(lambda: len(app.cluster.agent_targets()) == 1, what="agent discovered")
        accountant = app.accountant
        assert accountant is not None
        agents.texts["n1"] = agent_text("n1", base + 1, [train_pod(3600.0, 10.0)])
        await accountant.run_pass()  # first write of the footprint
        agents.texts["n1"] = agent_text("n1", base + 2, [train_pod(7200.0, 20.0)])
        await accountant.run_pass()  # folded; the next write would be due in an hour
        key = ("jouleledger.io/v1alpha1/workloadfootprints", "ml", "job-1")
        assert api.objects[key].raw["status"]["energyMillijoules"] == 3_600_000
        stop_flag.set()
        await asyncio.wait_for(task, timeout=30)
    finally:
        if not task.done():
            task.cancel()
        await app.stop_accounting()
    assert api.objects[key].raw["status"]["energyMillijoules"] == 7_200_000


async def test_a_hostile_agent_is_rejected_and_counted_and_the_others_are_accounted_in_the_same_pass(
    api: Emulator, agents: FakeAgents, start_operator: StartOperator
) -> None:
    setup_cluster(api, agents, {"n1": "127.0.0.1", "n2": "127.0.0.2"})
    base = time.time()
    agents.texts["n1"] = agent_text("n1", base)
    agents.texts["n2"] = agent_text("n2", base)
    running = await start_operator(ScriptedIntensity())
    other = Pod("ml", "other-x", "pod-9", 1e306, 1e308, "Job", "other", "job-9")
    agents.texts["n2"] = agent_text("n2", base + 1, [other], unallocated_j=1e306)
    agents.texts["n1"] = agent_text("n1", base + 1, [train_pod(3600.0, 10.0)])
    summary = await running.accountant.run_pass()
    assert (summary.scraped_ok, summary.folded_mj) == (2, 3_600_000)
    assert running.accountant.stats.rejected["out_of_range"] == 3
    assert "job-9" not in running.accountant.ledger.accounts
    for _ in range(2):  # later passes are not wedged either
        agents.texts["n1"] = agent_text("n1", base + 2, [train_pod(7200.0, 20.0)])
        await running.accountant.run_pass()
    assert running.accountant.ledger.accounts["job-1"].totals.energy_mj == 7_200_000
    assert 'jouleledger_operator_rejected_samples_total{reason="out_of_range"}' in await scrape_metrics(running)


async def test_a_pod_naming_another_namespaces_job_is_charged_to_itself_in_its_own_namespace(
    api: Emulator, agents: FakeAgents, start_operator: StartOperator
) -> None:
    """Cross-namespace charging: a tenant's pod in ``evil`` whose ownerReference names the UID of Job ml/train.
    Kubernetes resolves owners within the pod's namespace, and so must the ledger: the attacker's energy must not
    reach the victim's footprint, and no footprint for the victim's UID may appear in the attacker's namespace."""
    setup_cluster(api, agents, {"n1": "127.0.0.1"})
    base = time.time()
    agents.texts["n1"] = agent_text("n1", base)
    running = await start_operator(ScriptedIntensity())
    forged = Pod("evil", "miner", "pod-evil", 36_000.0, 100.0, "Job", "train", "job-1")
    statefulset = Pod("evil", "db-0", "pod-db", 3600.0, 10.0, "StatefulSet", "db", "sts-victim")
    agents.texts["n1"] = agent_text("n1", base + 1, [train_pod(3600.0, 10.0), forged, statefulset])
    await running.accountant.run_pass()
    await complete_job(api, base + 1.5)
    await job_seen_finished(running)
    agents.texts["n1"] = agent_text("n1", base + 2, [train_pod(3600.0, 10.0), forged, statefulset])
    await running.accountant.run_pass()
    assert job_annotations(api)["jouleledger.io/energy-kwh"] == "0.001000"  # 3600 J: the victim's own pod only
    footprints = {
        (namespace, name)
        for (resource, namespace, name), obj in api.objects.items()
        if resource.plural == "workloadfootprints" and not obj.deleted
    }
    assert footprints == {("ml", "job-1"), ("evil", "pod-evil"), ("evil", "pod-db")}
    assert running.accountant.stats.rejected["unverified_owner"] == 2


async def annotate_job(api: Emulator, annotations: dict[str, str]) -> None:
    async with api.patch(JOB_PATH, json={"metadata": {"annotations": annotations}}) as response:
        assert response.status == 200, await response.text()


async def test_forged_and_edited_annotations_never_block_and_are_restored_counted_and_reported(
    api: Emulator, agents: FakeAgents, start_operator: StartOperator
) -> None:
    """The WorkloadFootprint is the source of truth: a pre-set ``footprint-version`` (which used to stop the Job from
    ever being annotated) and a later edit of the energy are both restored from it, counted and reported."""
    setup_cluster(api, agents, {"n1": "127.0.0.1"})
    base = time.time()
    agents.texts["n1"] = agent_text("n1", base)
    running = await start_operator(ScriptedIntensity())
    await annotate_job(api, {KEY_VERSION: "1", "jouleledger.io/energy-kwh": "0.000001"})
    agents.texts["n1"] = agent_text("n1", base + 1, [train_pod(3600.0, 10.0)])
    await running.accountant.run_pass()
    await complete_job(api, base + 1.5)
    await job_seen_finished(running)
    agents.texts["n1"] = agent_text("n1", base + 2, [train_pod(3600.0, 10.0)])
    await running.accountant.run_pass()
    assert job_annotations(api)["jouleledger.io/energy-kwh"] == "0.001000"
    assert running.accountant.stats.tampering == 1
    truth = job_annotations(api)

    await annotate_job(api, {"jouleledger.io/energy-kwh": "0.000000", "jouleledger.io/extra": "x"})
    await eventually(
        lambda: running.app.cluster.jobs["job-1"].state.annotations.get("jouleledger.io/energy-kwh") == "0.000000",
        what="the edit's watch event",
    )
    await running.accountant.run_pass()
    assert job_annotations(api) == truth
    assert running.accountant.stats.tampering == 2
    reasons = sorted(event["reason"] for event in events(api))
    assert reasons == ["FootprintRecorded", "FootprintTampered"]  # the second tampering Event is the same object
    assert "jouleledger_operator_annotation_tampering_total 2.0" in await scrape_metrics(running)
    patches = requests_to(api, "PATCH", JOB_PATH)
    await running.accountant.run_pass()  # restored: nothing more to write
    assert requests_to(api, "PATCH", JOB_PATH) == patches


async def test_a_401_makes_kopf_log_in_again_and_get_fresh_credentials(api: Emulator, agents: FakeAgents) -> None:
    """A rotated service-account token: the API server refuses the old one (401) on kopf's watch; kopf asks the
    login handler again, which logs in anew (reading the token file again) instead of handing back the refused
    credentials, and the watches go on."""
    setup_cluster(api, agents, {"n1": "127.0.0.1"})
    agents.texts["n1"] = agent_text("n1", time.time())
    logins: list[str] = []

    def login(**_: Any) -> kopf.ConnectionInfo:
        logins.append(f"token-{len(logins)}")
        return kopf.ConnectionInfo(server=str(api.url).rstrip("/"), token=logins[-1])

    options = OperatorOptions(
        agent_namespace=AGENT_NAMESPACE,
        agent_port=agents.port,
        scrape_interval_s=3600.0,
        standalone=True,
        serve_metrics=False,
    )
    app = OperatorApp(options, FIXTURE_CONFIG, ScriptedIntensity(), login=login, clock_skew_s=0.0)
    stop_flag = asyncio.Event()
    task = asyncio.create_task(app.operate(stop_flag=stop_flag, settings=test_settings()))
    try:
        await eventually(lambda: app.accountant is not None and app.accountant.passes >= 1, what="first pass")
        api.faults.append(Fault("GET", r"^/apis/batch/v1/jobs$", 401))
        await api.gone("batch/v1/jobs")  # kopf lists and watches the Jobs again: that request is refused
        await eventually(lambda: len(logins) >= 2, what="a second login")
        job = {**job_object("ml", "late", "job-late"), **completed(rfc3339(time.time()))}
        api.objects["batch/v1/jobs", "ml", "late"] = job
        await eventually(lambda: "job-late" in app.cluster.jobs, what="a Job seen through the renewed watch")
        assert not task.done()
        used = [r.headers.get("Authorization") for r in api.requests if r.url.path == "/apis/batch/v1/jobs"]
        assert used[-1] == f"Bearer {logins[-1]}" != used[0]
        stop_flag.set()
        await asyncio.wait_for(task, timeout=30)
    finally:
        if not task.done():
            task.cancel()
        await app.stop_accounting()
