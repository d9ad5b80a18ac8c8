"""``bodycam`` command line: check-config masks secrets and lists every problem; a closed pipe is quiet."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bodycam.device.cli import MASK, main


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "config.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_check_config_masks_the_mqtt_password(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _write(tmp_path, '[mqtt]\nurl = "mqtt://base:1883"\nusername = "cam01"\npassword = "hunter2-secret"\n')
    assert main(["check-config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "hunter2-secret" not in out
    assert f'"password": "{MASK}"' in out
    assert '"username": "cam01"' in out  # not a secret


def test_check_config_shows_an_unset_password_as_null(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(_write(tmp_path, "[device]\nid = 'cam-7'\n"))]) == 0
    assert '"password": null' in capsys.readouterr().out


def test_check_config_lists_every_problem_with_its_dotted_key(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _write(tmp_path, "\n".join([
        "[device]", 'log_level = "LOUD"',
        "[mqtt]", 'url = "http://base"', "keepalive = 1", 'username = "u"', "password = 987654321", "brokr = 1",
        "[camera]", "lores_size = [161, 90]",
        "[gpio]", 'debounce_ms = "x"', "",
    ]))
    assert main(["check-config", str(cfg)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert lines[0] == f"bodycam check-config: {cfg}: 7 problem(s)"
    keys = [line.strip().split(":")[0] for line in lines[1:]]
    assert keys == ["device.log_level", "unknown key 'mqtt.brokr' (known keys", "mqtt.password", "mqtt.url",
                    "mqtt.keepalive", "camera.lores_size", "gpio.debounce_ms"]
    assert "987654321" not in captured.err


def test_check_config_of_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(tmp_path / "nope.toml")]) == 2
    assert "config file not found" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["-m", "bodycam.device.cli", "check-config", "docs/config.example.toml"],
    ["-m", "bodycam.hw_sim.cli", "inspect", "examples/range_demo.mp4"],
])
def test_a_reader_that_went_away_ends_the_command_quietly(argv: list[str]) -> None:
    """``... | head``: the reader closed the pipe before the command wrote; no traceback, exit 141."""
    root = Path(__file__).resolve().parents[2]
    r, w = os.pipe()
    os.close(r)  # the reader is gone before the command writes a byte
    try:
        proc = subprocess.run([sys.executable, *argv], stdout=w, stderr=subprocess.PIPE, text=True, cwd=root,
                              timeout=120)
    finally:
        os.close(w)
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr, proc.stderr
    assert proc.stderr == ""
    assert proc.returncode == 141
