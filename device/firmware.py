"""The firmware on the camera: the real hardware parts handed to the one assembly.

:func:`run_firmware` is what ``bodycam run`` (and so systemd) calls. It builds the
real parts (picamera2 camera, RPi.GPIO/rpi-lgpio pins with the 5 ms button sampler,
the GNSS UART, the systemd notifier and watchdog, board telemetry), hands them to
:func:`bodycam.device.assemble.assemble` (which the simulator uses too), runs the
loop and stops cleanly on SIGTERM/SIGINT, whenever they come: the handlers are installed once,
before the first assembly, and set a process-level stop request that reaches the current run or
the one being assembled (a model reload must not lose a ``systemctl stop``). ``READY=1`` is sent once the first frame
went through the loop. A camera, model or storage failure at start-up is reported as
one ``STATUS=`` line and raised as :class:`StartupError` (``bodycam run`` exits
with ``StartupError.exit_code`` (78), which the unit's ``RestartPreventExitStatus=`` keeps from
restarting in a loop). Tests may inject the camera, clock and pin factory.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

from bodycam.device.app import RunStats
from bodycam.device.assemble import Firmware, HardwareParts, LocationSource, assemble, model_spec
from bodycam.device.clock import Clock, SystemClock
from bodycam.device.config import AppConfig
from bodycam.device.errors import BodycamError, ConfigError, HardwareError, StartupError
from bodycam.device.hw.frames import Camera
from bodycam.device.hw.gpio import PinFactory
from bodycam.device.hw.microphone import Microphone
from bodycam.device.hw.watchdog import Watchdog
from bodycam.device.model_select import ModelRejected, open_store, resolve
from bodycam.device.model_store import ModelStore

if TYPE_CHECKING:
    from bodycam.device.hw.picamera_adapter import PiCamera

log = logging.getLogger("bodycam")
MAX_REJECTIONS = 8

class StopRequest:
    """SIGTERM/SIGINT for the whole service: one flag that outlives every assembly.

    The signal handler sets it and stops the run that is current; a run being assembled checks it
    before it starts the camera and right after it became current, so a signal in between is never
    addressed to a run that has already finished. No reload follows a stop request.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._current: Firmware | None = None

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def request(self) -> None:
        self._event.set()
        current = self._current
        if current is not None:
            current.request_stop()

    def attach(self, fw: Firmware | None) -> None:
        """Make ``fw`` the run a stop request reaches (None: none runs); stop it at once if one came."""
        self._current = fw
        if fw is not None and self._event.is_set():
            fw.request_stop()


@dataclass
class FirmwareResult:
    stats: RunStats
    undelivered: int
    storage_errors: list[str]


def _gpio_used(cfg: AppConfig) -> bool:
    g = cfg.gpio
    return g.enabled and any(p is not None for p in (g.record_pin, g.marker_pin, g.holster_pin, g.led_pin, g.haptic_pin))


def real_camera(cfg: AppConfig) -> PiCamera:
    """picamera2 with the lores stream for the model (it also writes the footage)."""
    from bodycam.device.hw.picamera_adapter import PiCamera

    spec = model_spec(cfg)
    lores = (spec.input.width, spec.input.height)
    if cfg.camera.lores_size is not None and cfg.camera.lores_size != lores:
        log.warning("camera.lores_size %dx%d ignored: the model needs %dx%d (leave the key out to use the "
                    "model's size)", *cfg.camera.lores_size, *lores)
    return PiCamera(replace(cfg.camera, lores_size=lores),
                    segment_s=cfg.recording.segment_s, pre_event_s=cfg.recording.pre_event_s)


def real_pins(cfg: AppConfig) -> PinFactory | None:
    """RPi.GPIO's API (rpi-lgpio) when [gpio] uses any pin."""
    if not _gpio_used(cfg):
        return None
    from bodycam.device.hw.gpio import RpiGpioFactory

    return RpiGpioFactory()


def real_location(cfg: AppConfig, clock: Clock) -> LocationSource | None:
    if not cfg.gnss.enabled:
        return None
    from bodycam.device.hw.gnss import GnssLocation, LocationTracker

    return GnssLocation(LocationTracker(cfg.gnss, clock), cfg.gnss.max_fix_age_s)


def real_microphone(cfg: AppConfig) -> Microphone | None:
    if not cfg.microphone.enabled:
        return None
    from bodycam.device.hw.microphone import AlsaMicrophone

    return AlsaMicrophone(cfg.microphone)  # opened by the loop; a fault there means video-only


def real_parts(cfg: AppConfig, clock: Clock, notifier: Watchdog, *, camera: Camera | None = None,
               pin_factory: PinFactory | None = None) -> HardwareParts:
    """The camera's hardware (anything given replaces the real part; tests inject camera and pins)."""
    from bodycam.device.hw.telemetry_sources import TelemetrySources

    footage = None
    if camera is None:
        camera = footage = real_camera(cfg)  # picamera2 encodes and writes the footage itself
    if pin_factory is None:
        pin_factory = real_pins(cfg)
    from bodycam.device.hw.clock_sync import ClockSync

    sources = TelemetrySources(cfg.telemetry_sources, cfg.data_dir)
    location = real_location(cfg, clock)
    return HardwareParts(camera=camera, clock=clock, pins=pin_factory, input_sampler_s=0.005,
                         location=location, notifier=notifier, footage=footage, footage_sound=footage,
                         board=sources.read_all, microphone=real_microphone(cfg),
                         clock_status=ClockSync(getattr(location, "tracker", None)))


def run_firmware(cfg: AppConfig, *, camera: Camera | None = None, clock: Clock | None = None,
                 pin_factory: PinFactory | None = None, environ: Mapping[str, str] | None = None,
                 install_signals: bool = True, camera_factory: Callable[[], Camera] | None = None) -> FirmwareResult:
    """Run the service (``camera_factory``: a new camera for each assembly, for tests); a model store package that fails on this camera is rejected and the firmware
    assembled again with the previous model, and a new package is activated at the next idle moment
    by assembling again (device/model_select.py)."""
    env = os.environ if environ is None else environ
    clock = clock or SystemClock()
    notifier = Watchdog(clock, environ=env)
    stop = StopRequest()
    previous: list[tuple[signal.Signals, Any]] = []
    if install_signals:
        def on_signal(signum: int, _frame: FrameType | None) -> None:
            log.info("signal %d: stopping", signum)
            stop.request()

        for signum in (signal.SIGTERM, signal.SIGINT):
            previous.append((signum, signal.signal(signum, on_signal)))
    try:
        try:
            store = open_store(cfg, clock)
        except BodycamError as exc:
            _fail_start(notifier, exc)
        rejected = 0
        while True:
            try:
                run_cfg, package = resolve(cfg, store)
            except BodycamError as exc:  # the camera must run: on the configured/shipped model
                log.error("ALARM model store unusable (%s): using the configured model", exc)
                notifier.status(f"ALARM model store unusable: {exc}"[:400])
                store, run_cfg, package = None, cfg, None
            cam = camera_factory() if camera_factory is not None else camera
            try:
                result, reload = _run_once(run_cfg, package, store, clock, notifier, cam, pin_factory, stop)
            except ModelRejected as exc:
                assert store is not None
                log.error("ALARM %s: rejected; falling back to the previous model", exc)
                notifier.status(f"ALARM {exc}: rejected, falling back"[:400])
                try:
                    store.reject(exc.package, exc.reason)
                except BodycamError as err:
                    log.error("ALARM cannot record the rejection (%s): the model store is not used", err)
                    store = None
                rejected += 1
                if rejected > MAX_REJECTIONS:  # cannot happen: each rejection leaves one model fewer
                    raise StartupError(f"{rejected} model packages rejected in a row") from exc
                continue
            if not reload or stop.requested:
                return result
            camera = None  # a camera object given by the caller ended with the loop: real parts next time
    finally:
        notifier.close()
        for signum, handler in previous:
            signal.signal(signum, handler)


def _run_once(cfg: AppConfig, package: str | None, store: ModelStore | None, clock: Clock, notifier: Watchdog,
              camera: Camera | None, pin_factory: PinFactory | None,
              stop: StopRequest) -> tuple[FirmwareResult, bool]:
    """One assembly of the firmware, run until it stops; (result, whether to assemble again)."""
    fw: Firmware | None = None
    if stop.requested:  # stopped between two assemblies: nothing to start
        log.info("stop requested: not assembling")
        return FirmwareResult(RunStats(), 0, []), False
    try:
        with assemble(cfg, real_parts(cfg, clock, notifier, camera=camera, pin_factory=pin_factory),
                      package=package, models=store) as fw:
            if stop.requested:  # came while the model loaded: do not start the camera
                log.info("stop requested while assembling: not starting")
                return FirmwareResult(RunStats(), 0, []), False
            fw.start()
            stop.attach(fw)  # from here the signal stops this run (at once if it already came)
            if store is not None:
                fw.app.reload_when = _pending_check(store)

            outbox = fw.outbox

            def progress(st: RunStats) -> None:
                # the audio phrase stays in every status line: a microphone alarm must not scroll away
                # so does any other alarm (a GPIO pin that cannot be read, storage, delivery)
                others = [a for a in fw.app.alarms() if a != "microphone"]
                alarms = f"; ALARM {'; '.join(others)}" if others else ""
                notifier.status(f"frames {st.frames}, inference p50 {st.percentile_ms('invoke', 50):.2f} ms, "
                                f"outbox {outbox.depth()}; {fw.app.audio.summary()}{alarms}"[:400])
                _trim_stage_times(st)

            stats = fw.run(progress=progress, progress_every=300)
            if not fw.ready_sent and not stop.requested:  # a stop before the first frame is no failure
                raise HardwareError("camera: the stream ended before the first frame")
            undelivered = fw.drain(5.0)
            errors = list(fw.recorder.errors)
            reload = fw.app.reload_requested and not stop.requested
    except ModelRejected:
        raise
    except BodycamError as exc:
        if fw is not None and fw.ready_sent:
            raise  # failed while running: systemd restarts it
        _fail_start(notifier, exc)
    finally:
        stop.attach(None)  # a signal from now on is for the next run (or none)
    return FirmwareResult(stats, undelivered, errors), reload


def _pending_check(store: ModelStore) -> Callable[[], bool]:
    """Whether a package waits; a store that cannot be read says no (and logs once), never stops the loop."""
    failed: list[str] = []

    def pending() -> bool:
        try:
            return store.pending() is not None
        except BodycamError as exc:
            if not failed:
                log.error("ALARM model store unreadable (%s): new models wait for the next start", exc)
            failed.append(str(exc))
            return False

    return pending


def config_failure(exc: ConfigError, environ: Mapping[str, str] | None = None) -> StartupError:
    """A config that cannot be loaded when the service starts: one ``STATUS=`` line (as any start-up
    failure), returned as the :class:`StartupError` whose exit status the unit does not restart."""
    notifier = Watchdog(SystemClock(), environ=os.environ if environ is None else environ)
    try:
        notifier.status(" ".join(f"start-up failed: {exc}".split())[:400])  # the caller prints the one line
    finally:
        notifier.close()
    err = StartupError(str(exc))
    err.__cause__ = exc
    return err


def _fail_start(notifier: Watchdog, exc: BodycamError) -> NoReturn:
    """One STATUS= line saying why, then a StartupError (a distinct exit status, no restart loop)."""
    line = " ".join(f"start-up failed: {exc}".split())
    log.error("%s", line)
    notifier.status(line[:400])
    raise StartupError(str(exc)) from exc


def _trim_stage_times(st: RunStats, keep: int = 3000) -> None:
    """The camera runs for hours: keep only the newest per-stage timings."""
    for values in st.stage_ns.values():
        if len(values) > 2 * keep:
            del values[:-keep]
