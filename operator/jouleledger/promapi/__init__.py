"""The only code that talks to the Prometheus HTTP API (Prometheus, Thanos Querier, Grafana Mimir).

:class:`PrometheusApi` runs instant and range queries over one ``httpx.Client``; every failure becomes a
:class:`PrometheusError` whose message is one line fit for a user (unreachable, refused credentials, a query
error, a non-finite sample). Tenancy and authentication are plain request options (:class:`Connection`).
"""

from jouleledger.promapi.client import Connection, PrometheusApi, PrometheusError, RangeSeries, build_client

__all__ = ["Connection", "PrometheusApi", "PrometheusError", "RangeSeries", "build_client"]
