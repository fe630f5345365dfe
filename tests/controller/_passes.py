"""An in-process operator whose ``once()`` runs two accounting passes, with a test step awaited between them."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable

import kopf

from jouleledger.controller.accountant import Accountant, PassSummary
from jouleledger.controller.app import OperatorApp, OperatorOptions
from tests._kube_emulator import AGENT_NAMESPACE, Emulator, FakeAgents
from tests.controller._operator import FIXTURE_CONFIG, ScriptedIntensity

__all__ = ["TwoPasses", "two_pass_app"]


@dataclasses.dataclass
class TwoPasses:
    """``once()`` lists as ``--once`` does, runs a pass, awaits ``between``, runs a second pass and returns its
    summary (annotations of both summed); ``scraped_ok``: how many agents each pass must have read."""

    app: OperatorApp
    between: Callable[[], Awaitable[None]]
    scraped_ok: int | None = None

    @property
    def accountant(self) -> Accountant | None:
        return self.app.accountant

    async def once(self) -> PassSummary:
        async with self.app.listed() as accountant:
            first = await accountant.run_pass()
            assert self.scraped_ok is None or first.scraped_ok == self.scraped_ok
            await self.between()
            second = await accountant.run_pass()
            assert self.scraped_ok is None or second.scraped_ok == self.scraped_ok
        return dataclasses.replace(second, annotated=first.annotated + second.annotated)


def two_pass_app(
    api: Emulator,
    agents: FakeAgents,
    between: Callable[[], Awaitable[None]],
    *,
    scraped_ok: int | None = None,
    **options: object,
) -> TwoPasses:
    """An operator on ``api`` and ``agents`` run by :class:`TwoPasses`; ``options`` are more
    :class:`OperatorOptions`."""
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
    return TwoPasses(app, between, scraped_ok)
