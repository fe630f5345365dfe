"""``core/memo.py``: values found again only for the very same object, for one round after they were last used;
text caches emptied once they hold far more than the last input used."""

from __future__ import annotations

from jouleledger.core.memo import TEXT_CACHE_MIN, SameObjectMemo, trim_text_cache


def test_a_value_is_found_for_the_same_object_only_and_one_round_after_its_last_use() -> None:
    memo: SameObjectMemo[str] = SameObjectMemo()
    kept, dropped = {"a": "1"}, {"b": "2"}
    memo.put(kept, "kept")
    memo.put(dropped, "dropped")
    assert memo.get(kept) == "kept"
    assert memo.get({"a": "1"}) is None  # an equal mapping is another object
    memo.turn()
    memo.put(kept, "kept")  # used again in this round
    memo.turn()
    assert memo.get(kept) == "kept"
    assert memo.get(dropped) is None  # not used in the last round: forgotten


def test_an_entry_holds_its_object_so_no_new_object_takes_its_id() -> None:
    memo: SameObjectMemo[int] = SameObjectMemo()
    memo.put({"gone": "x"}, 7)  # the caller drops its reference at once; the memo holds the object
    newcomers = [{"new": str(index)} for index in range(10_000)]
    assert all(memo.get(newcomer) is None for newcomer in newcomers)


def test_a_text_cache_is_emptied_only_when_far_larger_than_the_last_input() -> None:
    cache = {str(index): index for index in range(TEXT_CACHE_MIN + 1)}
    trim_text_cache(cache, used=TEXT_CACHE_MIN)  # not twice what was used
    assert len(cache) == TEXT_CACHE_MIN + 1
    trim_text_cache(cache, used=10)
    assert cache == {}
    small = {"a": 1, "b": 2}
    trim_text_cache(small, used=0)  # under the floor
    assert len(small) == 2


def test_derive_makes_a_value_once_per_object_and_keeps_it_while_the_object_is_used_each_round() -> None:
    made: list[str] = []

    def make(labels: dict[str, str]) -> str:
        made.append(labels["pod"])
        return labels["pod"].upper()

    memo: SameObjectMemo[str] = SameObjectMemo()
    kept, dropped = {"pod": "a"}, {"pod": "b"}
    assert (memo.derive(kept, make), memo.derive(dropped, make), memo.derive(kept, make)) == ("A", "B", "A")
    memo.turn()
    assert memo.derive(kept, make) == "A"  # found from the previous round, and kept for this one
    memo.turn()
    assert memo.derive(kept, make) == "A"
    assert memo.derive({"pod": "a"}, make) == "A"  # an equal mapping is another object: made again
    assert memo.derive(dropped, make) == "B"  # not used in the last round: made again
    assert made == ["a", "b", "a", "b"]
    assert memo.get(kept) == "A"
    assert memo.get(dropped) == "B"
    memo.turn()
    assert memo.derive_all([kept, dropped, kept], make) == ["A", "B", "A"]  # derive of each, in order
    assert made == ["a", "b", "a", "b"]  # all found from the previous round
    memo.turn()
    memo.turn()
    assert memo.derive_all([dropped], make) == ["B"]  # not used in the last round: made again
    assert made == ["a", "b", "a", "b", "b"]


def test_put_again_replaces_the_value_and_keeps_the_entry_for_the_round() -> None:
    memo: SameObjectMemo[str] = SameObjectMemo()
    labels = {"pod": "a"}
    memo.put(labels, "first")
    memo.turn()
    memo.put(labels, "second")  # the entry of the round before, updated in place
    memo.put(labels, "third")  # twice in one round: the last value, used once
    memo.turn()
    assert memo.get(labels) == "third"
    memo.turn()  # a round without it: forgotten
    assert memo.get(labels) is None
