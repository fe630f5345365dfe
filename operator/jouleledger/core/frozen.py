"""A cheaper constructor for the frozen value classes every pass makes by the tens of thousands.

A ``@dataclass(frozen=True, slots=True)`` instance is immutable because its class refuses ``__setattr__``; the
``__init__`` dataclasses writes therefore sets each field through ``object.__setattr__``, looked up and called once
per field. Measured in the operator at 20,000 pods, those constructors were an eighth of the process's CPU (series
values, pod deltas, watermarks, workload references, totals). :func:`quick_init` replaces that ``__init__`` with
one that stores each field straight into its slot (the slot's own descriptor, which the class's refusal does not
cover), 1.7-1.9 times as fast for five fields: the class stays the same dataclass, as frozen (assignment still raises
``FrozenInstanceError``), with the same fields, defaults, equality, hash and ``repr``.

It accepts only what it reproduces exactly: positional-or-keyword fields, plain defaults and default factories.
A class with ``__post_init__``, ``InitVar`` or keyword-only fields, a field left out of ``__init__``, or one that is
not a frozen, slotted dataclass is refused when the class is defined (``TypeError``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Final, TypeVar

__all__ = ["quick_init"]

T = TypeVar("T")


class _Factory:
    """The default of a field with a default factory: the factory runs when the argument is not given."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<factory>"  # as dataclasses shows it in the signature


_NO_VALUE: Final = _Factory()


def quick_init(cls: type[T]) -> type[T]:
    """Give a frozen, slotted dataclass the faster ``__init__`` (see the module docstring); returns the class.

    Apply it above the ``@dataclass(frozen=True, slots=True)`` line."""
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or not params.init or "__slots__" not in cls.__dict__:
        raise TypeError(f"quick_init: {cls.__qualname__} is not a frozen, slotted dataclass with an __init__")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"quick_init: {cls.__qualname__} has __post_init__ (keep the dataclass __init__)")
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    declared: dict[str, Any] = cls.__dataclass_fields__  # type: ignore[attr-defined]
    if len(fields) != len(declared):
        raise TypeError(f"quick_init: {cls.__qualname__} has InitVar fields")
    namespace: dict[str, Any] = {"_NO_VALUE": _NO_VALUE}
    arguments: list[str] = []
    body: list[str] = []
    for field in fields:
        name = field.name
        if not field.init or field.kw_only:
            raise TypeError(f"quick_init: field {cls.__qualname__}.{name} is keyword-only or not in __init__")
        setter = f"_set_{name}"
        namespace[setter] = cls.__dict__[name].__set__  # the slot's descriptor: not the frozen __setattr__
        if field.default is not dataclasses.MISSING:
            namespace[f"_default_{name}"] = field.default
            arguments.append(f"{name}=_default_{name}")
            body.append(f"    {setter}(self, {name})")
        elif field.default_factory is not dataclasses.MISSING:
            namespace[f"_factory_{name}"] = field.default_factory
            arguments.append(f"{name}=_NO_VALUE")
            body.append(f"    {setter}(self, _factory_{name}() if {name} is _NO_VALUE else {name})")
        else:
            arguments.append(name)
            body.append(f"    {setter}(self, {name})")
    source = f"def __init__(self, {', '.join(arguments)}):\n" + ("\n".join(body) or "    pass") + "\n"
    exec(source, namespace)
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__doc__ = cls.__init__.__doc__
    init.__annotations__ = dict(cls.__init__.__annotations__)
    type.__setattr__(cls, "__init__", init)
    return cls
