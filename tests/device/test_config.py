from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from bodycam.device.config import AppConfig, load_config
from bodycam.device.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "config.example.toml"


def test_example_config_loads_and_equals_the_defaults() -> None:
    assert load_config(EXAMPLE) == AppConfig()


def test_example_config_documents_every_section() -> None:
    text = EXAMPLE.read_text()
    for f in dataclasses.fields(AppConfig):
        assert f"[{f.name}]" in text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[device]\nidd = 'x'\n", r"unknown key 'device\.idd'"),
        ("[recording]\nsegment_s = 0.5\n", r"recording\.segment_s"),
        ("[detector]\nbackend = 'gpu'\n", r"detector\.backend: 'gpu' is not one of"),
        ("[device\n", "not valid TOML"),
        ("[gpio]\nrecord_pin = 17\nmarker_pin = 17\n", "share a pin"),
        ("[mqtt]\nurl = 'http://x'\n", r"mqtt\.url"),
    ],
)
def test_bad_config_names_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    p = tmp_path / "c.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(p)
    assert str(p) in str(info.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")
