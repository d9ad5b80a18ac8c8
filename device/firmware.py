"""Building and running the firmware on the camera: everything wired from one config.

:func:`run_firmware` is what ``bodycam run`` (and so systemd) calls. It builds the
stages from :class:`~bodycam.device.config.AppConfig`, tells systemd READY=1 once
the camera delivers, pings the watchdog from the loop, and stops cleanly on
SIGTERM/SIGINT. The camera and GPIO pin factory can be injected (the simulator and
tests do that); by default the real picamera2 and RPi.GPIO adapters are used,
imported only here, at start-up.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from types import FrameType

from bodycam.device.app import App, RunStats
from bodycam.device.clock import Clock, SystemClock, mono_to_wall
from bodycam.device.config import AppConfig
from bodycam.device.detect.detector import build_detector
from bodycam.device.detect.events import ShotTracker
from bodycam.device.detect.model_spec import default_model_path
from bodycam.device.errors import StorageError
from bodycam.device.footage.recorder import Recorder
from bodycam.device.footage.recording_state import RecordingStateMachine
from bodycam.device.footage.retention import Retention
from bodycam.device.hw.frames import Camera
from bodycam.device.hw.gnss import LocationTracker
from bodycam.device.hw.gpio import PinFactory
from bodycam.device.hw.picamera_adapter import PiCamera
from bodycam.device.hw.watchdog import Watchdog
from bodycam.device.uplink.markers import JSON, Location
from bodycam.device.uplink.outbox import Outbox

log = logging.getLogger("bodycam")


@dataclass
class FirmwareResult:
    stats: RunStats
    undelivered: int
    storage_errors: list[str]


def marker_location(tracker: LocationTracker, max_age_s: float) -> Location | None:
    """The marker's ``location``: the latest fix with its age, or None without a fresh one."""
    fix = tracker.latest()
    if fix is None or fix.age_s > max_age_s:
        return None
    return Location(**fix.to_marker_location())


def _gpio_used(cfg: AppConfig) -> bool:
    g = cfg.gpio
    return g.enabled and any(p is not None for p in (g.record_pin, g.marker_pin, g.holster_pin, g.led_pin, g.haptic_pin))


def _real_camera(cfg: AppConfig, lores_size: tuple[int, int]) -> PiCamera:
    from dataclasses import replace

    cam_cfg = cfg.camera
    if cam_cfg.lores_size != lores_size:
        log.info("camera: lores stream set to the model input %dx%d (config said %dx%d)", *lores_size,
                 *cam_cfg.lores_size)
        cam_cfg = replace(cam_cfg, lores_size=lores_size)
    return PiCamera(cam_cfg, segment_s=cfg.recording.segment_s)


def run_firmware(cfg: AppConfig, *, camera: Camera | None = None, clock: Clock | None = None,
                 pin_factory: PinFactory | None = None, environ: Mapping[str, str] | None = None,
                 install_signals: bool = True) -> FirmwareResult:
    env = os.environ if environ is None else environ
    clock = clock or SystemClock()
    watchdog = Watchdog(clock, environ=env)
    watchdog.status("starting: loading the model")
    detector = build_detector(cfg.detector, default_model_path())
    spec = detector.spec
    data_dir = cfg.data_dir
    state_dir = data_dir / "state"
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"{state_dir}: cannot create the state directory ({exc.strerror or exc})") from exc
    camera_footage = None
    if camera is None:
        camera = _real_camera(cfg, (spec.input.width, spec.input.height))
        camera_footage = camera  # picamera2 encodes and writes the footage itself
    with contextlib.ExitStack() as stack:
        outbox = stack.enter_context(Outbox(state_dir / "outbox.sqlite", cfg.device.id, clock))
        inputs = indicators = None
        if _gpio_used(cfg):
            from bodycam.device.hw.indicators import GpioIndicators
            from bodycam.device.hw.inputs import GpioInputs

            if pin_factory is None:
                from bodycam.device.hw.gpio import RpiGpioFactory

                pin_factory = RpiGpioFactory()
            inputs = GpioInputs(pin_factory, cfg.gpio, clock)
            indicators = GpioIndicators(pin_factory, cfg.gpio, clock)
        location_fn = None
        if cfg.gnss.enabled:
            tracker_gnss = stack.enter_context(LocationTracker(cfg.gnss, clock))

            def location_fn() -> Location | None:
                return marker_location(tracker_gnss, cfg.gnss.max_fix_age_s)

        recorder = Recorder(data_dir, cfg.device.id, cfg.recording,
                            partial(mono_to_wall, clock),
                            Retention(data_dir / "recordings", cfg.retention),
                            camera_footage=camera_footage)
        app_ref: list[App] = []

        def telemetry() -> Mapping[str, JSON]:
            from bodycam.device.hw.telemetry_sources import TelemetrySources

            body: dict[str, JSON] = {}
            if app_ref:
                st = app_ref[0].stats
                body["frames"] = st.frames
                body["inference_ms_p50"] = round(st.percentile_ms("invoke", 50), 3)
                body["recording"] = app_ref[0].recorder.active is not None
                body["storage_alarm"] = app_ref[0].recorder.storage_alarm
            body["sources"] = TelemetrySources(cfg.telemetry_sources, data_dir).read_all()
            return body

        publisher = None
        if cfg.mqtt.enabled:
            from bodycam.device.uplink.mqtt_publisher import MqttPublisher

            publisher = stack.enter_context(MqttPublisher(cfg.mqtt, outbox, clock, telemetry=telemetry))
        app = App(camera=camera, detector=detector, tracker=ShotTracker.from_config(cfg.events, spec.threshold),
                  journal=outbox, recorder=recorder, clock=clock,
                  state_machine=RecordingStateMachine(cfg.recording), inputs=inputs, indicators=indicators,
                  location=location_fn, watchdog=watchdog,
                  listeners=[lambda _m: publisher.wake()] if publisher is not None else [],
                  keep_stage_times=True)
        app_ref.append(app)
        if install_signals:
            def on_signal(signum: int, _frame: FrameType | None) -> None:
                log.info("signal %d: stopping", signum)
                app.request_stop()

            signal.signal(signal.SIGTERM, on_signal)
            signal.signal(signal.SIGINT, on_signal)
        info = app.start()
        log.info("bodycam %s: camera %dx%d @ %.1f fps, model %s %s on %s", cfg.device.id, info.width, info.height,
                 info.fps, spec.name, spec.version, detector.backend)
        watchdog.ready(f"running: {spec.name} {spec.version} on {detector.backend}")

        def progress(st: RunStats) -> None:
            watchdog.status(f"frames {st.frames}, inference p50 {st.percentile_ms('invoke', 50):.2f} ms, "
                            f"outbox {outbox.depth()}")
            _trim_stage_times(st)

        stats = app.run(progress=progress, progress_every=300)
        watchdog.stopping("stopping")
        if publisher is not None:
            publisher.wait_drained(5.0)
        undelivered = outbox.depth()
    watchdog.close()
    return FirmwareResult(stats, undelivered, list(recorder.errors))


def _trim_stage_times(st: RunStats, keep: int = 3000) -> None:
    """The camera runs for hours: keep only the newest per-stage timings."""
    for values in st.stage_ns.values():
        if len(values) > 2 * keep:
            del values[:-keep]


