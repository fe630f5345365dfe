"""kopf stopping with an error nobody asked for (a watch stream failing in a way kopf does not retry) is started
again after a backoff, the accounting flushed in between; a requested stop, or no cluster at all, ends it."""

from __future__ import annotations

import asyncio
from typing import Any

import kopf
import pytest

from jouleledger.controller import app as app_module
from jouleledger.controller.app import KOPF_RESTART_BACKOFF_S, OperatorApp, OperatorOptions
from tests.controller._operator import FIXTURE_CONFIG, ScriptedIntensity


class ScriptedKopf:
    """Stands in for ``kopf.operator``: each run raises the next scripted error (None: returns normally)."""

    def __init__(self, *outcomes: BaseException | None, on_run: Any = None) -> None:
        self.outcomes = list(outcomes)
        self.runs = 0
        self.on_run = on_run

    async def __call__(self, **kwargs: Any) -> None:
        self.runs += 1
        if self.on_run is not None:
            self.on_run(kwargs)
        outcome = self.outcomes.pop(0)
        if outcome is not None:
            raise outcome


def make_app(sleeps: list[float]) -> OperatorApp:
    async def sleep(delay_s: float) -> None:
        sleeps.append(delay_s)

    options = OperatorOptions(standalone=True, serve_metrics=False)
    return OperatorApp(options, FIXTURE_CONFIG, ScriptedIntensity(), restart_sleep=sleep)


async def test_kopf_failing_is_started_again_with_growing_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    closed = RuntimeError("Connection closed.")
    scripted = ScriptedKopf(closed, closed, closed, None)
    monkeypatch.setattr(app_module.kopf, "operator", scripted)
    sleeps: list[float] = []
    app = make_app(sleeps)
    await app.operate()
    assert scripted.runs == 4
    assert sleeps == list(KOPF_RESTART_BACKOFF_S[:3])
    assert app.kopf_restarts == 3


async def test_an_error_after_a_requested_stop_ends_without_restart(monkeypatch: pytest.MonkeyPatch) -> None:
    stop_flag = asyncio.Event()
    scripted = ScriptedKopf(RuntimeError("Connection closed."), on_run=lambda _: stop_flag.set())
    monkeypatch.setattr(app_module.kopf, "operator", scripted)
    sleeps: list[float] = []
    app = make_app(sleeps)
    await app.operate(stop_flag=stop_flag)
    assert (scripted.runs, sleeps, app.kopf_restarts) == (1, [], 0)


async def test_no_cluster_is_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    scripted = ScriptedKopf(kopf.LoginError("no credentials"))
    monkeypatch.setattr(app_module.kopf, "operator", scripted)
    sleeps: list[float] = []
    with pytest.raises(kopf.LoginError):
        await make_app(sleeps).operate()
    assert (scripted.runs, sleeps) == (1, [])
