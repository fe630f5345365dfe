"""The operator's configuration file (YAML, camelCase keys; an unknown key is an error that names it).

::

    teamLabel: team
    pue: 1.2
    zoneLabels: [topology.kubernetes.io/zone, topology.kubernetes.io/region]
    defaultZone: ""
    intensity: {...}            # validated by jouleledger.intensity.build_provider
    embodied: {defaultGramsPerGpuHour: 0, models: {"NVIDIA H100 80GB HBM3": 25}}
    price: {currency: USD, defaultPerKwh: 0.15, zones: {eu-west-1: 0.21}}
    scrape: {timeoutSeconds: 5, concurrency: 16}
    maxGpuPowerW: 1500          # physical bound on a GPU whose agent exports no power limit (see docs/metrics.md)
    relistIntervalSeconds: 300  # reconcile the cluster view with a listing this often (0: never; controller/relist.py)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from jouleledger.controller.relist import DEFAULT_RELIST_INTERVAL_S
from jouleledger.core.carbon import MAX_PUE
from jouleledger.core.deltas import DEFAULT_MAX_GPU_POWER_W
from jouleledger.core.footprints import IntervalRates, method_of, power_method_of
from jouleledger.core.labels import one_line
from jouleledger.core.units import InvalidValueError, checked_float
from jouleledger.intensity.reading import IntensityReading

__all__ = ["ConfigError", "OperatorConfig", "load_config", "parse_config"]

DEFAULT_ZONE_LABELS: Final = ("topology.kubernetes.io/zone", "topology.kubernetes.io/region")
_TOP_KEYS: Final = frozenset(
    {
        "teamLabel",
        "pue",
        "zoneLabels",
        "defaultZone",
        "intensity",
        "embodied",
        "price",
        "scrape",
        "maxGpuPowerW",
        "relistIntervalSeconds",
    }
)
_EMBODIED_KEYS: Final = frozenset({"defaultGramsPerGpuHour", "models"})
_PRICE_KEYS: Final = frozenset({"currency", "defaultPerKwh", "zones"})
_SCRAPE_KEYS: Final = frozenset({"timeoutSeconds", "concurrency"})


class ConfigError(ValueError):
    """The configuration file is invalid; the message (one printable line) names the key."""

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))


@dataclass(frozen=True, slots=True)
class OperatorConfig:
    """Validated operator configuration (``intensity`` is passed as-is to the provider factory)."""

    team_label: str = "team"
    pue: float = 1.0
    zone_labels: tuple[str, ...] = DEFAULT_ZONE_LABELS
    default_zone: str = ""
    intensity: Mapping[str, Any] = field(default_factory=dict)
    default_embodied_g_per_gpu_hour: float = 0.0
    embodied_g_per_gpu_hour: Mapping[str, float] = field(default_factory=dict)
    currency: str = "USD"
    default_price_per_kwh: float = 0.0
    price_per_kwh: Mapping[str, float] = field(default_factory=dict)
    scrape_timeout_s: float = 5.0
    scrape_concurrency: int = 16
    max_gpu_power_w: float = DEFAULT_MAX_GPU_POWER_W
    relist_interval_s: float = DEFAULT_RELIST_INTERVAL_S

    def price_of(self, zone: str) -> float:
        return self.price_per_kwh.get(zone, self.default_price_per_kwh)

    def interval_rates(
        self,
        start_unix_s: float,
        end_unix_s: float,
        zone: str,
        reading: IntensityReading,
        *,
        backend: str,
        simulated: bool,
    ) -> IntervalRates:
        """What applies to one node's interval: ``reading`` of its zone's grid, this configuration's PUE, price of
        ``zone`` and embodied rates, and how the agent's ``backend`` measured the energy."""
        return IntervalRates(
            start_unix_s=start_unix_s,
            end_unix_s=end_unix_s,
            zone=reading.zone,
            intensity_g_per_kwh=reading.g_per_kwh,
            intensity_source=reading.source,
            pue=self.pue,
            price_per_kwh=self.price_of(zone),
            currency=self.currency,
            method=method_of(backend, simulated),
            power_method=power_method_of(backend, simulated),
            embodied_g_per_gpu_hour=self.embodied_g_per_gpu_hour,
            default_embodied_g_per_gpu_hour=self.default_embodied_g_per_gpu_hour,
        )

    def zone_of(self, node_labels: Mapping[str, str]) -> str:
        """The first of ``zone_labels`` the node carries, else ``default_zone`` (may be ``""``)."""
        for label in self.zone_labels:
            value = node_labels.get(label)
            if value:
                return value
        return self.default_zone


_DEFAULT: Final = OperatorConfig()


def _section(where: str, value: object, keys: frozenset[str]) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: must be a mapping, got {type(value).__name__}")
    unknown = sorted(str(key) for key in value if key not in keys)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"unknown key {prefix}{unknown[0]} (known: {', '.join(sorted(keys))})")
    return value


def _number(where: str, value: object, *, minimum: float = 0.0, maximum: float = math.inf) -> float:
    try:
        return checked_float(where, value, minimum=minimum, maximum=maximum)
    except InvalidValueError as error:
        raise ConfigError(str(error)) from None


def _string(where: str, value: object) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where}: must be a string, got {value!r}")
    return value


def _table(where: str, value: object) -> dict[str, float]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: must be a mapping of name to number")
    return {_string(f"{where} key", key): _number(f"{where}.{key}", item) for key, item in value.items()}


def parse_config(raw: object) -> OperatorConfig:
    """Validate a parsed YAML document (None: all defaults)."""
    default = _DEFAULT
    top = _section("", raw, _TOP_KEYS)
    embodied = _section("embodied", top.get("embodied"), _EMBODIED_KEYS)
    price = _section("price", top.get("price"), _PRICE_KEYS)
    scrape = _section("scrape", top.get("scrape"), _SCRAPE_KEYS)
    intensity = top.get("intensity")
    if intensity is not None and not isinstance(intensity, Mapping):
        raise ConfigError("intensity: must be a mapping")
    zone_labels = top.get("zoneLabels", list(default.zone_labels))
    if not isinstance(zone_labels, list) or not all(isinstance(label, str) and label for label in zone_labels):
        raise ConfigError(f"zoneLabels: must be a list of label names, got {zone_labels!r}")
    concurrency = scrape.get("concurrency", default.scrape_concurrency)
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or not 1 <= concurrency <= 1024:
        raise ConfigError(f"scrape.concurrency: must be an integer between 1 and 1024, got {concurrency!r}")
    team_label = _string("teamLabel", top.get("teamLabel", default.team_label))
    if not team_label:
        raise ConfigError("teamLabel: must not be empty")
    currency = _string("price.currency", price.get("currency", default.currency))
    if not currency or len(currency) > 16 or not currency.isalnum():
        raise ConfigError(f"price.currency: must be a short alphanumeric code, got {currency!r}")
    return OperatorConfig(
        team_label=team_label,
        pue=_number("pue", top.get("pue", default.pue), minimum=1.0, maximum=MAX_PUE),
        zone_labels=tuple(zone_labels),
        default_zone=_string("defaultZone", top.get("defaultZone", default.default_zone)),
        intensity=dict(intensity or {}),
        default_embodied_g_per_gpu_hour=_number(
            "embodied.defaultGramsPerGpuHour",
            embodied.get("defaultGramsPerGpuHour", default.default_embodied_g_per_gpu_hour),
        ),
        embodied_g_per_gpu_hour=_table("embodied.models", embodied.get("models")),
        currency=currency,
        default_price_per_kwh=_number("price.defaultPerKwh", price.get("defaultPerKwh", default.default_price_per_kwh)),
        price_per_kwh=_table("price.zones", price.get("zones")),
        scrape_timeout_s=_number(
            "scrape.timeoutSeconds",
            scrape.get("timeoutSeconds", default.scrape_timeout_s),
            minimum=0.001,
            maximum=300.0,
        ),
        scrape_concurrency=concurrency,
        max_gpu_power_w=_number(
            "maxGpuPowerW", top.get("maxGpuPowerW", default.max_gpu_power_w), minimum=1.0, maximum=100_000.0
        ),
        relist_interval_s=_number(
            "relistIntervalSeconds",
            top.get("relistIntervalSeconds", default.relist_interval_s),
            minimum=0.0,
            maximum=86_400.0,
        ),
    )


def load_config(path: str | Path | None) -> OperatorConfig:
    """Read and validate the YAML file at ``path`` (None: all defaults)."""
    if path is None:
        return parse_config(None)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not valid YAML: not UTF-8 text (byte {error.start})") from None
    try:
        document = yaml.safe_load(text)
    except (yaml.YAMLError, ValueError) as error:  # ValueError: an integer of more than 4,300 digits
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(error).split())}") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid YAML: nested too deeply") from None
    try:
        return parse_config(document)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
