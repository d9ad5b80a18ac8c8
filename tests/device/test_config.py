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


#: timing keys that reach a wait, a socket/serial timeout or nanoseconds on the loop, with their largest value
TIMING_BOUNDS = [
    ("gnss", "read_timeout_s", 5.0),
    ("gnss", "reopen_interval_s", 3600.0),
    ("gnss", "max_fix_age_s", 3600.0),
    ("gnss", "clock_tolerance_s", 86400.0),
    ("offload", "interval_s", 86400.0),
    ("offload", "timeout_s", 600.0),
    ("mqtt", "telemetry_interval_s", 86400.0),
    ("recording", "auto_stop_after_s", 86400.0),
]


@pytest.mark.parametrize(("section", "key", "most"), TIMING_BOUNDS)
def test_huge_timings_are_refused_at_load_naming_the_key(tmp_path: Path, section: str, key: str,
                                                         most: float) -> None:
    """Event.wait(1e300) and pyserial's timeout raise OverflowError, which killed the GNSS reader and the
    offload thread after the config check had passed (review-runtime #5): refused at load instead."""
    p = tmp_path / "c.toml"
    for bad in (1e300, most * 1.01):
        p.write_text(f"[{section}]\n{key} = {bad!r}\n")
        with pytest.raises(ConfigError, match=rf"{section}\.{key}: .*at most {most:g}|{section}\.{key}: .*{most:g}"):
            load_config(p)
    p.write_text(f"[{section}]\n{key} = {most!r}\n")
    assert getattr(getattr(load_config(p), section), key) == most  # the bound itself is allowed


def test_no_timing_in_the_config_reaches_a_wait_it_would_overflow() -> None:
    """Every ``*_s`` float of every section is bounded below threading.TIMEOUT_MAX (a huge value of any
    of them must be a config error, not a dead thread later)."""
    import threading

    from bodycam.device.config import config_from_dict

    for section in dataclasses.fields(AppConfig):
        defaults = getattr(AppConfig(), section.name)
        for f in dataclasses.fields(defaults):
            if not (f.name.endswith("_s") and isinstance(getattr(defaults, f.name), float)):
                continue
            with pytest.raises(ConfigError, match=rf"{section.name}\.{f.name}"):
                config_from_dict({section.name: {f.name: threading.TIMEOUT_MAX * 2}})
