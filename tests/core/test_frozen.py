"""``core/frozen.py``: the quicker ``__init__`` builds exactly what the dataclass' own builds, keeps the class frozen,
and refuses the dataclass features it does not reproduce."""

from __future__ import annotations

import copy
import dataclasses
import inspect
import pickle
from dataclasses import InitVar, dataclass, field, make_dataclass
from typing import Any

import pytest

from jouleledger.core.frozen import quick_init

FIELDS: list[Any] = [
    ("energy_mj", int),
    ("gpu_seconds", float),
    ("epoch", str, field(default="")),
    ("labels", dict[str, str], field(default_factory=dict)),
    ("tags", tuple[str, ...], field(default=())),
]


def _value_class(name: str) -> Any:
    cls = make_dataclass(name, FIELDS, frozen=True, slots=True)
    cls.__module__ = __name__  # found here by pickle
    return cls


Plain: Any = _value_class("Plain")
Quick: Any = quick_init(_value_class("Quick"))


CALLS: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
    ((1, 2.0), {}),
    ((1, 2.0, "e1"), {}),
    ((1, 2.0, "e1", {"team": "a"}, ("x",)), {}),
    ((), {"energy_mj": 5, "gpu_seconds": 0.5}),
    ((7,), {"gpu_seconds": 1.5, "tags": ("y",)}),
    ((1, 2.0), {"labels": {}}),
    # what the dataclass __init__ refuses, the quicker one refuses too
    ((), {}),
    ((1,), {}),
    ((1, 2.0, "e", {}, (), "one too many"), {}),
    ((1, 2.0), {"energy_mj": 3}),
    ((1, 2.0), {"unknown": 3}),
]


def _fields(value: object) -> tuple[Any, ...]:
    return tuple(getattr(value, item.name) for item in dataclasses.fields(value))  # type: ignore[arg-type]


def _build(cls: type[Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...] | type[BaseException]:
    try:
        return _fields(cls(*args, **kwargs))
    except TypeError:
        return TypeError


@pytest.mark.parametrize(("args", "kwargs"), CALLS)
def test_builds_what_the_dataclass_init_builds_and_refuses_what_it_refuses(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    assert _build(Quick, args, kwargs) == _build(Plain, args, kwargs)


def test_the_class_stays_frozen_hashable_and_comparable() -> None:
    value = Quick(1, 2.0, "e1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        value.energy_mj = 2  # type: ignore[misc]
    assert value == Quick(1, 2.0, "e1") != Quick(1, 2.0, "e2")
    with pytest.raises(TypeError, match="unhashable"):  # as the dataclass' own: its labels are a dict
        hash(Quick(1, 2.0))

    @quick_init
    @dataclass(frozen=True, slots=True)
    class Key:
        node: str
        device: str = ""

    assert hash(Key("n", "g")) == hash(("n", "g"))
    assert {Key("n", "g"): 1}[Key("n", "g")] == 1
    assert repr(value) == "Quick(energy_mj=1, gpu_seconds=2.0, epoch='e1', labels={}, tags=())"
    assert dataclasses.replace(value, epoch="e2") == Quick(1, 2.0, "e2")
    assert pickle.loads(pickle.dumps(value)) == value
    assert copy.deepcopy(value) == value


def test_each_instance_gets_its_own_default_factory_value() -> None:
    first, second = Quick(1, 1.0), Quick(2, 2.0)
    first.labels["team"] = "a"
    assert second.labels == {}
    shared: dict[str, str] = {"team": "b"}
    assert Quick(3, 3.0, labels=shared).labels is shared


def test_the_signature_is_the_dataclass_signature() -> None:
    assert str(inspect.signature(Quick)) == str(inspect.signature(Plain))
    assert Quick.__init__.__qualname__ == "Quick.__init__"


def test_refuses_what_it_does_not_reproduce() -> None:
    @dataclass(frozen=True)
    class NoSlots:
        value: int

    @dataclass(slots=True)
    class NotFrozen:
        value: int

    @dataclass(frozen=True, slots=True)
    class PostInit:
        value: int

        def __post_init__(self) -> None:
            pass

    @dataclass(frozen=True, slots=True)
    class WithInitVar:
        value: int
        scale: InitVar[int] = 1

    @dataclass(frozen=True, slots=True, kw_only=True)
    class KeywordOnly:
        value: int

    @dataclass(frozen=True, slots=True)
    class LeftOut:
        value: int
        derived: int = field(default=0, init=False)

    class NotADataclass:
        __slots__ = ("value",)

    for cls in (NoSlots, NotFrozen, PostInit, WithInitVar, KeywordOnly, LeftOut, NotADataclass):
        with pytest.raises(TypeError, match="quick_init"):
            quick_init(cls)


def test_a_class_without_fields() -> None:
    @quick_init
    @dataclass(frozen=True, slots=True)
    class Empty:
        pass

    assert Empty() == Empty()
    with pytest.raises(TypeError):
        Empty(1)  # type: ignore[call-arg]
