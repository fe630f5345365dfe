"""Optimistic concurrency, expired watches and restarts, for real: the API server's own 409s and 410s.

A second writer is made to act at an exact point of the operator's work by a hook in the operator's API client
(:class:`ScriptedKubeApi`), so that the race is deterministic; the conflict itself comes from the real server.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import kopf
import pytest

import jouleledger.controller.app as operator_app
from jouleledger.controller.accountant import Accountant
from jouleledger.controller.app import LIST_PATHS, OperatorApp, OperatorOptions
from jouleledger.controller.cluster import PODS
from jouleledger.controller.config import load_config
from jouleledger.intensity import build_provider
from jouleledger.kube.api import ApiError, KubeApi
from jouleledger.kube.footprints import account_from_object
from tests.realkube._cluster import (
    ENERGY_J,
    FOOTPRINTS,
    OperatorStack,
    events_of,
    finished_job,
    job_annotations,
    operator_command,
    operator_env,
    report_job,
)
from tests.realkube._controlplane import ControlPlane, KubeClient, die_with_parent, wait_for

ENERGY_MJ = int(ENERGY_J * 1000)


class Crash(BaseException):
    """The operator process dies here (not an API error: nothing in the operator catches it)."""


@dataclass
class Hook:
    method: str
    path: str
    action: Callable[[], None]
    remaining: int = 1


class ScriptedKubeApi(KubeApi):
    """The operator's API client, with hooks that run just before matching requests and a record of refusals."""

    hooks: list[Hook] = []
    refusals: list[tuple[str, str, int]] = []

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        for hook in type(self).hooks:
            if hook.remaining > 0 and hook.method == method and re.fullmatch(hook.path, path):
                hook.remaining -= 1
                hook.action()
        try:
            return await super().request(method, path, **kwargs)
        except ApiError as error:
            type(self).refusals.append((method, path, error.status))
            raise


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[ScriptedKubeApi]]:
    monkeypatch.setattr(ScriptedKubeApi, "hooks", [])
    monkeypatch.setattr(ScriptedKubeApi, "refusals", [])
    monkeypatch.setattr(operator_app, "KubeApi", ScriptedKubeApi)
    return ScriptedKubeApi


def _app(stack: OperatorStack) -> tuple[OperatorApp, kopf.ConnectionInfo]:
    """The operator in-process, configured as the chart configures it, logged in with the chart's token."""
    config = load_config(str(stack.config))
    args = stack.args
    options = OperatorOptions(
        agent_namespace=args[args.index("--agent-namespace") + 1],
        agent_selector=args[args.index("--agent-selector") + 1],
        agent_port=stack.agent_port,
        scrape_interval_s=15.0,
        standalone=True,
        serve_metrics=False,
    )
    connection = kopf.ConnectionInfo(
        server=stack.controlplane.server, ca_path=str(stack.controlplane.ca), token=stack.token
    )
    return OperatorApp(options, config, build_provider(config.intensity), connection=connection), connection


async def _accountant(app: OperatorApp, connection: kopf.ConnectionInfo) -> Accountant:
    """What ``--once`` sets up (one listing of what kopf would watch), kept for several passes."""
    accountant = app._build(connection)
    accountant.write_interval_s = 0.0
    for plural, path in LIST_PATHS.items():
        params = {"labelSelector": app.options.agent_selector} if plural == PODS else {}
        for obj in await accountant.api.list(path, params=params):
            app.cluster.apply(plural, None, obj)
    return accountant


async def test_a_job_annotation_racing_a_second_writer_gets_409_and_is_retried(
    admin: KubeClient, stack: OperatorStack, workloads: str, scripted: type[ScriptedKubeApi]
) -> None:
    job, pod = finished_job(admin, workloads, "race", stack.node)
    report_job(stack, job, pod, admin)
    job_path = f"/apis/batch/v1/namespaces/{workloads}/jobs/race"

    def second_writer() -> None:  # between the operator's read of the Job and its conditional patch
        admin.merge_patch(job_path, {"metadata": {"annotations": {"example.com/owner": "second-writer"}}})

    scripted.hooks.append(Hook("PATCH", re.escape(job_path), second_writer))
    app, connection = _app(stack)
    accountant = await _accountant(app, connection)
    try:
        first = await accountant.run_pass()
        assert (first.finalized, first.annotated) == (1, 0)
        assert ("PATCH", job_path, 409) in scripted.refusals  # the real server's optimistic-concurrency refusal
        assert job_annotations(admin, workloads, "race") == {}

        second = await accountant.run_pass()
        assert second.annotated == 1
    finally:
        await app._close_clients()

    annotations = admin.get(job_path)["metadata"]["annotations"]
    assert annotations["example.com/owner"] == "second-writer"  # the other writer's change is not lost
    assert annotations["jouleledger.io/energy-kwh"] == "0.001000"  # counted once
    stored = admin.get(FOOTPRINTS.format(namespace=workloads) + "/" + job["metadata"]["uid"])
    assert account_from_object(stored, currency="USD").totals.energy_mj == ENERGY_MJ


async def test_a_footprint_create_racing_a_second_operator_gets_409_and_counts_once(
    admin: KubeClient, stack: OperatorStack, workloads: str, scripted: type[ScriptedKubeApi]
) -> None:
    """Two operators saw the same counters (a second instance during a botched rollout): the second to create the
    footprint gets the server's 409 AlreadyExists, merges what is there, and the energy is still counted once."""
    job, pod = finished_job(admin, workloads, "create-race", stack.node)
    report_job(stack, job, pod, admin)
    footprints = FOOTPRINTS.format(namespace=workloads)

    def second_operator() -> None:  # a whole other operator process records the Job first
        run = stack.run_once()
        assert run.returncode == 0, run.output

    scripted.hooks.append(Hook("POST", re.escape(footprints), second_operator))
    app, connection = _app(stack)
    accountant = await _accountant(app, connection)
    try:
        await accountant.run_pass()
    finally:
        await app._close_clients()
    assert ("POST", footprints, 409) in scripted.refusals
    stored = account_from_object(admin.get(footprints + "/" + job["metadata"]["uid"]), currency="USD")
    assert stored.totals.energy_mj == ENERGY_MJ
    assert stored.late_energy_mj == 0
    assert job_annotations(admin, workloads, "create-race")["jouleledger.io/energy-kwh"] == "0.001000"


async def test_a_footprint_status_write_racing_a_second_writer_gets_409(
    admin: KubeClient, stack: OperatorStack, workloads: str, scripted: type[ScriptedKubeApi]
) -> None:
    job, pod = finished_job(admin, workloads, "footprint-race", stack.node)
    report_job(stack, job, pod, admin)
    status = FOOTPRINTS.format(namespace=workloads) + "/" + job["metadata"]["uid"] + "/status"

    def second_writer() -> None:  # another writer records late energy just before the operator's status write
        admin.merge_patch(status, {"status": {"lateEnergyMillijoules": 1234}})

    scripted.hooks.append(Hook("PATCH", re.escape(status), second_writer))
    app, connection = _app(stack)
    accountant = await _accountant(app, connection)
    try:
        await accountant.run_pass()
        await accountant.run_pass()
    finally:
        await app._close_clients()
    assert ("PATCH", status, 409) in scripted.refusals
    assert admin.get(status)["status"]["lateEnergyMillijoules"] >= 1234  # the other writer's energy is kept


@pytest.mark.parametrize("crash_at", ["footprint-status", "job-annotation"])
async def test_an_operator_killed_in_the_middle_of_a_write_records_the_job_once_after_restart(
    admin: KubeClient, stack: OperatorStack, workloads: str, scripted: type[ScriptedKubeApi], crash_at: str
) -> None:
    name = f"crash-{crash_at}"
    job, pod = finished_job(admin, workloads, name, stack.node)
    report_job(stack, job, pod, admin)
    footprint = FOOTPRINTS.format(namespace=workloads) + "/" + job["metadata"]["uid"]
    target = (
        footprint + "/status"
        if crash_at == "footprint-status"
        else f"/apis/batch/v1/namespaces/{workloads}/jobs/{name}"
    )

    def crash() -> None:
        raise Crash(target)

    scripted.hooks.append(Hook("PATCH", re.escape(target), crash))
    app, _ = _app(stack)
    with pytest.raises(Crash):
        await app.once()
    if crash_at == "job-annotation":  # the footprint was written final, the Job not annotated yet
        assert admin.get(footprint)["status"]["finalized"] is True
    assert job_annotations(admin, workloads, name) == {}

    restarted = stack.run_once()  # a new process, as after a crash
    assert restarted.returncode == 0, restarted.output
    annotations = job_annotations(admin, workloads, name)
    assert annotations["jouleledger.io/energy-kwh"] == "0.001000"
    assert account_from_object(admin.get(footprint), currency="USD").totals.energy_mj == ENERGY_MJ
    recorded = [e for e in events_of(admin, workloads, name) if e["reason"] == "FootprintRecorded"]
    assert len(recorded) == 1


def test_a_watch_that_expires_is_resumed(
    controlplane: ControlPlane, admin: KubeClient, stack: OperatorStack, workloads: str, tmp_path: Any
) -> None:
    """The operator (kopf) watches; the API server restarts with etcd compacted, so every resourceVersion the
    watches hold is gone (410 Gone); the operator must list again and go on: a Job finished afterwards is recorded."""
    args = list(stack.args)
    args[args.index("--scrape-interval-s") + 1] = "1"
    log = tmp_path / "operator.log"
    command = operator_command(args, stack.config, agent_port=stack.agent_port)
    with log.open("wb") as sink:
        process = subprocess.Popen(
            die_with_parent(command),
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=operator_env(stack.kubeconfig),
            start_new_session=True,
        )
    try:
        before, pod = finished_job(admin, workloads, "before-expiry", stack.node)
        report_job(stack, before, pod, admin)
        _wait_for_operator(
            "the operator to record a Job before the restart",
            lambda: job_annotations(admin, workloads, "before-expiry"),
            90,
            process,
            log,
        )
        # One more write, so that even the newest resourceVersion a watch holds (the Job annotation's, when it was
        # the last write) is older than the compacted revision: a watch resuming from the compacted revision itself
        # would still be valid.
        admin.create(
            f"/api/v1/namespaces/{workloads}/configmaps", {"metadata": {"name": "bump-revision"}, "data": {"a": "1"}}
        )
        controlplane.restart_apiserver(compact=True)
        after, pod = finished_job(admin, workloads, "after-expiry", stack.node)
        report_job(stack, after, pod, admin)
        _wait_for_operator(
            "the operator to record a Job finished after its watches expired",
            lambda: job_annotations(admin, workloads, "after-expiry"),
            120,
            process,
            log,
        )
        output = log.read_text(errors="replace")
        assert re.search(r"Restarting the watch-stream for jobs", output), output[-3000:]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
    assert job_annotations(admin, workloads, "after-expiry")["jouleledger.io/energy-kwh"] == "0.001000"


def _wait_for_operator(
    what: str, check: Callable[[], Any], timeout_s: float, process: subprocess.Popen[bytes], log: Any
) -> Any:
    """``wait_for`` while the operator process lives; a timeout names the end of the operator's log."""
    try:
        return wait_for(what, lambda: _alive(process, log) and check(), timeout_s)
    except TimeoutError as error:
        raise TimeoutError(f"{error}; the operator's log ends:\n{log.read_text(errors='replace')[-4000:]}") from None


def _alive(process: subprocess.Popen[bytes], log: Any) -> bool:
    if process.poll() is not None:
        raise AssertionError(
            f"the operator exited with {process.returncode}:\n{log.read_text(errors='replace')[-3000:]}"
        )
    return True
