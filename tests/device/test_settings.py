from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from bodycam.device.errors import ConfigError
from bodycam.device.settings import load_section, require


@dataclass(frozen=True)
class Inner:
    port: int = 1883
    host: str = "localhost"

    def __post_init__(self) -> None:
        require(0 < self.port < 65536, "inner.port", f"{self.port} is not a TCP port")


@dataclass(frozen=True)
class Outer:
    name: str = "cam"
    ratio: float = 0.5
    mode: Literal["a", "b"] = "a"
    tags: tuple[str, ...] = ()
    inner: Inner = field(default_factory=Inner)
    maybe: int | None = None


def test_defaults_and_values() -> None:
    cfg = load_section(Outer, {"ratio": 1, "inner": {"port": 8883}, "tags": ["x"]}, "")
    assert cfg.ratio == 1.0 and isinstance(cfg.ratio, float)
    assert cfg.inner == Inner(port=8883)
    assert cfg.tags == ("x",)
    assert cfg.maybe is None


def test_unknown_key_is_named_with_its_path() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'inner\.prot'"):
        load_section(Outer, {"inner": {"prot": 1}}, "")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"ratio": "x"}, "ratio: expected a number"),
        ({"mode": "c"}, "mode: 'c' is not one of"),
        ({"inner": {"port": True}}, "inner.port: expected an integer"),
        ({"inner": {"port": 0}}, "inner.port: 0 is not a TCP port"),
        ({"inner": 3}, "inner: expected a table"),
    ],
)
def test_bad_values(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_section(Outer, data, "")


def test_every_problem_is_collected_with_its_dotted_key() -> None:
    from bodycam.device.settings import ConfigErrors

    data = {"ratio": "x", "mode": "c", "nope": 1, "inner": {"port": 0, "host": 5, "prot": 2}}
    with pytest.raises(ConfigErrors) as info:
        load_section(Outer, data, "")
    problems = info.value.problems
    assert len(problems) == 6, problems
    assert any(p.startswith("ratio: expected a number") for p in problems)
    assert any(p.startswith("mode: 'c' is not one of") for p in problems)
    assert any(p.startswith("unknown key 'nope'") for p in problems)
    assert any(p.startswith("unknown key 'inner.prot'") for p in problems)
    assert any(p.startswith("inner.host: expected a string") for p in problems)
    assert any(p.startswith("inner.port: 0 is not a TCP port") for p in problems)


@dataclass(frozen=True)
class Ranges:
    low: int = 1
    high: int = 10
    name: str = "x"

    def __post_init__(self) -> None:
        require(self.low >= 0, "r.low", "must be >= 0")
        require(self.high <= 100, "r.high", "must be <= 100")
        require(self.low <= self.high, "r.low", "must not exceed high")
        require(self.name != "", "r.name", "must not be empty")


def test_range_checks_after_the_first_failure_still_run() -> None:
    from bodycam.device.settings import ConfigErrors

    with pytest.raises(ConfigErrors) as info:
        load_section(Ranges, {"low": -1, "high": 500, "name": ""}, "r")
    assert info.value.problems == ["r.low: must be >= 0", "r.high: must be <= 100", "r.name: must not be empty"]


def test_a_default_standing_in_for_a_bad_value_raises_nothing_of_its_own() -> None:
    """low is bad (wrong type) and replaced by its default 1; high=0 then fails 'low <= high',
    but only because of the stand-in, so that is not reported."""
    from bodycam.device.settings import ConfigErrors

    with pytest.raises(ConfigErrors) as info:
        load_section(Ranges, {"low": "a", "high": 0}, "r")
    assert info.value.problems == ["r.low: expected an integer, got 'a'"]


def test_a_secret_of_the_wrong_type_is_not_quoted() -> None:
    @dataclass(frozen=True)
    class Creds:
        password: str | None = None

    with pytest.raises(ConfigError) as info:
        load_section(Creds, {"password": 123456789}, "mqtt")
    assert "123456789" not in str(info.value)
    assert str(info.value).startswith("mqtt.password:")
