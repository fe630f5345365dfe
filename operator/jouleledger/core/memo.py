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

from collections.abc import Callable, Iterable, MutableMapping
from typing import Any, Final, Generic, TypeVar

__all__ = ["TEXT_CACHE_MIN", "SameObjectMemo", "trim_text_cache"]

V = TypeVar("V")
K = TypeVar("K")

TEXT_CACHE_MIN: Final = 4096
"""A text cache is emptied once it holds more than this many entries and twice what the last input used."""


class SameObjectMemo(Generic[V]):
    """Values by object identity, for this round and the previous one (see the module docstring).

    One table for both rounds: an entry holds its object, its value and the last round it was used in, so that a
    value found again is only marked, never copied into a new table (the parsers' loops use it per series)."""

    __slots__ = ("_entries", "_round", "_used")

    def __init__(self) -> None:
        self._entries: dict[int, list[Any]] = {}  # id -> [object, value, last round used]
        self._round = 0
        self._used = 0  # entries used in this round

    def get(self, obj: object) -> V | None:
        """The value put for this very object in this round or the previous one, else None."""
        entry = self._entries.get(id(obj))
        if entry is None or entry[0] is not obj:
            return None
        value: V = entry[1]
        return value

    def put(self, obj: object, value: V) -> None:
        """Keep ``value`` for this very object in this round (an entry of the object is updated in place: a pass
        that puts every series again allocates nothing for those it saw before)."""
        entry = self._entries.get(id(obj))
        if entry is None or entry[0] is not obj:
            self._entries[id(obj)] = [obj, value, self._round]
            self._used += 1
            return
        if entry[2] != self._round:
            entry[2] = self._round
            self._used += 1
        entry[1] = value

    def derive(self, obj: K, make: Callable[[K], V]) -> V:
        """:meth:`get`, else ``make(obj)``; kept for this round either way (:meth:`put`)."""
        entry = self._entries.get(id(obj))
        if entry is None or entry[0] is not obj:
            entry = self._entries[id(obj)] = [obj, make(obj), self._round]
            self._used += 1
        elif entry[2] != self._round:
            entry[2] = self._round
            self._used += 1
        value: V = entry[1]
        return value

    def derive_all(self, objs: Iterable[K], make: Callable[[K], V]) -> list[V]:
        """:meth:`derive` of each object, in order (one call for a whole answer: the parsers' loops are per
        series)."""
        entries, current = self._entries, self._round
        get = entries.get
        used = 0
        derived: list[V] = []
        append = derived.append
        for obj in objs:
            entry = get(id(obj))
            if entry is None or entry[0] is not obj:
                entry = entries[id(obj)] = [obj, make(obj), current]
                used += 1
            elif entry[2] != current:
                entry[2] = current
                used += 1
            append(entry[1])
        self._used += used
        return derived

    def turn(self) -> None:
        """End the round: keep what it put, forget the rest."""
        if len(self._entries) > self._used:
            current = self._round
            self._entries = {key: entry for key, entry in self._entries.items() if entry[2] == current}
        self._round += 1
        self._used = 0


def trim_text_cache(cache: MutableMapping[Any, Any], used: int) -> None:
    """Empty ``cache`` when it holds more than :data:`TEXT_CACHE_MIN` entries and twice the ``used`` of the last
    input (most of it then belongs to series that are gone)."""
    if len(cache) > TEXT_CACHE_MIN and len(cache) > 2 * used:
        cache.clear()
