"""``jouleledger report``: the chargeback of a period, per team, namespace, workload or node.

Reads the Prometheus HTTP API (Prometheus, Thanos Querier or Grafana Mimir) or, with ``--from-footprints``, the
operator's ``WorkloadFootprint`` resources. Progress goes to stderr on a terminal only; the report goes to stdout
or ``--output``. Any problem is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import math
import re
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TextIO

from jouleledger.core.chargeback import IDLE_KEEP, IDLE_POLICIES, allocate_idle
from jouleledger.core.flags import non_negative_float
from jouleledger.core.units import mj_to_kwh
from jouleledger.report.collect import GROUPS, Period, Pricing, ReportError, collect
from jouleledger.report.document import FORMATS, Source, build_document, render
from jouleledger.report.page import TOP_WORKLOADS

__all__ = ["add_arguments", "choose_step_s", "parse_time", "run"]

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")
_UNIT_S: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, "y": 31536000.0}
MAX_POINTS: Final = 11000  # Prometheus refuses range queries of more than 11,000 points per series


def parse_duration_s(text: str) -> float | None:
    """``30d``, ``1h30m``, ``90s`` in seconds; None when ``text`` is not a duration."""
    position, total = 0, 0.0
    for match in _DURATION.finditer(text):
        if match.start() != position:
            return None
        total += float(match.group(1)) * _UNIT_S[match.group(2)]
        position = match.end()
    return total if position == len(text) and text else None


def parse_time(text: str, now_s: float, what: str) -> float:
    """A duration before ``now_s`` (``30d``), ``now``, unix seconds, or an ISO 8601 date or time (UTC unless it
    says otherwise)."""
    text = text.strip()
    if text == "now":
        return now_s
    duration = parse_duration_s(text)
    if duration is not None:
        return now_s - duration
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if math.isfinite(value) and value >= 0:
            return value
        raise ReportError(f"{what} {text!r}: not a valid time")
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ReportError(
            f"{what} {text!r}: expected a duration (30d, 12h), 'now', unix seconds or an ISO 8601 time"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def choose_step_s(span_s: float, requested_s: float | None) -> float:
    """The step that divides the period into whole steps: ``requested_s`` (default 1 h, 5 min under two days),
    shortened so that the period is a whole number of steps and a series has at most ``MAX_POINTS`` points."""
    wanted = requested_s if requested_s is not None else (3600.0 if span_s >= 2 * 86400 else 300.0)
    steps = max(1, math.ceil(span_s / wanted - 1e-9))
    if steps + 1 > MAX_POINTS:
        raise ReportError(f"--step {wanted:g}s gives more than {MAX_POINTS} points over the period: use a longer step")
    return span_s / steps


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_argument_group("source")
    source.add_argument("--prometheus", metavar="URL", help="Prometheus, Thanos Querier or Mimir (with its prefix)")
    source.add_argument(
        "--from-footprints", action="store_true", help="read the operator's WorkloadFootprint resources instead"
    )
    source.add_argument("--kubeconfig", type=Path, help="with --from-footprints: kubeconfig (default: in-cluster/~)")
    source.add_argument("--namespace", help="with --from-footprints: only this namespace")
    period = parser.add_argument_group("period")
    period.add_argument("--since", default="30d", help="start: a duration before now (30d), ISO 8601 or unix s")
    period.add_argument("--until", default="now", help="end (default now)")
    period.add_argument("--step", metavar="DURATION", help="sampling step of the counters (default 1h; 5m < 2d)")
    shape = parser.add_argument_group("report")
    shape.add_argument("--by", default="team", help=f"rows: {' | '.join(GROUPS)} (default team)")
    shape.add_argument("--idle", default=IDLE_KEEP, help=f"idle energy: {' | '.join(IDLE_POLICIES)} (default keep)")
    shape.add_argument("--format", default="table", dest="output_format", help=f"{' | '.join(FORMATS)}")
    shape.add_argument("--output", type=Path, help="write the report to this file instead of stdout")
    shape.add_argument("--team-label", default="team", help="the pod label that names a team (default team)")
    money = parser.add_argument_group("carbon and cost")
    money.add_argument("--price-per-kwh", type=non_negative_float, help="price of a facility kWh")
    money.add_argument("--currency", help="currency of --price-per-kwh (e.g. EUR)")
    money.add_argument("--pue", type=non_negative_float, default=1.0, help="power usage effectiveness (default 1.0)")
    money.add_argument(
        "--intensity-g-per-kwh",
        type=non_negative_float,
        help="grid intensity for nodes without the operator's intensity series",
    )
    money.add_argument(
        "--embodied-g-per-gpu-hour",
        type=non_negative_float,
        default=0.0,
        help="embodied carbon per GPU-hour (--by workload|node; the roll-ups carry the operator's)",
    )
    auth = parser.add_argument_group("Thanos / Mimir / authentication")
    auth.add_argument("--org-id", help="tenant, sent as X-Scope-OrgID (Mimir, Cortex, multi-tenant Thanos)")
    auth.add_argument("--bearer-token-file", type=Path, help="file holding a bearer token")
    auth.add_argument("--basic-auth-user", help="basic auth user name")
    auth.add_argument("--basic-auth-password-file", type=Path, help="file holding the basic auth password")
    auth.add_argument("--ca-file", type=Path, help="CA bundle for an https URL")
    auth.add_argument("--insecure-skip-verify", action="store_true", help="do not verify the server's certificate")
    auth.add_argument("--timeout", type=non_negative_float, default=120.0, help="seconds per query (default 120)")


def _progress(stream: TextIO) -> Callable[[int, int, str], None] | None:
    if not stream.isatty():
        return None

    def show(done: int, total: int, expr: str) -> None:
        stream.write(f"\r\x1b[2Kquery {done}/{total}: {expr[:100]}")
        stream.flush()

    return show


def _validate(args: argparse.Namespace) -> None:
    if args.by not in GROUPS:
        raise ReportError(f"--by {args.by!r}: expected one of {', '.join(GROUPS)}")
    if args.idle not in IDLE_POLICIES:
        raise ReportError(f"--idle {args.idle!r}: expected one of {', '.join(IDLE_POLICIES)}")
    if args.output_format not in FORMATS:
        raise ReportError(f"--format {args.output_format!r}: expected one of {', '.join(FORMATS)}")
    if bool(args.prometheus) == bool(args.from_footprints):
        raise ReportError("give exactly one source: --prometheus URL or --from-footprints")
    if args.price_per_kwh is not None and not args.currency:
        raise ReportError("--price-per-kwh needs --currency (e.g. --currency EUR)")


def _prometheus_document(args: argparse.Namespace, now_s: float, progress: Any) -> dict[str, Any]:
    from jouleledger.promapi import Connection, PrometheusApi, PrometheusError, build_client

    start_s = parse_time(args.since, now_s, "--since")
    end_s = parse_time(args.until, now_s, "--until")
    if start_s >= end_s:
        raise ReportError(f"--since ({args.since}) is not before --until ({args.until})")
    step_s = None
    if args.step is not None:
        step_s = parse_duration_s(args.step)
        if not step_s:
            raise ReportError(f"--step {args.step!r}: expected a duration such as 1h or 5m")
    period = Period(start_s, end_s, choose_step_s(end_s - start_s, step_s))
    connection = Connection(
        base_url=args.prometheus,
        org_id=args.org_id,
        bearer_token_file=args.bearer_token_file,
        basic_auth_user=args.basic_auth_user,
        basic_auth_password_file=args.basic_auth_password_file,
        ca_file=args.ca_file,
        insecure_skip_verify=args.insecure_skip_verify,
        timeout_s=args.timeout,
    )
    pricing = Pricing(
        pue=args.pue or 1.0,
        price_per_kwh=args.price_per_kwh,
        currency=args.currency,
        intensity_g_per_kwh=args.intensity_g_per_kwh,
        embodied_g_per_gpu_hour=args.embodied_g_per_gpu_hour,
    )
    try:
        api = PrometheusApi(build_client(connection, transport=getattr(args, "transport", None)))
    except PrometheusError as error:
        raise ReportError(str(error)) from error
    try:
        collected = collect(
            api, period, args.by, pricing=pricing, policy=args.idle, team_label=args.team_label, progress=progress
        )
    finally:
        api.close()
    chargeback = allocate_idle(collected.usage, collected.idle, args.idle)
    workloads: list[dict[str, Any]] | None = None
    if args.output_format == "html" and args.by != "workload":
        api = PrometheusApi(build_client(connection, transport=getattr(args, "transport", None)))
        try:
            extra = collect(api, period, "workload", pricing=pricing, policy=IDLE_KEEP, progress=progress)
        except ReportError:
            extra = None
        finally:
            api.close()
        if extra is not None:
            top = allocate_idle(extra.usage, extra.idle, IDLE_KEEP)
            workloads = [
                {"key": row.key, "energy_kwh": mj_to_kwh(row.energy_mj), "energy_mj": row.energy_mj}
                for row in top.rows[:TOP_WORKLOADS]
            ]
    document = build_document(
        chargeback,
        by=args.by,
        start_s=start_s,
        end_s=end_s,
        currency=collected.currency,
        source=Source("prometheus", args.prometheus, collected.series, period.step_s),
        usage=collected.usage,
        idle=collected.idle,
        notes=collected.notes,
        agent_measured_mj=collected.agent_measured_mj,
    )
    if workloads is not None:
        document["workloads"] = workloads
    return document


def run(args: argparse.Namespace, *, now_s: float | None = None, stderr: TextIO | None = None) -> int:
    err = stderr if stderr is not None else sys.stderr
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per query is noise in a report
    progress = _progress(err)
    try:
        _validate(args)
        moment = time.time() if now_s is None else now_s
        if args.from_footprints:
            from jouleledger.report.footprints import footprints_document

            document = footprints_document(args, moment, getattr(args, "footprint_lister", None))
        else:
            document = _prometheus_document(args, moment, progress)
        text = render(document, args.output_format)
        if progress is not None:
            err.write("\r\x1b[2K")
        if args.output is not None:
            try:
                args.output.write_text(text, encoding="utf-8")
            except OSError as error:
                raise ReportError(f"--output {args.output}: {error.strerror or error}") from error
        else:
            sys.stdout.write(text)
    except ReportError as error:
        if progress is not None:
            err.write("\r\x1b[2K")
        err.write(f"jouleledger report: {error}\n")
        return 2
    return 0
