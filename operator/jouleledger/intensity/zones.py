"""Matching a node's zone string against a table keyed by cloud regions or zones.

Zones are cloud region/zone names such as ``eu-west-1``, ``eu-west-1a`` (AWS availability zone),
``europe-west4-a`` (GCP zone) or ``westeurope-1`` (Azure zone). A table key ``K`` matches a zone ``Z`` when

- ``Z == K``, or
- ``Z`` starts with ``K + "-"`` (``europe-west4`` matches ``europe-west4-a``; ``eu-west`` matches ``eu-west-1``), or
- ``Z`` is ``K`` followed by one lowercase letter and ``K`` ends in a digit (the AWS availability-zone form:
  ``eu-west-1`` matches ``eu-west-1a``, ``eu-west-1`` does not match ``eu-west-10``).

The longest matching key wins, so an exact zone entry beats its region's entry. Matching is case-sensitive.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["match_zone", "validate_zone_key"]


def _key_matches(key: str, zone: str) -> bool:
    if zone == key:
        return True
    if not zone.startswith(key):
        return False
    rest = zone[len(key) :]
    if rest.startswith("-") and len(rest) > 1:
        return True
    return len(rest) == 1 and "a" <= rest <= "z" and key[-1].isdigit()


def match_zone(zone: str, keys: Iterable[str]) -> str | None:
    """The table key that applies to ``zone`` (longest match), or None."""
    best: str | None = None
    for key in keys:
        if _key_matches(key, zone) and (best is None or len(key) > len(best)):
            best = key
    return best


def validate_zone_key(what: str, key: object) -> str:
    """Return ``key`` if it is a usable zone key (non-empty string, no whitespace); raise ValueError naming it."""
    if not isinstance(key, str) or not key:
        raise ValueError(f"{what}: zone must be a non-empty string, got {key!r}")
    if any(ch.isspace() for ch in key):
        raise ValueError(f"{what}: zone {key!r} must not contain whitespace")
    return key
