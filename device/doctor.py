"""``bodycam doctor``: a self-test a technician runs on a camera (with the service stopped).

Each check gives one line, ``ok`` / ``warn`` / ``fail``, what it found and, when not ok,
the fix. The checks use the firmware's own parts (:class:`~bodycam.device.assemble.HardwareParts`,
built by ``firmware.real_parts`` on the camera, simulated in the tests): camera and lores
format, the H.264 encoder (a short real recording that must play back), microphone, Edge
TPU (the same child-process probe as the start-up), GPIO pins, GNSS fix and clock offset,
storage free/writable, the broker with the configured credentials, and the unit's hardening
(``systemd-analyze security``). The exit status is the worst result: 0 ok, 1 warn, 2 fail.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

from bodycam.device.assemble import HardwareParts, model_path, model_spec
from bodycam.device.config import AppConfig
from bodycam.device.errors import HardwareError
from bodycam.device.hw.gpio import Pull

log = logging.getLogger(__name__)

Level = Literal["ok", "warn", "fail"]
LEVELS: dict[Level, int] = {"ok": 0, "warn": 1, "fail": 2}
#: where the unit is installed (docs/hardware.md); the packaged copy is used when it is not
INSTALLED_UNIT = Path("/etc/systemd/system/bodycam.service")
EXPOSURE_MAX = 2.0


@dataclass(frozen=True)
class Check:
    name: str
    level: Level
    detail: str
    fix: str = ""


@dataclass
class DoctorOptions:
    unit: Path | None = None  # the unit file to rate; None: installed, else packaged
    systemd_analyze: str | None = None  # None: from PATH
    gnss_wait_s: float = 10.0
    encoder_seconds: float = 1.5


class Unavailable:
    """A part that could not even be built: every use raises the error that stopped it."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def start(self) -> Any:
        raise self.error

    def read(self) -> Any:
        raise self.error

    def input_pin(self, pin: int, pull: Any) -> Any:
        raise self.error

    def output_pin(self, pin: int, initial_high: bool = False) -> Any:
        raise self.error

    def stop(self) -> None:
        pass

    def close(self) -> None:
        pass


def worst(checks: list[Check]) -> Level:
    return max((c.level for c in checks), key=lambda lv: LEVELS[lv], default="ok")


def exit_code(checks: list[Check]) -> int:
    return LEVELS[worst(checks)]


def _guard(name: str, fn: Callable[[], Check], fix: str) -> Check:
    try:
        return fn()
    except Exception as exc:  # a check must report, never crash the doctor
        return Check(name, "fail", " ".join(f"{type(exc).__name__}: {exc}".split()), fix)


# -- camera and encoder ------------------------------------------------------------------
def check_camera(cfg: AppConfig, parts: HardwareParts, opts: DoctorOptions) -> list[Check]:
    cam = parts.camera
    fix = ("stop the service first (systemctl stop bodycam); check the ribbon cable and "
           "`rpicam-hello --list-cameras`")
    try:
        info = cam.start()
        frame = cam.read()
        if frame is None:
            raise RuntimeError("the camera delivered no frame")
    except Exception as exc:
        cam.stop()
        text = " ".join(f"{type(exc).__name__}: {exc}".split())
        return [Check("camera", "fail", text, fix),
                Check("encoder", "fail", "not tested: the camera did not start", fix)]
    spec_size = None
    try:
        spec = model_spec(cfg)
        spec_size = (spec.input.width, spec.input.height)
    except Exception:  # the model has its own line (Edge TPU) and start-up check
        pass
    lores_fmt = getattr(cam, "lores_format", "RGB")
    lores_size = getattr(cam, "lores_size", (frame.lores.shape[1], frame.lores.shape[0]))
    detail = (f"{info.width}x{info.height} @ {info.fps:g} fps; lores {lores_fmt} {lores_size[0]}x{lores_size[1]}"
              f" -> model input {frame.lores.shape[1]}x{frame.lores.shape[0]}")
    checks = []
    if spec_size is not None and (frame.lores.shape[1], frame.lores.shape[0]) != spec_size:
        checks.append(Check("camera", "fail", detail + f" (the model needs {spec_size[0]}x{spec_size[1]})",
                            "leave camera.lores_size out of the config"))
    else:
        checks.append(Check("camera", "ok", detail))
    checks.append(_guard("encoder", lambda: _check_encoder(cam, parts, info.fps, opts),
                         "check the encoder (Pi 5: software H.264 needs CPU headroom) and free space"))
    cam.stop()
    return checks


def _check_encoder(cam: Any, parts: HardwareParts, fps: float, opts: DoctorOptions) -> Check:
    footage = parts.footage
    n = max(2, round(opts.encoder_seconds * (fps or 30)))
    if footage is None:  # the loop remuxes the camera's encoded packets
        packets = 0
        for _ in range(n):
            f = cam.read()
            if f is None:
                break
            packets += len(f.packets)
        if packets == 0:
            return Check("encoder", "fail", f"no encoded packets in {n} frames", "the camera must deliver H.264")
        return Check("encoder", "ok", f"{packets} encoded packets in {n} frames")
    import av

    mic = _sound_source(parts)
    try:
        with tempfile.TemporaryDirectory(prefix="bodycam-doctor-") as tmp:
            footage.start_recording(lambda i: Path(tmp) / f"segment-{i:05d}.mp4", include_buffer=True)
            sound_error = None
            for _ in range(n):
                f = cam.read()
                if mic is not None and f is not None and sound_error is None and parts.footage_sound is not None:
                    try:
                        parts.footage_sound.write_sound(mic.read(f.t_ns))
                    except HardwareError as exc:  # MicrophoneError, AacError
                        sound_error = str(exc)
            footage.stop_recording()
            error = footage.footage_error()
            if error is not None:
                return Check("encoder", "fail", error, "free space on the card, or replace it")
            frames = 0
            sound_s = 0.0
            files = sorted(Path(tmp).glob("segment-*.mp4"))
            for f in files:
                with av.open(str(f)) as c:
                    frames += sum(1 for _ in c.decode(video=0))
                with av.open(str(f)) as c:
                    if c.streams.audio:
                        sound_s += sum(a.samples / a.sample_rate for a in c.decode(audio=0))
    finally:
        if mic is not None:
            mic.close()
    if frames == 0:
        return Check("encoder", "fail", f"{len(files)} file(s), no frame decodes", "check the encoder")
    detail = f"H.264, fragmented MP4: {frames} frames decode from a {n}-frame test"
    if mic is None:
        return Check("encoder", "ok", detail + "; no sound (no microphone)")
    if sound_error is not None or sound_s == 0:
        return Check("encoder", "warn", f"{detail}; no sound in the file ({sound_error or 'none reached it'})",
                     "check [microphone] (the microphone line) and that the camera's sound encoder works")
    return Check("encoder", "ok", f"{detail}; AAC sound {sound_s:.1f} s")


def _sound_source(parts: HardwareParts) -> Any:
    """The microphone, started, with the footage told to record its sound; None without either."""
    mic, sink = parts.microphone, parts.footage_sound
    if mic is None or sink is None:
        return None
    try:
        if not mic.start():
            mic.close()
            return None
        sink.start_sound()
    except HardwareError:  # the microphone line says why
        mic.close()
        return None
    return mic


# -- microphone ----------------------------------------------------------------------------
def check_microphone(cfg: AppConfig, parts: HardwareParts) -> Check:
    mic = parts.microphone
    if mic is None:
        return Check("microphone", "warn", "no microphone (audio detection off; markers are video-only)",
                     "fit a microphone and set [microphone] enabled = true")
    try:
        if not mic.start():
            return Check("microphone", "warn", "the microphone gives no audio",
                         "check [microphone] device (arecord -l) and group audio")
        mic.read(2**62)
        return Check("microphone", "ok", f"{type(mic).__name__} opened")
    finally:
        mic.close()


# -- Edge TPU --------------------------------------------------------------------------------
def check_edgetpu(cfg: AppConfig) -> Check:
    from bodycam.device.detect.edgetpu_probe import probe_edgetpu

    d = cfg.detector
    if d.backend == "cpu":
        return Check("edgetpu", "ok", "detector.backend = cpu (no Edge TPU used)")
    spec = model_spec(cfg)
    name = spec.edgetpu_file
    fix_build = "build the model where edgetpu_compiler is installed (bodycam-model build)"
    if not name or not (model_path(cfg).parent / name).is_file():
        level: Level = "fail" if d.backend == "edgetpu" else "warn"
        return Check("edgetpu", level, f"no Edge TPU build of {spec.name} {spec.version}: running on the CPU",
                     fix_build)
    result = probe_edgetpu(model_path(cfg).parent / name, d.edgetpu_library, d.edgetpu_device,
                           d.edgetpu_probe_timeout_s)
    if result.ok:
        return Check("edgetpu", "ok", result.detail)
    if result.kind == "missing" and d.backend == "auto":
        return Check("edgetpu", "warn", f"{result.detail}: running on the CPU",
                     "no Coral fitted? fine. Otherwise install libedgetpu (docs/hardware.md, 'Coral')")
    return Check("edgetpu", "fail", result.detail,
                 "use a libedgetpu built for this TFLite runtime (docs/hardware.md, 'Coral'); check the "
                 "Coral is plugged in and the service user is in group apex (PCIe) or plugdev (USB)")


# -- GPIO ------------------------------------------------------------------------------------
def check_gpio(cfg: AppConfig, parts: HardwareParts) -> Check:
    g = cfg.gpio
    ins = {"record": g.record_pin, "marker": g.marker_pin, "holster": g.holster_pin}
    outs = {"led": g.led_pin, "haptic": g.haptic_pin}
    used = [p for p in (*ins.values(), *outs.values()) if p is not None]
    if not g.enabled or not used:
        return Check("gpio", "ok", "disabled in [gpio]")
    if parts.pins is None or isinstance(parts.pins, Unavailable):
        why = parts.pins.error if isinstance(parts.pins, Unavailable) else "no GPIO library"
        return Check("gpio", "fail", " ".join(str(why).split()),
                     "install the 'pi' extra (rpi-lgpio); the user needs group gpio")
    pull: Pull = "up" if g.buttons_active_low else "down"
    done = []
    try:
        for name, pin in ins.items():
            if pin is not None:
                parts.pins.input_pin(pin, pull)
                done.append(f"{name}=GPIO{pin}")
        for name, pin in outs.items():
            if pin is not None:
                parts.pins.output_pin(pin)
                done.append(f"{name}=GPIO{pin}")
    except Exception as exc:
        return Check("gpio", "fail", " ".join(str(exc).split()),
                     "free the pin (another process?), or change [gpio]; the user needs group gpio")
    finally:
        parts.pins.close()
    return Check("gpio", "ok", ", ".join(done))


# -- GNSS ------------------------------------------------------------------------------------
def check_gnss(cfg: AppConfig, parts: HardwareParts, opts: DoctorOptions) -> Check:
    if not cfg.gnss.enabled:
        return Check("gnss", "ok", "disabled in [gnss]")
    loc = parts.location
    tracker = getattr(loc, "tracker", None)
    if loc is None or tracker is None:
        why = getattr(loc, "error", None)
        return Check("gnss", "fail", f"no GNSS receiver{f': {why}' if why else ''}", "check [gnss] device")
    fix_wiring = (f"check the receiver's wiring/power, [gnss] device = {cfg.gnss.device!r} and baudrate "
                  f"{cfg.gnss.baudrate}, enable_uart=1 and no serial console")
    loc.start()
    try:
        deadline = time.monotonic() + opts.gnss_wait_s
        while time.monotonic() < deadline and not tracker.has_fix():
            time.sleep(0.05)
        stats = tracker.stats()
        if stats.used == 0:
            err = tracker.last_error
            return Check("gnss", "fail", f"no NMEA from {cfg.gnss.device} in {opts.gnss_wait_s:g} s"
                         + (f" ({err})" if err else ""), fix_wiring)
        fix = tracker.latest()
        if fix is None or not tracker.has_fix():
            return Check("gnss", "warn", f"NMEA arrives ({stats.used} sentences) but no fix yet",
                         "give the antenna a view of the sky and wait (a cold start takes minutes)")
        tc = tracker.time_check()
        detail = f"{fix.fix} fix, {fix.num_sats or '?'} satellites, hdop {fix.hdop}"
        if tc is None:
            return Check("gnss", "warn", detail + "; no GNSS time yet", "wait for an RMC with a valid time")
        detail += f"; system clock - GNSS = {tc.skew_s:+.3f} s"
        if not tc.ok:
            return Check("gnss", "warn", detail + f" (more than {cfg.gnss.clock_tolerance_s:g} s)",
                         "the wall clock is off: enable NTP, or chrony with the GNSS as a time source")
        return Check("gnss", "ok", detail)
    finally:
        loc.close()


# -- storage ---------------------------------------------------------------------------------
def check_storage(cfg: AppConfig) -> Check:
    d = cfg.data_dir
    fix = f"mount the card at {d} writable by user bodycam (StateDirectory=bodycam)"
    try:
        d.mkdir(parents=True, exist_ok=True)
        probe = d / f".doctor-{os.getpid()}"
        with probe.open("wb") as fh:
            fh.write(b"\0" * 65536)
            fh.flush()
            os.fsync(fh.fileno())
        probe.unlink()
    except OSError as exc:
        return Check("storage", "fail", f"{d}: not writable ({exc.strerror or exc})", fix)
    usage = shutil.disk_usage(d)
    free_mb = usage.free / 1e6
    detail = f"{d}: writable, {free_mb:,.0f} MB free of {usage.total / 1e6:,.0f} MB"
    from bodycam.device.footage.retention import Retention

    clamped = Retention(d / "recordings", cfg.retention).bound_to_card()  # what the service would do at start
    if clamped is not None:
        return Check("storage", "warn", f"{detail}; {clamped}",
                     f"set retention.min_free_mb to at most half of the card ({usage.total / 2**21:,.0f})")
    if free_mb < cfg.retention.min_free_mb:
        return Check("storage", "warn", detail + f" (below retention.min_free_mb {cfg.retention.min_free_mb:g})",
                     "offload footage or fit a larger card")
    return Check("storage", "ok", detail)


# -- broker ----------------------------------------------------------------------------------
def check_broker(cfg: AppConfig) -> Check:
    from bodycam.device.uplink.mqtt_session import MQTT5, MQTT311, MqttSession, SessionError

    m = cfg.mqtt
    if not m.enabled:
        return Check("broker", "warn", "MQTT disabled: markers stay in the outbox", "set [mqtt] enabled and url")
    probe_cfg = replace(m, session_expiry_s=0)  # leave no persistent session behind
    protocols = [MQTT311] if m.protocol == "3.1.1" else [MQTT5] if m.protocol == "5" else [MQTT5, MQTT311]
    fix = ("check [mqtt] url, the network, the credentials ($CREDENTIALS_DIRECTORY/mqtt_*) and the "
           "broker's ACL for this device")
    last: Exception | None = None
    for proto in protocols:
        try:
            with MqttSession(probe_cfg, f"{cfg.device.id}-doctor", proto, connect_timeout_s=min(10.0, m.connect_timeout_s),
                             timer=time.monotonic):
                pass
        except SessionError as exc:
            last = exc
            if exc.unsupported_protocol:
                continue
            break
        except Exception as exc:  # a credentials file that cannot be read, ...
            last = exc
            break
        else:
            auth = "with credentials" if m.username else "anonymously"
            return Check("broker", "ok", f"{m.host}:{m.port} accepted a connection {auth} "
                         f"(MQTT {'5' if proto == MQTT5 else '3.1.1'}{', TLS' if m.use_tls else ''})")
    return Check("broker", "fail", f"{m.host}:{m.port}: {last}", fix)


# -- unit hardening --------------------------------------------------------------------------
def check_unit(opts: DoctorOptions) -> Check:
    unit = opts.unit
    if unit is None:
        packaged = Path(__file__).resolve().parents[1] / "systemd" / "bodycam.service"
        unit = INSTALLED_UNIT if INSTALLED_UNIT.is_file() else packaged
    tool = opts.systemd_analyze or shutil.which("systemd-analyze")
    if tool is None:
        return Check("unit", "warn", "systemd-analyze not found", "apt install systemd")
    if not unit.is_file():
        return Check("unit", "warn", f"{unit}: not installed", "install it (docs/hardware.md)")
    res = subprocess.run([tool, "security", "--offline=true", str(unit)], capture_output=True, text=True,
                         timeout=60, check=False)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", res.stdout)
    if m is None:
        return Check("unit", "fail", f"{unit}: cannot rate it ({(res.stderr.strip() or 'no output')[-200:]})",
                     "systemd-analyze verify the unit")
    score = float(m.group(1))
    detail = f"{unit}: exposure {score} {m.group(2)}"
    if score > EXPOSURE_MAX:
        return Check("unit", "fail", detail + f" (> {EXPOSURE_MAX})", "reinstall the packaged unit; drop-ins must "
                     "not weaken its hardening (systemctl cat bodycam)")
    return Check("unit", "ok", detail)


# -- the camera's own parts, each built on its own -----------------------------------------------
def real_doctor_parts(cfg: AppConfig) -> HardwareParts:
    """The real parts as ``bodycam run`` builds them, except that a part that fails to build
    becomes :class:`Unavailable` (so its own line fails, not the whole doctor)."""
    from bodycam.device import firmware
    from bodycam.device.clock import SystemClock

    clock = SystemClock()

    def build(fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception as exc:
            return Unavailable(exc)

    camera = build(lambda: firmware.real_camera(cfg))
    footage = None if isinstance(camera, Unavailable) else camera
    return HardwareParts(camera=camera, clock=clock, pins=build(lambda: firmware.real_pins(cfg)),
                         location=build(lambda: firmware.real_location(cfg, clock)), footage=footage,
                         microphone=build(lambda: firmware.real_microphone(cfg)))


# -- all of it -------------------------------------------------------------------------------
def run_doctor(cfg: AppConfig, parts: HardwareParts, opts: DoctorOptions | None = None) -> list[Check]:
    opts = opts or DoctorOptions()
    checks = check_camera(cfg, parts, opts)
    checks.append(_guard("microphone", lambda: check_microphone(cfg, parts), "check [microphone]"))
    checks.append(_guard("edgetpu", lambda: check_edgetpu(cfg), "check [detector] and the model"))
    checks.append(_guard("gpio", lambda: check_gpio(cfg, parts), "check [gpio]"))
    checks.append(_guard("gnss", lambda: check_gnss(cfg, parts, opts), "check [gnss]"))
    checks.append(_guard("storage", lambda: check_storage(cfg), "check [device] data_dir"))
    checks.append(_guard("broker", lambda: check_broker(cfg), "check [mqtt]"))
    checks.append(_guard("unit", lambda: check_unit(opts), "install the unit"))
    return checks


def render(checks: list[Check]) -> str:
    lines = []
    for c in checks:
        line = f"{c.level:<4} {c.name:<10} {c.detail}"
        if c.level != "ok" and c.fix:
            line += f"\n     {'':<10} fix: {c.fix}"
        lines.append(line)
    lines.append(f"doctor: {worst(checks)}")
    return "\n".join(lines)


def to_json(checks: list[Check]) -> str:
    return json.dumps({"result": worst(checks), "checks": [asdict(c) for c in checks]}, indent=2)


@contextmanager
def quiet_logs() -> Iterator[None]:
    """The checks' own log lines would interleave with the report: keep warnings and worse only."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        root.setLevel(level)
