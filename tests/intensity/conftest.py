"""Fixtures for the intensity providers: the fake HTTP API, a client over it and the fallback table."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from jouleledger.intensity import StaticIntensity
from tests.intensity._fakes import FakeApi


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()


@pytest.fixture
async def client(api: FakeApi) -> AsyncIterator[httpx.AsyncClient]:
    async with api.client() as http:
        yield http


@pytest.fixture
def static() -> StaticIntensity:
    """The fallback table: eu-west-1 300, us-east-1 380, anything else 450."""
    return StaticIntensity(450, {"eu-west-1": 300, "us-east-1": 380})
