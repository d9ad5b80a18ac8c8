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
