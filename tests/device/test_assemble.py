"""One assembly: the service (`bodycam run`) and the simulator (`bodycam-sim run`) wire the same firmware.

Two checks that fail as soon as the two paths diverge: no module but `device/assemble.py`
constructs an `App` (source scan), and at run time both `run_firmware` and `run_clip` build
their `App` inside `assemble()` with the same stage types.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from typing import Any

import pytest
from _atrest import install_base_key
from _clips import make_plain_clip

from bodycam.device import app as app_module
from bodycam.device.clock import SystemClock
from bodycam.device.config import config_from_dict
from bodycam.device.identity import provision

ROOT = Path(__file__).resolve().parents[2]
ASSEMBLY = ROOT / "device" / "assemble.py"


def test_only_the_assembly_constructs_an_app() -> None:
    offenders: list[str] = []
    for folder in ("device", "hw_sim", "model_compile", "base", "bench", "scripts", "tests"):
        for path in (ROOT / folder).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, ast.Call):
                    f = node.func
                    name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
                    if name == "App":
                        offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders, "the assembly constructs the App"
    assert all(o.startswith("device/assemble.py:") for o in offenders), offenders


def test_service_and_simulator_import_the_assembly() -> None:
    for rel in ("device/firmware.py", "hw_sim/sim_run.py"):
        tree = ast.parse((ROOT / rel).read_text(encoding="utf-8"))
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                    and n.module == "bodycam.device.assemble" for a in n.names}
        assert "assemble" in imported, rel


@pytest.mark.integration
def test_both_paths_build_the_app_inside_assemble(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[tuple[str, dict[str, Any]]] = []
    real_init = app_module.App.__init__

    def spy(self: app_module.App, **kw: Any) -> None:
        caller = inspect.stack()[1]
        built.append((str(Path(caller.filename).resolve()), kw))
        real_init(self, **kw)

    monkeypatch.setattr(app_module.App, "__init__", spy)
    clip = make_plain_clip(tmp_path / "c.mp4", seconds=1, audio=False)

    from bodycam.hw_sim.sim_run import SimOptions, run_clip

    cfg = config_from_dict({"mqtt": {"enabled": False}, "gnss": {"enabled": False}, "gpio": {"enabled": False}})
    run_clip(SimOptions(clip=clip, out=tmp_path / "sim", config=cfg, broker=None, gnss=False))

    from bodycam.device.assemble import model_spec
    from bodycam.device.firmware import run_firmware
    from bodycam.hw_sim.live_camera import LiveClipCamera

    fw_cfg = config_from_dict({"device": {"data_dir": str(tmp_path / "svc")}, "mqtt": {"enabled": False},
                               "gnss": {"enabled": False}, "gpio": {"enabled": False}})
    spec = model_spec(fw_cfg)
    clock = SystemClock()
    cam = LiveClipCamera(clip, (spec.input.width, spec.input.height), clock)
    provision(tmp_path / "svc" / "identity" / "device.key", fw_cfg.device.id)  # a provisioned camera
    install_base_key(tmp_path / "svc")
    run_firmware(fw_cfg, camera=cam, clock=clock, environ={}, install_signals=False)

    assert [where for where, _ in built] == [str(ASSEMBLY.resolve())] * 2
    (_, sim), (_, svc) = built
    for stage in ("detector", "tracker", "journal", "recorder", "state_machine"):
        assert type(sim[stage]) is type(svc[stage]), stage


@pytest.mark.integration
def test_on_the_service_path_the_button_sampler_runs_and_pins_are_released(tmp_path: Path) -> None:
    """The 5 ms sampler thread runs on the service path and a press reaches the loop through it;
    the pins are released at exit."""
    import threading
    import time

    from bodycam.device.assemble import model_spec
    from bodycam.device.firmware import run_firmware
    from bodycam.device.hw.gpio import RpiGpioFactory
    from bodycam.hw_sim.gpio_sim import FakeRPiGPIO, SimPinFactory
    from bodycam.hw_sim.live_camera import LiveClipCamera

    clip = make_plain_clip(tmp_path / "c.mp4", seconds=5, audio=False)
    cfg = config_from_dict({"device": {"data_dir": str(tmp_path / "svc")}, "mqtt": {"enabled": False},
                            "gnss": {"enabled": False}})
    clock = SystemClock()
    pins = SimPinFactory(clock, {22: False})  # holstered
    gpio = FakeRPiGPIO(pins, "rpi-lgpio")
    factory = RpiGpioFactory(gpio)
    spec = model_spec(cfg)
    cam = LiveClipCamera(clip, (spec.input.width, spec.input.height), clock)
    seen: dict[str, bool] = {}

    def press_when_running() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if any(t.name == "gpio-inputs" for t in threading.enumerate()):
                seen["sampler"] = True
                time.sleep(0.5)
                pins.press(17, 0.2)
                return
            time.sleep(0.01)

    helper = threading.Thread(target=press_when_running)
    helper.start()
    provision(tmp_path / "svc" / "identity" / "device.key", cfg.device.id)
    install_base_key(tmp_path / "svc")
    result = run_firmware(cfg, camera=cam, clock=clock, pin_factory=factory, environ={}, install_signals=False)
    helper.join()
    assert seen.get("sampler"), "the sampler thread ran on the service path"
    starts = [m for m in result.stats.markers if m.kind == "recording_start"]
    assert starts and starts[0].extra is not None and starts[0].extra.get("reason") == "button"
    assert not any(t.name == "gpio-inputs" for t in threading.enumerate())
    assert factory.pins == [] and not gpio._in and not gpio._out  # every pin released
