"""kill -9 of the real operator process in the middle of its writes, again and again: nothing lost, nothing counted
twice, each Job annotated by exactly one successful PATCH.

The operator runs as in a cluster (``jouleledger operator --standalone`` through the CLI's ``main``, kopf watching,
its own accounting loop) in a subprocess whose kubeconfig points at the kmock emulator (the next process is started
ahead, imported and waiting for its turn on stdin); fake agents serve expositions the
test writes. Jobs start (their pod appears in an agent's exposition) and complete, one per round, while the pods'
counters grow. A seeded schedule names where each kill lands: the k-th write of a kind (footprint create, footprint
status patch, Job annotation patch, Event) that one operator process sends, either *before* the emulator applies it
or *after* it is applied but before the answer is sent (the two dangerous cases). The emulator's write hook sends
SIGKILL from inside its request handler and waits for the process to be gone; the test then starts a new one.
Kills are driven by request counts, never by time, and each process talks to the emulator through a server of its
own, so that every request is attributed to the process that sent it.

At the end every footprint holds exactly the energy the agents reported for its Job, its final record and the Job's
annotations agree with it, and each Job's annotations were applied by exactly one PATCH (a PATCH applied whose
answer the killed process never saw is not repeated by the next one), with exactly one ``FootprintRecorded`` Event.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kmock
import pytest

from tests._figures import figure
from tests._kube_emulator import (
    AGENT_NAMESPACE,
    FakeAgents,
    FaultyEmulator,
    completed,
    job_object,
    place_agents,
    pod_object,
    register_resources,
    rfc3339,
    serve_fake_agents,
)
from tests.controller._exposition import Pod, agent_text
from tests.controller._operator import eventually

pytestmark = pytest.mark.slow

SEED = 20261202
KILLS = 12
FIRST_JOBS = 6
MAX_ROUNDS = 60
NODES = {"n1": "127.0.0.1", "n2": "127.0.0.2"}
EPOCH = "00000000c0ffee01"
TICK_S = 5.0  # agent seconds per round: a Job completes between two ticks, more than the skew allowance from each
KINDS = ("footprint-create", "footprint-status", "job-annotation", "event")
PHASES = ("before", "after")
WRITE_KINDS: tuple[tuple[str, str, str], ...] = (
    ("POST", r"^/apis/jouleledger\.io/v1alpha1/namespaces/[^/]+/workloadfootprints$", "footprint-create"),
    ("PATCH", r"^/apis/jouleledger\.io/v1alpha1/namespaces/[^/]+/workloadfootprints/[^/]+/status$", "footprint-status"),
    ("PATCH", r"^/apis/batch/v1/namespaces/[^/]+/jobs/[^/]+$", "job-annotation"),
    ("POST", r"^/api/v1/namespaces/[^/]+/events$", "event"),
)
JOB_STATUS = re.compile(r"^/apis/batch/v1/namespaces/[^/]+/jobs/[^/]+/status$")  # the test completing a Job


def kind_of(method: str, path: str) -> str | None:
    for wanted, pattern, kind in WRITE_KINDS:
        if method == wanted and re.match(pattern, path):
            return kind
    return None


@dataclass(frozen=True)
class Kill:
    kind: str
    phase: str
    nth: int  # the nth write of that kind by one operator process


def schedule(seed: int, kills: int) -> list[Kill]:
    """Every kind in both phases once (shuffled), then random ones, each at the 1st to 3rd write of its kind."""
    rng = random.Random(seed)
    plan = [(kind, phase) for kind in KINDS for phase in PHASES]
    rng.shuffle(plan)
    plan += [(rng.choice(KINDS), rng.choice(PHASES)) for _ in range(kills - len(plan))]
    return [Kill(kind, phase, rng.randint(1, 3)) for kind, phase in plan]


@dataclass
class Job:
    index: int
    node: str
    started_round: int
    energy_j: int = 0
    done: bool = False

    @property
    def name(self) -> str:
        return f"train-{self.index}"

    @property
    def uid(self) -> str:
        return f"job-{self.index}"

    def pod(self) -> Pod:
        return Pod(
            "ml",
            f"{self.name}-x",
            f"pod-{self.index}",
            float(self.energy_j),
            self.energy_j / 500,
            "Job",
            self.name,
            self.uid,
        )


@dataclass
class Operator:
    """One operator process and the emulator server only it talks to."""

    process: asyncio.subprocess.Process
    server: kmock.Server
    generation: int
    writes: Counter[str] = field(default_factory=Counter)


SPARE = (
    "import sys\n"
    "import kopf, httpx, jouleledger.controller.app, jouleledger.controller.main  # the operator's imports\n"
    "from jouleledger.cli import main\n"
    "if sys.stdin.readline() == 'go\\n':\n"
    "    sys.exit(main(sys.argv[1:]))\n"
)
"""``python -m jouleledger`` (the same ``main``), started ahead of time: it imports everything, then waits for
``go`` on stdin, so that a restart does not wait for Python's imports (seconds on a busy machine)."""


@dataclass
class Run:
    api: FaultyEmulator
    agents: FakeAgents
    workdir: Path
    plan: list[Kill]
    operators: list[Operator] = field(default_factory=list)
    spare: Operator | None = None
    servers: list[kmock.Server] = field(default_factory=list)
    by_port: dict[int, Operator] = field(default_factory=dict)
    killed: list[tuple[Kill, str]] = field(default_factory=list)
    pending_restart: bool = False
    applied_annotations: Counter[str] = field(default_factory=Counter)
    unanswered_annotations: set[str] = field(default_factory=set)
    writes: Counter[str] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)  # writes of a kind this test does not know

    @property
    def current(self) -> Operator:
        return self.operators[-1]

    async def _spawn(self) -> Operator:
        server = kmock.Server(self.api)
        await server.__aenter__()
        self.servers.append(server)
        generation = len(self.servers) - 1
        kubeconfig = self.workdir / f"kubeconfig-{generation}"
        kubeconfig.write_text(
            "apiVersion: v1\nkind: Config\ncurrent-context: kill\n"
            f"clusters: [{{name: kill, cluster: {{server: '{str(server.url).rstrip('/')}'}}}}]\n"
            "users: [{name: kill, user: {}}]\n"
            "contexts: [{name: kill, context: {cluster: kill, user: kill}}]\n"
        )
        env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
        env.pop("KUBERNETES_SERVICE_HOST", None)
        command = [sys.executable, "-c", SPARE, "--log-level", "INFO", "operator"]
        command += ["--config", str(self.workdir / "config.yaml"), "--listen-address", "127.0.0.1", "--port", "0"]
        command += ["--agent-namespace", AGENT_NAMESPACE, "--agent-port", str(self.agents.port), "--standalone"]
        command += ["--scrape-interval-s", "0.2"]
        with (self.workdir / f"operator-{generation}.log").open("wb") as log:
            process = await asyncio.create_subprocess_exec(
                *command, env=env, stdin=asyncio.subprocess.PIPE, stdout=log, stderr=log
            )
        return Operator(process, server, generation)

    async def start(self) -> None:
        """Start the next operator (once the killed one is gone), and the spare after it while kills remain."""
        if self.operators:
            await self.current.process.wait()
        operator, self.spare = self.spare or await self._spawn(), None
        stdin = operator.process.stdin
        assert stdin is not None
        stdin.write(b"go\n")
        await stdin.drain()
        stdin.close()
        self.operators.append(operator)
        self.by_port[operator.server.port] = operator
        self.pending_restart = False
        if len(self.killed) < len(self.plan):
            self.spare = await self._spawn()

    async def close(self) -> None:
        for operator in [*self.operators, *([self.spare] if self.spare else [])]:
            if operator.process.returncode is None:
                operator.process.send_signal(signal.SIGKILL)
                await operator.process.wait()
        for server in reversed(self.servers):  # kmock's servers chain their resolvers: last in, first out
            await server.__aexit__(None, None, None)

    async def on_write(self, request: kmock.Request, phase: str) -> bool:
        path = request.url.path
        kind = kind_of(request.method.value, path)
        if kind is None:
            if not JOB_STATUS.match(path):
                self.unexpected.append(f"{request.method.value} {path}")  # the test fails on it (settled())
            return False
        raw = request._raw_request
        port = raw.transport.get_extra_info("sockname")[1] if raw is not None and raw.transport is not None else None
        operator = self.by_port.get(port) if port is not None else None
        assert operator is not None, f"a write from no operator of this test: {request.method.value} {path}"
        if phase == "before":
            operator.writes[kind] += 1
            self.writes[kind] += 1
        elif kind == "job-annotation":
            self.applied_annotations[path.rsplit("/", 1)[1]] += 1
        if (
            operator is not self.current
            or operator.process.returncode is not None
            or len(self.killed) >= len(self.plan)
        ):
            return False  # a request the killed process sent before it died: served as the API server would
        kill = self.plan[len(self.killed)]
        if (kill.kind, kill.phase) != (kind, phase) or operator.writes[kind] != kill.nth:
            return False
        self.killed.append((kill, path))
        if kind == "job-annotation" and phase == "after":
            self.unanswered_annotations.add(path.rsplit("/", 1)[1])
        self.pending_restart = True
        operator.process.send_signal(signal.SIGKILL)
        # The server cancels a handler whose client went away: the write (before) is then not applied either.
        await asyncio.shield(operator.process.wait())
        return phase == "before"

    def logs(self) -> str:
        return "\n".join(
            f"--- operator {op.generation}:\n"
            + (self.workdir / f"operator-{op.generation}.log").read_text(errors="replace")[-4000:]
            for op in self.operators
        )


def annotations_of(api: FaultyEmulator, job: Job) -> dict[str, str]:
    metadata = api.objects["batch/v1/jobs", "ml", job.name].get("metadata", {})
    return {
        key: value for key, value in (metadata.get("annotations") or {}).items() if key.startswith("jouleledger.io/")
    }


def footprint_of(api: FaultyEmulator, job: Job) -> dict[str, Any] | None:
    try:
        obj = api.objects["jouleledger.io/v1alpha1/workloadfootprints", "ml", job.uid]
    except KeyError:  # (kmock's ``in`` does not take a resource by name)
        return None
    raw: dict[str, Any] = obj.raw
    return None if obj.deleted else raw


def recorded_events(api: FaultyEmulator, job: Job) -> int:
    return sum(
        1
        for (resource, namespace, _), obj in api.objects.items()
        if resource.plural == "events"
        and namespace == "ml"
        and not obj.deleted
        and obj.raw.get("reason") == "FootprintRecorded"
        and (obj.raw.get("involvedObject") or {}).get("uid") == job.uid
    )


async def test_an_operator_killed_mid_write_again_and_again_loses_nothing_and_annotates_each_job_once(
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    async with FaultyEmulator() as api, kmock.Server(api), serve_fake_agents() as agents:  # the test's own server
        register_resources(api)
        (tmp_path / "config.yaml").write_text(
            "maxGpuPowerW: 10000\nintensity: {provider: static, defaultGramsPerKwh: 400}\n"
        )
        run = Run(api, agents, tmp_path, schedule(SEED, KILLS))
        api.on_write = run.on_write
        try:
            jobs = await _drive(run)
        finally:
            await run.close()

        for job in jobs:
            footprint = footprint_of(api, job)
            assert footprint is not None, job.name
            status = footprint["status"]
            assert status["energyMillijoules"] == job.energy_j * 1000, (job.name, status["energyMillijoules"])
            assert status["finalized"] is True, job.name
            assert status["final"]["energyMillijoules"] == job.energy_j * 1000, job.name
            assert status["lateEnergyMillijoules"] == 0, job.name
            assert annotations_of(api, job)["jouleledger.io/energy-kwh"] == f"{job.energy_j / 3_600_000:.6f}"
            assert annotations_of(api, job) == status["final"]["annotations"], job.name
            assert run.applied_annotations[job.name] == 1, (job.name, run.applied_annotations[job.name])
            assert recorded_events(api, job) == 1, job.name
        kinds = Counter(f"{kill.kind}/{kill.phase}" for kill, _ in run.killed)
        assert len(run.killed) == len(run.plan) >= 10
        assert {(kill.kind, kill.phase) for kill, _ in run.killed} == {(k, p) for k in KINDS for p in PHASES}
    figure(
        f"operator kill -9 mid-write: kills {len(run.killed)} ({dict(sorted(kinds.items()))}), "
        f"restarts {len(run.operators) - 1}, Jobs {len(jobs)}, writes {dict(sorted(run.writes.items()))}, "
        f"annotation PATCHes applied but unanswered {len(run.unanswered_annotations)} (none repeated), "
        f"mJ lost or doubled 0, wall {time.monotonic() - started:.0f} s"
    )


async def _drive(run: Run) -> list[Job]:
    """Rounds: the running pods draw energy, a new Job starts, the Job started two rounds ago completes; each
    round waits until that Job is recorded (restarting the operator after every kill meanwhile)."""
    api, agents = run.api, run.agents
    place_agents(api, agents, NODES)
    base = time.time()
    jobs: list[Job] = []

    def publish(tick_s: float) -> None:
        for node in NODES:
            pods = [job.pod() for job in jobs if job.node == node]
            agents.texts[node] = agent_text(node, tick_s, pods, epoch=EPOCH, ticks=tick_s - base)

    publish(base)
    await run.start()
    for round_ in range(MAX_ROUNDS):
        tick_s = base + TICK_S * (round_ + 1)
        for job in jobs:
            if not job.done and round_ - job.started_round < 2:
                job.energy_j += 1000 + 37 * job.index
        finishing = next((job for job in jobs if not job.done and round_ - job.started_round >= 2), None)
        if finishing is not None:
            finishing.done = True
        starting = None
        if len(jobs) < FIRST_JOBS or len(run.killed) < len(run.plan):
            index = len(jobs)
            starting = Job(index, list(NODES)[index % len(NODES)], round_)
            starting.energy_j = 1000 + 37 * index
            api.objects["batch/v1/jobs", "ml", starting.name] = job_object("ml", starting.name, starting.uid)
            api.objects["v1/pods", "ml", f"{starting.name}-x"] = pod_object(
                "ml",
                f"{starting.name}-x",
                f"pod-{index}",
                starting.node,
                owner_kind="Job",
                owner_name=starting.name,
                owner_uid=starting.uid,
            )
            jobs.append(starting)
        publish(tick_s)
        if finishing is not None:
            # Completed after its last reading (tick - TICK_S) and more than the skew allowance before this one.
            body = completed(rfc3339(tick_s - TICK_S / 2))
            async with api.patch(f"/apis/batch/v1/namespaces/ml/jobs/{finishing.name}/status", json=body) as reply:
                assert reply.status == 200, await reply.text()
        if finishing is None and starting is None:
            break

        def settled(finishing: Job | None = finishing, starting: Job | None = starting) -> bool:
            if run.unexpected:
                raise AssertionError(f"the operator sent writes this test does not classify: {run.unexpected}")
            if run.pending_restart:
                return True
            if run.current.process.returncode is not None:
                raise AssertionError(f"the operator exited by itself:\n{run.logs()}")
            return (
                finishing is None or (bool(annotations_of(api, finishing)) and recorded_events(api, finishing) >= 1)
            ) and (starting is None or footprint_of(api, starting) is not None)

        while True:
            try:
                await eventually(settled, timeout_s=60.0, what=f"round {round_}")
            except AssertionError as error:
                raise AssertionError(f"{error}; kills so far {run.killed}\n{run.logs()}") from None
            if not run.pending_restart:
                break
            await run.start()
    else:
        raise AssertionError(f"the kill schedule was not done after {MAX_ROUNDS} rounds: {run.killed}")
    return jobs
