"""The operator's real accounting pass (``controller/accountant.py`` in-process, against the API emulator and two
fake agents) fed a hostile agent: every value and label value no agent should send, one per pass, next to a valid
agent. No pass fails, nothing is folded as ``agent_failed`` (no exception inside the fold), the valid agent's Job
is accounted to the millijoule, and the operator's ``/metrics`` stays finite and non-negative."""

from __future__ import annotations

import math
import time

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from jouleledger.controller.scrape import OK
from tests._figures import figure
from tests._fuzz import HOSTILE_LABEL_VALUES, HOSTILE_NUMBERS
from tests._kube_emulator import Emulator, FakeAgents, job_object, place_agents, pod_object
from tests.controller._exposition import Pod, agent_text
from tests.controller._operator import Running, ScriptedIntensity, StartOperator

LABELS = ("namespace", "pod", "uid", "owner_uid", "owner_kind", "gpu", "container", "label_team")


def _good(step: int) -> str:
    pod = Pod("ml", "train-x", "pod-1", 3600.0 * step, 10.0 * step, "Job", "train", "job-1", "vision")
    return agent_text("n1", time.time(), [pod], epoch="00000000000000a1", ticks=float(step))


def _bad_text(step: int) -> str:
    pods = [
        Pod("ml", "other-x", "pod-9", 3600.0 * step, 10.0 * step, "Job", "other", "job-9"),
        Pod("ml", "third-x", "pod-8", 360.0 * step, 1.0 * step, device="GPU-a::1"),
    ]
    return agent_text("n2", time.time(), pods, epoch="00000000000000b2", ticks=float(step), unallocated_j=100.0)


def _escaped(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def hostile_texts(step: int) -> list[tuple[str, str]]:
    """``(what, exposition)``: the bad agent with one value or one label value replaced, every way there is."""
    text = _bad_text(step)
    lines = text.splitlines()
    variants: list[tuple[str, str]] = []
    samples = [index for index, line in enumerate(lines) if line and not line.startswith("#")]
    for number in HOSTILE_NUMBERS:
        for index in samples[1:]:  # every sample but the agent's info
            head = lines[index].rpartition(" ")[0]
            changed = [*lines[:index], f"{head} {number}", *lines[index + 1 :]]
            variants.append((f"value {number[:12]!r}", "\n".join(changed) + "\n"))
    for value in HOSTILE_LABEL_VALUES:
        if "\ud800" in value:
            continue  # cannot be sent as UTF-8 at all (the scrape test sends such bytes)
        for label in LABELS:
            changed_text = text.replace(f'{label}="', f'{label}="{_escaped(value)}', 1)
            variants.append((f"label {label}", changed_text))
    return variants


async def _metric_values(running: Running) -> list[float]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{running.app.metrics_port}/metrics") as response,
    ):
        assert response.status == 200
        text = await response.text()
    return [sample.value for family in text_string_to_metric_families(text) for sample in family.samples]


async def test_a_hostile_agent_never_fails_a_pass_nor_the_other_agent(
    api: Emulator, agents: FakeAgents, start_operator: StartOperator
) -> None:
    place_agents(api, agents, {"n1": "127.0.0.1", "n2": "127.0.0.2"})
    api.objects["batch/v1/jobs", "ml", "train"] = job_object("ml", "train", "job-1")
    api.objects["v1/pods", "ml", "train-x"] = pod_object(
        "ml", "train-x", "pod-1", "n1", owner_kind="Job", owner_name="train", owner_uid="job-1"
    )
    api.objects["batch/v1/jobs", "ml", "other"] = job_object("ml", "other", "job-9")
    api.objects["v1/pods", "ml", "other-x"] = pod_object(
        "ml", "other-x", "pod-9", "n2", owner_kind="Job", owner_name="other", owner_uid="job-9"
    )
    agents.texts["n1"] = _good(0)
    agents.texts["n2"] = _bad_text(0)
    running = await start_operator(ScriptedIntensity())
    accountant = running.accountant
    bad_results: dict[str, int] = {}
    count = len(hostile_texts(0))
    step = 0
    for index in range(count):
        step += 1
        what, text = hostile_texts(step)[index]
        agents.texts["n1"], agents.texts["n2"] = _good(step), text
        summary = await accountant.run_pass()
        assert summary.scraped_ok >= 1
        assert accountant.ledger.accounts["job-1"].totals.energy_mj == 3_600_000 * step
        assert accountant.stats.rejected.get("agent_failed", 0) == 0
        if summary.scraped_ok == 2:
            bad_results["ok"] = bad_results.get("ok", 0) + 1
            continue
        bad_results["error"] = bad_results.get("error", 0) + 1
        step += 1  # the same agent well again: read at the next pass (a single failure is retried at once)
        agents.texts["n1"], agents.texts["n2"] = _good(step), _bad_text(step)
        summary = await accountant.run_pass()
        assert summary.scraped_ok == 2, what
        assert accountant.ledger.accounts["job-1"].totals.energy_mj == 3_600_000 * step
    for value in await _metric_values(running):
        assert math.isfinite(value)
        assert value >= 0
    for account in accountant.ledger.accounts.values():
        for number in (account.totals.gpu_seconds, account.totals.operational_g, account.totals.cost):
            assert math.isfinite(number)
            assert number >= 0
    rejected = dict(sorted(accountant.stats.rejected.items()))
    figure(
        f"operator passes with a hostile agent: {count} hostile answers in {step} passes, the hostile agent's "
        f"scrape {bad_results}, "
        f"rejected samples by reason {rejected}, the valid agent's Job accounted to the mJ after every pass"
    )
    assert bad_results.get(OK, 0)
