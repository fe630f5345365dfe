"""Fuzzing the ``/proc`` parsers: any cgroup text gives a pod reference or None, never an exception, and any stat
text gives a non-negative start time or ``ValueError``."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from jouleledger.hardware.proc import ContainerRef, parse_cgroup, parse_start_time

UID = "5f0c1d2e-aaaa-bbbb-cccc-0123456789ab"
CID = "0123456789abcdef" * 4
SEGMENTS = [
    "kubepods.slice",
    "kubepods-burstable.slice",
    f"kubepods-burstable-pod{UID.replace('-', '_')}.slice",
    f"pod{UID}",
    f"cri-containerd-{CID}.scope",
    f"crio-{CID}.scope",
    f"crio-conmon-{CID}.scope",
    CID,
    "kubepods",
    "besteffort",
    "..",
    "cri-containerd",
]
_UID_FORM = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$|^[0-9a-f]{32}$")


def _check(ref: ContainerRef | None) -> None:
    if ref is not None:
        assert _UID_FORM.match(ref.pod_uid), ref
        assert ref.container_id == "" or re.fullmatch("[0-9a-f]{12,128}", ref.container_id), ref


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=400))
def test_arbitrary_cgroup_text_never_raises(text: str) -> None:
    _check(parse_cgroup(text))


cgroup_lines = st.builds(
    lambda hierarchy, controllers, parts, sep: f"{hierarchy}:{controllers}:/" + sep.join(parts),
    st.sampled_from(["0", "11", "x", ""]),
    st.sampled_from(["", "memory", "cpu,cpuacct", "name=systemd"]),
    st.lists(st.sampled_from(SEGMENTS) | st.text(alphabet="abcdef0123456789-_.:/", max_size=40), max_size=6),
    st.sampled_from(["/", ":"]),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(cgroup_lines, max_size=5))
def test_cgroup_like_text_never_raises(lines: list[str]) -> None:
    _check(parse_cgroup("\n".join(lines)))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_stat_text_gives_a_start_time_or_value_error(text: str) -> None:
    try:
        start = parse_start_time(text)
    except ValueError:
        return
    assert start >= 0


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40), st.lists(st.text(alphabet="-0123456789x ", min_size=1, max_size=25), max_size=25))
def test_stat_like_text_gives_a_start_time_or_value_error(command: str, fields: list[str]) -> None:
    try:
        start = parse_start_time(f"4242 ({command}) " + " ".join(fields))
    except ValueError:
        return
    assert start >= 0
