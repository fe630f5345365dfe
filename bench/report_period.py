"""``jouleledger report`` over a long period: wall time, queries and points read, per ``--by`` and idle policy.

Prints figures; asserts nothing. The data set is the tests' (``tests/report/_dataset.py``: two nodes, three GPUs,
four pods, 5-minute samples) over ``--days`` days, backfilled into a real Prometheus with promtool (slow: promtool
re-reads its input once per 2-hour block, about 3.5 min for 30 days here) or read from a ``--tsdb`` made before.

    python -m bench.report_period [--days 30] [--tsdb DIR] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from tests._prometheus import backfill, serve
from tests.report import _dataset

from jouleledger.promapi import Connection, PrometheusApi, build_client
from jouleledger.report.collect import Period, Pricing, collect
from jouleledger.report.command import choose_step_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--tsdb", type=Path, help="an existing TSDB made from the same data set and --days")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        where = Path(tmp)
        tsdb = args.tsdb
        if tsdb is None:
            started = time.monotonic()
            tsdb = backfill(_dataset.build(args.days), where)
            print(f"backfilled {args.days} days with promtool in {time.monotonic() - started:.1f} s")
        with serve(tsdb, where / "prometheus.log") as url:
            start_s = float(_dataset.START_S)
            end_s = start_s + args.days * _dataset.DAY_S
            period = Period(start_s, end_s, choose_step_s(end_s - start_s, None))
            print(f"period {args.days} days, step {period.step_s:g} s, {args.repeat} runs each (median)")
            for by, policy in (
                ("team", "keep"),
                ("team", "share-weighted"),
                ("namespace", "share-even"),
                ("workload", "keep"),
                ("node", "keep"),
            ):
                times: list[float] = []
                queries = points = 0
                for _ in range(args.repeat):
                    api = PrometheusApi(build_client(Connection(base_url=url)))
                    counting = _Counting(api)
                    started = time.perf_counter()
                    collect(counting, period, by, pricing=Pricing(pue=1.2), policy=policy)  # type: ignore[arg-type]
                    times.append(time.perf_counter() - started)
                    queries, points = api.requests, counting.points
                    api.close()
                print(
                    f"  --by {by:<9} --idle {policy:<14} {statistics.median(times) * 1000:8.1f} ms "
                    f"({queries} range queries, {points} points)"
                )


class _Counting:
    """Counts the points the report reads."""

    def __init__(self, api: PrometheusApi) -> None:
        self.api = api
        self.points = 0
        self.base_url = api.base_url

    def query_range(self, expr: str, start_s: float, end_s: float, step_s: float) -> list:  # type: ignore[type-arg]
        result = self.api.query_range(expr, start_s, end_s, step_s)
        self.points += sum(len(series.points) for series in result)
        return result


if __name__ == "__main__":
    main()
