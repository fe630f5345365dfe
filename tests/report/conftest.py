"""A real Prometheus holding the known data set of ``_dataset`` (backfilled with promtool), for the report tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests._prometheus import LoadedPrometheus, backfill, serve
from tests._tools import require_tool
from tests.report import _dataset

DAYS = 3


@pytest.fixture(scope="session")
def loaded_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoadedPrometheus]:
    require_tool("promtool")
    require_tool("prometheus")
    where = tmp_path_factory.mktemp("report-prometheus")
    data = _dataset.build(DAYS)
    tsdb = backfill(data, where)
    with serve(tsdb, where / "prometheus.log") as url:
        yield LoadedPrometheus(url, data)
