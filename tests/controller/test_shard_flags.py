"""The operator's shard flags: ``--shard N --total-shards M`` or ``--shard-from-pod-name`` (POD_NAME's ordinal);
a bad combination is one clear error line and exit code 2, never a traceback."""

from __future__ import annotations

import argparse

import pytest

from jouleledger.controller import main as operator_main
from jouleledger.core.sharding import ShardSpec


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    operator_main.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_default_is_one_unsharded_operator() -> None:
    assert operator_main.shard_spec(_args()) == ShardSpec(0, 1)


def test_explicit_shard_and_the_statefulset_ordinal() -> None:
    assert operator_main.shard_spec(_args("--shard", "2", "--total-shards", "4")) == ShardSpec(2, 4)
    args = _args("--shard-from-pod-name", "--total-shards", "4")
    assert operator_main.shard_spec(args, {"POD_NAME": "jouleledger-operator-3"}) == ShardSpec(3, 4)


def test_shard_and_shard_from_pod_name_exclude_each_other() -> None:
    with pytest.raises(SystemExit):
        _args("--shard", "1", "--shard-from-pod-name")


@pytest.mark.parametrize(
    ("argv", "environ", "message"),
    [
        (("--shard", "4", "--total-shards", "4"), {}, "--shard must be in 0..3"),
        (("--total-shards", "0"), {}, "--total-shards must be at least 1"),
        (("--shard-from-pod-name", "--total-shards", "2"), {}, "needs the POD_NAME environment variable"),
        (("--shard-from-pod-name", "--total-shards", "2"), {"POD_NAME": "operator"}, "StatefulSet ordinal"),
        (("--shard-from-pod-name", "--total-shards", "2"), {"POD_NAME": "operator-2"}, "--shard must be in 0..1"),
    ],
)
def test_bad_shards_are_one_clear_line_and_exit_2(
    argv: tuple[str, ...],
    environ: dict[str, str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("POD_NAME", raising=False)
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    assert operator_main.run(_args(*argv)) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err
