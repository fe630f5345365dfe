"""What the operator derived from unchanged input, kept from one pass to the next.

Two shapes, one rule each:

- :class:`SameObjectMemo`: values derived from objects (label mappings) that a parser hands out again, the very
  same object, while the series is unchanged. An entry is keyed by the object's ``id`` and holds the object itself,
  so the ``id`` cannot be reused by another object while the entry lives, and a lookup succeeds only for that
  object. What one round did not use is forgotten at :meth:`SameObjectMemo.turn`.
- :func:`trim_text_cache`: a cache of label sets parsed from their text, emptied when it holds far more than the
  last input needed (label sets of series that are gone).
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any, Final, Generic, TypeVar

__all__ = ["TEXT_CACHE_MIN", "SameObjectMemo", "trim_text_cache"]

V = TypeVar("V")

TEXT_CACHE_MIN: Final = 4096
"""A text cache is emptied once it holds more than this many entries and twice what the last input used."""


class SameObjectMemo(Generic[V]):
    """Values by object identity, for this round and the previous one (see the module docstring)."""

    __slots__ = ("_current", "_previous")

    def __init__(self) -> None:
        self._previous: dict[int, tuple[object, V]] = {}
        self._current: dict[int, tuple[object, V]] = {}

    def get(self, obj: object) -> V | None:
        """The value put for this very object in this round or the previous one, else None."""
        entry = self._current.get(id(obj)) or self._previous.get(id(obj))
        return entry[1] if entry is not None and entry[0] is obj else None

    def put(self, obj: object, value: V) -> None:
        self._current[id(obj)] = (obj, value)

    def turn(self) -> None:
        """End the round: keep what it put, forget the rest."""
        self._previous, self._current = self._current, {}


def trim_text_cache(cache: MutableMapping[Any, Any], used: int) -> None:
    """Empty ``cache`` when it holds more than :data:`TEXT_CACHE_MIN` entries and twice the ``used`` of the last
    input (most of it then belongs to series that are gone)."""
    if len(cache) > TEXT_CACHE_MIN and len(cache) > 2 * used:
        cache.clear()
