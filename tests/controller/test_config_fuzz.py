"""Fuzzing the operator's configuration (:func:`parse_config`, :func:`load_config` and the intensity block it hands
to :func:`build_provider`), and the command line that reads it first: whatever the document, either a valid
configuration or one :class:`ConfigError` (``ValueError`` from the intensity block) whose message is one printable
line naming the field; ``jouleledger operator --config BAD --once`` prints one line and exits 2, never a traceback."""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from jouleledger.controller import main as operator_main
from jouleledger.controller.config import _TOP_KEYS, ConfigError, OperatorConfig, load_config, parse_config
from jouleledger.core.labels import MAX_MESSAGE_CHARS, one_line
from jouleledger.intensity import build_provider
from jouleledger.intensity.config import KNOWN_KEYS
from tests._figures import figure
from tests._fuzz import json_values, mutated

VALID: dict[str, Any] = {
    "teamLabel": "team",
    "pue": 1.2,
    "zoneLabels": ["topology.kubernetes.io/zone", "topology.kubernetes.io/region"],
    "defaultZone": "eu-west-1",
    "intensity": {
        "provider": "static",
        "defaultGramsPerKwh": 400,
        "maxGramsPerKwh": 2000,
        "zones": {"eu-west-1": 300, "us-east-1": 380},
        "cacheTtlSeconds": 300,
        "timeoutSeconds": 5,
        "maxAgeSeconds": 7200,
        "electricityMaps": {"url": "https://em.example.test/v3", "zoneMap": {"eu-west-1": "IE"}},
    },
    "embodied": {"defaultGramsPerGpuHour": 10, "models": {"NVIDIA H100 80GB HBM3": 25}},
    "price": {"currency": "EUR", "defaultPerKwh": 0.15, "zones": {"eu-west-1": 0.21}},
    "scrape": {"timeoutSeconds": 5, "concurrency": 16},
    "maxGpuPowerW": 1500,
}
FIELDS = (*_TOP_KEYS, *(key for key in KNOWN_KEYS), "mapping", "YAML")
"""Words one of which an error message must contain: the field it is about (or that the document is no mapping)."""


def _check_message(message: str) -> None:
    assert message
    assert "\n" not in message
    assert message.isprintable()
    assert len(message) <= MAX_MESSAGE_CHARS + 200  # the file name may come in front of it
    assert any(field in message for field in FIELDS), message


def _check_config(config: OperatorConfig) -> None:
    numbers = [
        config.pue,
        config.default_embodied_g_per_gpu_hour,
        config.default_price_per_kwh,
        config.scrape_timeout_s,
        config.max_gpu_power_w,
        *config.embodied_g_per_gpu_hour.values(),
        *config.price_per_kwh.values(),
    ]
    for number in numbers:
        assert isinstance(number, float)
        assert math.isfinite(number)
        assert number >= 0
    assert config.pue >= 1.0
    assert config.max_gpu_power_w >= 1.0
    assert 1 <= config.scrape_concurrency <= 1024
    assert all(isinstance(label, str) and label for label in config.zone_labels)


def _validate(document: object, outcomes: Counter[str]) -> None:
    try:
        config = parse_config(document)
    except ConfigError as error:
        _check_message(str(error))
        outcomes["config_error"] += 1
        return
    _check_config(config)
    try:
        build_provider(config.intensity)
    except ValueError as error:
        _check_message(one_line(str(error)))  # as the command prints it
        outcomes["intensity_error"] += 1
        return
    outcomes["valid"] += 1


def test_mutated_documents_give_a_config_or_one_clear_error() -> None:
    outcomes: Counter[str] = Counter()

    @settings(max_examples=500, deadline=None)
    @example({"pue": 10**400})  # raised OverflowError (float() of an integer beyond float64)
    @example({"intensity": {"defaultGramsPerKwh": 10**400}})  # OverflowError in math.isfinite
    @example({"intensity": {"zones": {"eu-west-1": -(10**400)}}})  # OverflowError in the static table's check
    @example({"teamLabel\n": 1})  # an unknown key with a newline: a two-line message
    @example({"zoneLabels": ["a" * 10_000, 1]})  # a 10 kB message
    @given(mutated(VALID) | json_values)
    def run(document: Any) -> None:
        _validate(document, outcomes)

    run()
    figure(f"operator config fuzz: {outcomes.total()} documents, {dict(sorted(outcomes.items()))}")
    assert outcomes["valid"]
    assert outcomes["config_error"]


yaml_texts = st.one_of(
    st.builds(lambda document: yaml.safe_dump(document, allow_unicode=True), mutated(VALID)),
    st.text(alphabet=st.sampled_from("ab:{}[]-,'\"\n #&*!|>%@`9.e\t"), max_size=60),
    st.sampled_from(
        [
            "pue: " + "9" * 5000,  # yaml raises ValueError (Python's 4,300-digit limit), not a YAMLError
            "pue: " + "9" * 400,  # an integer beyond float64
            "pue: !!python/object:os.system x",  # safe_load refuses the tag
            "\ufeffpue: 1.2",
            "a: b: c",
            "pue: .nan",
            "pue: -.inf",
            "scrape: {concurrency: 1e3}",
            "teamLabel: \udcff",  # written with surrogatepass: a file that is not UTF-8
        ]
    ),
)


def test_yaml_files_give_a_config_or_one_clear_error(tmp_path: Path) -> None:
    outcomes: Counter[str] = Counter()
    path = tmp_path / "config.yaml"

    @settings(max_examples=200, deadline=None)
    @example("[" * 600 + "]" * 600)  # yaml recurses until RecursionError (slow to parse: once, not drawn)
    @given(yaml_texts)
    def run(text: str) -> None:
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            config = load_config(path)
        except ConfigError as error:
            message = str(error)
        else:
            _check_config(config)
            outcomes["valid"] += 1
            return
        _check_message(message)
        assert message.startswith(f"{path}: ")
        outcomes["config_error"] += 1

    run()
    figure(f"operator config file fuzz: {outcomes.total()} YAML files, {dict(sorted(outcomes.items()))}")
    assert outcomes["valid"]
    assert outcomes["config_error"]


def _args(config: Path) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    operator_main.add_arguments(parser)
    return parser.parse_args(["--config", str(config), "--standalone", "--once"])


def test_operator_command_line_rejects_bad_config_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.yaml"
    codes: Counter[int] = Counter()

    @settings(max_examples=60, deadline=None)
    @given(mutated(VALID).filter(lambda document: document != VALID))
    def run(document: Any) -> None:
        path.write_text(json.dumps(document), encoding="utf-8")
        try:
            config = load_config(path)
            build_provider(config.intensity)
        except ValueError:
            pass
        else:
            return  # a valid configuration: the operator would start (and need a cluster)
        code = operator_main.run(_args(path))
        err = capsys.readouterr().err
        codes[code] += 1
        assert code == 2
        [line] = err.splitlines()
        assert line.startswith("jouleledger operator: ")

    run()
    figure(f"operator --config BAD --once: {codes.total()} bad files, exit codes {dict(codes)}")


@pytest.mark.parametrize(
    "text",
    ["[" * 600 + "]" * 600, "price: {zones: {'a\\nb': " + "9" * 400 + "}}"],
    ids=["nested", "newline-key-beyond-float64"],
)
def test_the_command_prints_one_line_and_exits_2(tmp_path: Path, text: str) -> None:
    """The real command, in a process of its own: before the fixes these were tracebacks or multi-line errors."""
    config = tmp_path / "config.yaml"
    config.write_text(text, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "jouleledger", "operator", "--config", str(config), "--standalone", "--once"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("jouleledger operator: ")
    assert "Traceback" not in result.stderr
