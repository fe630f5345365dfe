"""An in-process operator whose ``once()`` runs two accounting passes, with a test step awaited between them."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable

import kopf

from jouleledger.controller.accountant import Accountant, PassSummary
from jouleledger.controller.app import OperatorApp, OperatorOptions
from tests._kube_emulator import AGENT_NAMESPACE, Emulator, FakeAgents
from tests.controller._operator import FIXTURE_CONFIG, ScriptedIntensity

__all__ = ["two_pass_app"]


def two_pass_app(
    api: Emulator,
    agents: FakeAgents,
    between: Callable[[], Awaitable[None]],
    *,
    scraped_ok: int | None = None,
    **options: object,
) -> OperatorApp:
    """``once()`` lists, runs a pass, awaits ``between``, runs a second pass (its summary, annotations summed);
    ``scraped_ok``: how many agents each pass must have read. ``options`` are more :class:`OperatorOptions`."""
    app = OperatorApp(
        OperatorOptions(
            agent_namespace=AGENT_NAMESPACE,
            agent_port=agents.port,
            serve_metrics=False,
            standalone=True,
            **options,  # type: ignore[arg-type]
        ),
        FIXTURE_CONFIG,
        ScriptedIntensity(),
        connection=kopf.ConnectionInfo(server=str(api.url).rstrip("/")),
        clock_skew_s=0.0,  # the fake agents stamp their ticks with this process's own clock
    )
    build = app._build

    def build_twice(connection: kopf.ConnectionInfo) -> Accountant:
        accountant = build(connection)
        one_pass = accountant.run_pass

        async def two_passes() -> PassSummary:
            first = await one_pass()
            assert scraped_ok is None or first.scraped_ok == scraped_ok
            await between()
            second = await one_pass()
            assert scraped_ok is None or second.scraped_ok == scraped_ok
            return dataclasses.replace(second, annotated=first.annotated + second.annotated)

        accountant.run_pass = two_passes  # type: ignore[method-assign]
        return accountant

    app._build = build_twice  # type: ignore[method-assign]
    return app
