"""Every alarm lights the LED's alarm pattern: storage, outbox, microphone and delivery to base.

The firmware is built by the one assembly over simulated parts whose pins carry the firmware's own
GpioIndicators; the delivery alarm comes from a real Mosquitto whose ACL refuses the camera's markers.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from _atrest import install_base_key
from _clips import make_plain_clip
from _mqtt import Mosquitto

from bodycam.device.app import RunStats
from bodycam.device.assemble import assemble, model_spec
from bodycam.device.clock import VirtualClock
from bodycam.device.config import AppConfig, config_from_dict
from bodycam.device.uplink.markers import MarkerDraft
from bodycam.hw_sim.gpio_sim import SimPinFactory
from bodycam.hw_sim.sim_run import SimOptions, sim_parts, sim_signer

LED = 23  # [gpio] led_pin's default


def _config(tmp_path: Path, mqtt: dict[str, object]) -> AppConfig:
    return config_from_dict({"device": {"data_dir": str(tmp_path / "data")}, "mqtt": mqtt, "gnss": {"enabled": False}})


def test_an_alarm_source_lights_the_led_and_clearing_it_restores_the_state(tmp_path: Path) -> None:
    clip = make_plain_clip(tmp_path / "c.mp4", seconds=12, audio=False, size=(160, 90))
    cfg = _config(tmp_path, {"enabled": False})
    clock = VirtualClock(0, 1_764_072_000_000_000_000)
    spec = model_spec(cfg)
    parts = sim_parts(SimOptions(clip=clip, out=tmp_path / "data", config=cfg, broker=None, gnss=False), cfg, clock, spec)
    pins = SimPinFactory(clock)
    parts = replace(parts, pins=pins)
    state = tmp_path / "state"
    state.mkdir()
    install_base_key(tmp_path / "data")  # a provisioned camera: footage encrypted at rest to base's key
    why: list[str] = ["delivery: refused by the broker"]
    with assemble(cfg, parts, state_dir=state, signer=sim_signer(cfg, state)) as fw:
        fw.start()
        app = fw.app
        assert app.indicators is not None
        ind = app.indicators
        app.alarm_sources.append(lambda: why[0] if why else None)
        seen: dict[int, tuple[str, list[str]]] = {}

        def step(st: RunStats) -> None:
            seen[st.frames] = (ind.state, app.alarms())  # type: ignore[attr-defined]
            if st.frames == 1:
                why.clear()  # the alarm clears; the LED follows at the next maintenance pass
            if st.frames == 320:
                app.alarm_sources.append(lambda: str(1 / 0))  # a failing source is an alarm, never a crash

        app.run(max_frames=340, progress=step, progress_every=1)
    # the first frame is a maintenance pass; the next is 10 s of camera time later (frame 301)
    assert seen[1] == ("alarm", ["delivery: refused by the broker"])
    assert seen[300][0] == "alarm" and seen[300][1] == []
    assert seen[302] == ("buffering", [])
    assert seen[340][1] == ["alarm source failed: division by zero"]
    assert any(level for _, level in pins.history(LED))


def test_the_delivery_alarm_reaches_the_led(tmp_path: Path) -> None:
    acl = tmp_path / "acl"
    acl.write_text("user base\ntopic readwrite bodycam/#\npattern read bodycam/%c/cmd/#\npattern write bodycam/%c/status\n"
                   "pattern write bodycam/%c/telemetry\n")
    broker = Mosquitto(tmp_path / "mosq", extra=[f"acl_file {acl}"])
    broker.start()
    try:
        clip = make_plain_clip(tmp_path / "c.mp4", seconds=4, audio=False, size=(160, 90))
        cfg = _config(tmp_path, {"enabled": True, "url": broker.url, "ack_timeout_s": 0.5, "resend_alarm_after": 2,
                                 "reconnect_min_s": 0.05, "reconnect_max_s": 0.3})
        clock = VirtualClock(0, 1_764_072_000_000_000_000)
        spec = model_spec(cfg)
        opts = SimOptions(clip=clip, out=tmp_path / "data", config=cfg, broker=None, gnss=False)
        parts = replace(sim_parts(opts, cfg, clock, spec), pins=SimPinFactory(clock))
        state = tmp_path / "state"
        state.mkdir()
        install_base_key(tmp_path / "data")
        with assemble(cfg, parts, state_dir=state, signer=sim_signer(cfg, state)) as fw:
            fw.start()
            fw.app.run(max_frames=1)
            assert fw.app.indicators is not None and fw.app.indicators.state != "alarm"
            fw.outbox.record(MarkerDraft(kind="manual", t_mono_ns=clock.monotonic_ns(), wall_ns=clock.wall_ns()))
            fw.publisher.wake()
            deadline = time.monotonic() + 20
            while fw.publisher.delivery_alarm is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert fw.publisher.delivery_alarm is not None
            assert any(a.startswith("delivery: ") for a in fw.app.alarms())
    finally:
        broker.stop()
