"""Every file input fails in one line: type, size, encoding, depth, numbers."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from bodycam.device.errors import ConfigError, TruthError
from bodycam.device.safe_load import load_json, load_toml, read_text, text_depth


def one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


def test_symlink_to_dev_zero_is_refused_without_reading(tmp_path: Path) -> None:
    link = tmp_path / "config.toml"
    link.symlink_to("/dev/zero")
    done = threading.Event()
    result: list[BaseException] = []

    def run() -> None:
        try:
            load_toml(link, "config")
        except BaseException as exc:
            result.append(exc)
        done.set()

    threading.Thread(target=run, daemon=True).start()
    assert done.wait(5), "reading a symlink to /dev/zero hung"
    assert isinstance(result[0], ConfigError)
    assert f"config {link}: not a regular file (a character device)" == str(result[0])


def test_fifo_directory_and_missing(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="a FIFO") as e:
        load_json(fifo, "scenario")
    one_line(e)
    with pytest.raises(ConfigError, match="a directory"):
        load_json(tmp_path, "scenario")
    with pytest.raises(TruthError, match="not found"):
        load_json(tmp_path / "nope.json", "truth file", error=TruthError)


def test_byte_cap(tmp_path: Path) -> None:
    p = tmp_path / "big.json"
    p.write_text("[" + "0," * 600 + "0]")
    with pytest.raises(ConfigError, match="more than the 1000 bytes allowed"):
        read_text(p, "x", max_bytes=1000)
    assert load_json(p, "x", max_bytes=2000)[0] == 0


def test_deep_json_and_toml_are_one_line_errors(tmp_path: Path) -> None:
    j = tmp_path / "deep.json"
    j.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ConfigError, match="nested more than 64 levels deep") as e:
        load_json(j, "scenario")
    one_line(e)
    t = tmp_path / "deep.toml"
    t.write_text("a = " + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(ConfigError, match="nested more than 64 levels deep"):
        load_toml(t, "config")
    t.write_text("a = " + "{b = " * 100_000 + "1" + "}" * 100_000 + "\n")
    with pytest.raises(ConfigError, match="nested more than 64 levels deep"):
        load_toml(t, "config")
    t.write_text("a" + ".a" * 200 + " = 1\n")  # dotted keys: deep without a bracket
    with pytest.raises(ConfigError, match="nested more than 64 levels deep"):
        load_toml(t, "config")


def test_brackets_inside_strings_do_not_count() -> None:
    assert text_depth('{"a": "[[[[\\"[[", "b": [1]}') == 2
    assert text_depth("a = '[[[[' # [[[[\nb = [\"\\\\\", [2]]", toml=True) == 2


def test_not_utf8_and_bad_numbers(tmp_path: Path) -> None:
    p = tmp_path / "s.json"
    p.write_bytes(b'{"t_s": 1.0, "e": "\xff"}')
    with pytest.raises(ConfigError, match=r"not UTF-8 \(byte 19"):
        load_json(p, "scenario")
    for bad in ('{"t_s": NaN}', '{"t_s": Infinity}', '{"t_s": 1e400}', '{"t_s": -1e999}'):
        p.write_text(bad)
        with pytest.raises(ConfigError, match="not valid JSON") as e:
            load_json(p, "scenario")
        one_line(e)
    t = tmp_path / "c.toml"
    for bad in ("x = nan\n", "x = inf\n", "x = 1e400\n"):
        t.write_text(bad)
        with pytest.raises(ConfigError, match="not valid TOML"):
            load_toml(t, "config")
    p.write_text('{"t_s": 1e308}')
    assert load_json(p, "scenario") == {"t_s": 1e308}  # finite: the loader's range check names the key


# -- the loaders that use it -------------------------------------------------------------------


def test_config_loader_limits(tmp_path: Path) -> None:
    from bodycam.device.config import load_config

    link = tmp_path / "bodycam.toml"
    link.symlink_to("/dev/zero")
    with pytest.raises(ConfigError, match="not a regular file") as e:
        load_config(link)
    one_line(e)
    deep = tmp_path / "deep.toml"
    deep.write_text("[device]\nid = " + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(ConfigError, match="nested more than") as e:
        load_config(deep)
    one_line(e)
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b'[device]\nid = "cam\xff"\n')
    with pytest.raises(ConfigError, match="not UTF-8") as e:
        load_config(bad)
    one_line(e)
    ascii_only = tmp_path / "id.toml"
    ascii_only.write_text('[device]\nid = "cam-\u00e9"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"device\.id") as e:  # the firmware's rule, at load
        load_config(ascii_only)


def test_scenario_loader_limits(tmp_path: Path) -> None:
    from bodycam.hw_sim.gpio_sim import load_scenario

    p = tmp_path / "s.json"
    p.write_text('[{"t_s": 1e308, "event": "record"}]')
    with pytest.raises(ConfigError, match=r"\[0\]\.t_s: must be a finite number >= 0 and <= 604800") as e:
        load_scenario(p)
    assert str(p) in one_line(e)
    p.write_bytes(b'[{"t_s": 1.0, "event": "rec\xe9rd"}]')
    with pytest.raises(ConfigError, match=f"scenario {p}: not UTF-8"):
        load_scenario(p)
    p.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ConfigError, match="nested more than"):
        load_scenario(p)
    t = tmp_path / "s.toml"
    t.write_text("[[events]]\nt_s = nan\nevent = 'record'\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_scenario(t)


def test_truth_loader_limits(tmp_path: Path) -> None:
    from bodycam.hw_sim.truth import load_truth

    p = tmp_path / "c.truth.json"
    p.symlink_to("/dev/zero")
    with pytest.raises(TruthError, match="not a regular file") as e:
        load_truth(p)
    one_line(e)
    p.unlink()
    p.write_text("{" * 100_000)
    with pytest.raises(TruthError, match="nested more than"):
        load_truth(p)


def test_start_time_outside_the_representable_window_is_refused_at_load(tmp_path: Path) -> None:
    from bodycam.device.errors import UsageError
    from bodycam.hw_sim.sim_run import clip_epoch_ns

    for bad in ("1969-12-31T23:59:59Z", "2262-04-12T00:00:00Z", "9999-12-31T23:59:59Z"):
        with pytest.raises(UsageError, match=f"--start-time '{bad}' is outside 1970-01-01T00:00:00.000Z") as e:
            clip_epoch_ns(tmp_path / "none.mp4", bad)
        one_line(e)
    assert clip_epoch_ns(tmp_path / "none.mp4", "2262-04-11T00:00:00Z") > 0
