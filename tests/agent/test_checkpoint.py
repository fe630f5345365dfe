"""The checkpoint file: round trip, and every kind of damage detected with its reason."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from jouleledger.agent import persistence
from jouleledger.agent.persistence import CorruptCheckpointError

PAYLOAD: dict[str, Any] = {
    "node": "gpu-node-1",
    "t_s": 1_700_000_100.25,
    "pods": {
        "uid-train-0": {"namespace": "team-a", "name": "train-0", "labels": {"équipe": "東京", "q": 'a "b" \\ c\n'}},
    },
    "devices": [["uid-train-0", "main", "GPU-aaaa", 3_000_000, 100.0], ["uid-x", "c", "MIG-cccc", 0, 0.0]],
    "big_mj": 2**62,
    "empty": {},
    "none": None,
    "flags": [True, False],
}


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "ledger.json"
    persistence.save(path, PAYLOAD)
    assert persistence.load(path) == PAYLOAD
    persistence.save(path, {"seq": 2})
    assert persistence.load(str(path)) == {"seq": 2}
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["ledger.json"]  # no temporary file left


def test_missing_file_is_none(tmp_path: Path) -> None:
    assert persistence.load(tmp_path / "absent.json") is None


def test_file_format_is_the_documented_envelope(tmp_path: Path) -> None:
    path = tmp_path / "ledger.json"
    persistence.save(path, {"b": 1, "a": [1.5, "x"]})
    raw = path.read_bytes()
    assert raw.endswith(b"\n")
    assert raw.count(b"\n") == 1
    document = json.loads(raw)
    assert set(document) == {"format", "version", "sha256", "payload"}
    assert document["format"] == "jouleledger-checkpoint"
    assert document["version"] == 1
    # canonical JSON worked out by hand: sorted keys, no spaces
    assert document["sha256"] == hashlib.sha256(b'{"a":[1.5,"x"],"b":1}').hexdigest()


def test_truncation_at_every_offset_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "ledger.json"
    persistence.save(path, PAYLOAD)
    whole = path.read_bytes()
    torn = tmp_path / "torn.json"
    for length in range(len(whole)):
        torn.write_bytes(whole[:length])
        with pytest.raises(CorruptCheckpointError) as caught:
            persistence.load(torn)
        assert caught.value.reason == "truncated", length


def test_flipped_byte_in_the_payload_is_a_checksum_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "ledger.json"
    persistence.save(path, PAYLOAD)
    raw = path.read_bytes()
    at = raw.index(b"train-0")
    path.write_bytes(raw[:at] + b"tr4in-0" + raw[at + 7 :])
    with pytest.raises(CorruptCheckpointError, match="sha256") as caught:
        persistence.load(path)
    assert caught.value.reason == "checksum_mismatch"


def test_any_flipped_bit_anywhere_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "ledger.json"
    persistence.save(path, PAYLOAD)
    whole = path.read_bytes()
    damaged = tmp_path / "damaged.json"
    for offset in range(len(whole)):
        for bit in (0x01, 0x20):
            data = bytearray(whole)
            data[offset] ^= bit
            damaged.write_bytes(bytes(data))
            try:
                loaded = persistence.load(damaged)
            except CorruptCheckpointError:
                continue
            pytest.fail(f"flipping bit {bit:#x} at offset {offset} went unnoticed: {loaded!r}")


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "truncated"),
        (b"{not json}\n", "bad_json"),
        (b"\xff\xfe\n", "bad_json"),
        (b"[1, 2]\n", "not_a_checkpoint"),
        (b'{"format": "other", "version": 1}\n', "not_a_checkpoint"),
        (b'{"format": "jouleledger-checkpoint", "version": 2, "sha256": "", "payload": {}}\n', "unknown_version"),
        (b'{"format": "jouleledger-checkpoint", "version": true, "sha256": "", "payload": {}}\n', "unknown_version"),
        (b'{"format": "jouleledger-checkpoint", "version": 1, "payload": {}}\n', "not_a_checkpoint"),
        (b'{"format": "jouleledger-checkpoint", "version": 1, "sha256": "00", "payload": []}\n', "not_a_checkpoint"),
        (b'{"format": "jouleledger-checkpoint", "version": 1, "sha256": "00", "payload": {}}\n', "checksum_mismatch"),
        (
            b'{"format": "jouleledger-checkpoint", "version": 1, "sha256": "00", "payload": {"x": 1e999}}\n',
            "checksum_mismatch",
        ),
    ],
)
def test_damage_reasons(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "ledger.json"
    path.write_bytes(content)
    with pytest.raises(CorruptCheckpointError) as caught:
        persistence.load(path)
    assert caught.value.reason == reason
    assert str(caught.value).startswith(f"{reason}: ")
    assert str(path) in str(caught.value)


def test_unreadable_is_not_corruption(tmp_path: Path) -> None:
    with pytest.raises(IsADirectoryError):
        persistence.load(tmp_path)


@pytest.mark.parametrize(
    ("payload", "error"),
    [([1, 2], TypeError), ({"x": float("nan")}, ValueError), ({"x": object()}, TypeError)],
)
def test_save_rejects_what_a_checkpoint_cannot_hold(tmp_path: Path, payload: Any, error: type[Exception]) -> None:
    path = tmp_path / "ledger.json"
    persistence.save(path, {"seq": 1})
    with pytest.raises(error):
        persistence.save(path, payload)
    assert persistence.load(path) == {"seq": 1}


def test_failed_write_leaves_the_previous_checkpoint_and_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ledger.json"
    persistence.save(path, {"seq": 1})

    def full_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space"):
        persistence.save(path, {"seq": 2})
    monkeypatch.undo()
    assert persistence.load(path) == {"seq": 1}
    assert [entry.name for entry in tmp_path.iterdir()] == ["ledger.json"]


def test_a_stale_temporary_file_does_not_matter(tmp_path: Path) -> None:
    path = tmp_path / "ledger.json"
    (tmp_path / ".ledger.json.tmp").write_bytes(b'{"half": ')
    persistence.save(path, {"seq": 3})
    assert persistence.load(path) == {"seq": 3}


def test_quarantine_moves_the_file_aside(tmp_path: Path) -> None:
    path = tmp_path / "ledger.json"
    path.write_bytes(b"garbage")
    first = persistence.quarantine(path, 1_700_000_000.9)
    assert first == tmp_path / "ledger.json.corrupt-1700000000"
    assert first.read_bytes() == b"garbage"
    assert persistence.load(path) is None
    path.write_bytes(b"more garbage")
    second = persistence.quarantine(path, 1_700_000_000.0)
    assert second == tmp_path / "ledger.json.corrupt-1700000000-1"
    assert second.read_bytes() == b"more garbage"
    assert first.read_bytes() == b"garbage"


def test_quarantine_of_a_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        persistence.quarantine(tmp_path / "absent.json", 0.0)
