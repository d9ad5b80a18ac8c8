"""The one assembly: the running firmware from config plus a bundle of hardware parts.

:func:`assemble` is the only place that wires an :class:`~bodycam.device.app.App`.
``bodycam run`` (:mod:`bodycam.device.firmware`) hands it the real parts (picamera2,
RPi.GPIO/rpi-lgpio pins, the GNSS UART, the systemd notifier); ``bodycam-sim run``
(:mod:`bodycam.hw_sim.sim_run`) hands it simulated ones (a clip, scripted pins, NMEA
over a pty, no notifier). Everything else (detector, outbox, publisher, recorder,
event tracker, state machine, inputs and indicators over the pins, telemetry) is
built here the same way for both, and every resource's lifetime is owned by one
``ExitStack``: leaving the ``with`` closes the publisher, the outbox, the GNSS
reader, the input sampler, the pins, the detector and the notifier, in reverse order
of opening, whatever happened.

Start-up truth: the notifier says ``READY=1`` only after the first frame has gone
through the whole loop (:meth:`Firmware.run`), never when the camera merely opened.
"""

from __future__ import annotations

import collections
import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from bodycam.device.app import App, RunStats
from bodycam.device.clock import Clock, mono_to_wall
from bodycam.device.config import AppConfig
from bodycam.device.detect.audio_detector import AudioDetector
from bodycam.device.detect.audio_path import AudioPath
from bodycam.device.detect.detector import Detector, build_detector
from bodycam.device.detect.events import ShotTracker
from bodycam.device.detect.fusion import Fusion
from bodycam.device.detect.model_spec import ModelSpec, check_reachable, default_model_path, load_model_spec
from bodycam.device.errors import ConfigError, DetectorUnavailableError, ModelError, StorageError
from bodycam.device.footage.aac_track import FootageSound
from bodycam.device.footage.atrest import encryption_from_config
from bodycam.device.footage.footage_path import CameraFootage
from bodycam.device.footage.recorder import Recorder
from bodycam.device.footage.recording_state import RecordingStateMachine
from bodycam.device.footage.retention import Retention
from bodycam.device.hw.frames import Camera, StreamInfo
from bodycam.device.hw.gpio import PinFactory
from bodycam.device.hw.indicators import Indicators
from bodycam.device.hw.inputs import Inputs
from bodycam.device.hw.microphone import Microphone
from bodycam.device.identity import key_path, load_signer
from bodycam.device.model_select import ModelRejected, check_model
from bodycam.device.model_store import ModelStore
from bodycam.device.uplink.commands import Record
from bodycam.device.uplink.markers import JSON, Location, Marker, MarkerSigner, ModelRef
from bodycam.device.uplink.offload import custody_keys
from bodycam.device.uplink.outbox import Outbox

log = logging.getLogger("bodycam")


class LocationSource(Protocol):
    """Where the device is (GNSS): started with the firmware, closed with it."""

    def start(self) -> None: ...

    def location(self) -> Location | None:
        """The marker's ``location``: a fresh fix, or None."""
        ...

    def close(self) -> None: ...


class ServiceNotifier(Protocol):
    """The service manager as the firmware sees it (systemd's watchdog over sd_notify)."""

    def ready(self, status: str | None = None) -> None: ...

    def status(self, text: str) -> None: ...

    def stopping(self, status: str | None = None) -> None: ...

    def kick(self) -> None: ...

    def close(self) -> None: ...


@dataclass
class HardwareParts:
    """The hardware the firmware runs on, real or simulated, behind the firmware's protocols.

    ``pins``: a pin factory from which the assembly builds the debounced inputs and the
    LED/haptic indicators (when ``[gpio]`` uses any pin); ``inputs``/``indicators`` given
    here replace what would be built from the pins (the simulator's scripted buttons).
    ``input_sampler_s``: sample the buttons on a thread at this period (hardware: 5 ms, so
    a press shorter than a frame is not missed); None samples once per frame (virtual time).
    ``footage``: the camera writes footage itself (picamera2); None: the loop remuxes the
    camera's encoded packets.
    ``microphone``: the audio source (ALSA on the camera, the clip's track in the simulator);
    None, a source without audio or a failing one: the firmware runs video-only.
    ``footage_sound``: footage that records the microphone's sound (the camera encodes the loop's
    blocks to AAC); None with ``footage`` None: the remuxed packets carry the source's own track.
    """

    camera: Camera
    clock: Clock
    pins: PinFactory | None = None
    inputs: Inputs | None = None
    indicators: Indicators | None = None
    input_sampler_s: float | None = None
    location: LocationSource | None = None
    notifier: ServiceNotifier | None = None
    footage: CameraFootage | None = None
    board: Callable[[], dict[str, JSON]] | None = None  # board telemetry (temperature, throttling, ...)
    clock_status: Callable[[], dict[str, JSON]] | None = None  # the markers' ``clock`` (hw/clock_sync.py)
    microphone: Microphone | None = None
    footage_sound: FootageSound | None = None


def model_path(cfg: AppConfig) -> Path:
    return Path(cfg.detector.model) if cfg.detector.model else default_model_path()


def model_spec(cfg: AppConfig) -> ModelSpec:
    """The configured model's contract (its input size sizes the camera's lores stream)."""
    return load_model_spec(model_path(cfg))


@dataclass
class Firmware:
    """The assembled firmware; run it with :meth:`run` inside :func:`assemble`'s ``with``."""

    cfg: AppConfig
    app: App
    detector: Detector
    outbox: Outbox
    recorder: Recorder
    publisher: Any  # MqttPublisher | None (imported only when MQTT is enabled)
    notifier: ServiceNotifier | None
    info: StreamInfo | None = None
    ready_sent: bool = False
    listeners: list[Callable[[Marker], None]] = field(default_factory=list)
    offload: Any = None  # OffloadService | None (offload.enabled)

    def start(self) -> StreamInfo:
        """Start the camera and the footage path (errors here are start-up failures)."""
        self.info = self.app.start()
        spec = self.detector.spec
        log.info("bodycam %s: camera %dx%d @ %.1f fps, model %s %s on %s", self.cfg.device.id, self.info.width,
                 self.info.height, self.info.fps, spec.name, spec.version, self.detector.backend)
        return self.info

    def _first_frame(self) -> None:
        spec = self.detector.spec
        self.ready_sent = True
        if self.notifier is not None:
            alarm = f" (ALARM: {self.detector.alarm})" if self.detector.alarm else ""
            self.notifier.ready(" ".join(f"running: {spec.name} {spec.version} on {self.detector.backend}{alarm}; "
                                         f"{self.app.audio.summary()}".split())[:400])

    def run(self, progress: Callable[[RunStats], None] | None = None, progress_every: int = 300) -> RunStats:
        """Run the loop until the camera ends or :meth:`request_stop`; READY=1 after the first frame."""
        if self.info is None:
            self.start()
        self.app.on_first_frame = self._first_frame
        return self.app.run(progress=progress, progress_every=progress_every)

    def request_stop(self) -> None:
        self.app.request_stop()

    def drain(self, timeout_s: float) -> int:
        """Give the publisher ``timeout_s`` to deliver what is queued; returns the outbox depth."""
        if self.notifier is not None:
            self.notifier.stopping("stopping")
        if self.publisher is not None:
            self.publisher.wait_drained(timeout_s)
        return self.outbox.depth()


def _gpio_used(cfg: AppConfig) -> bool:
    g = cfg.gpio
    return g.enabled and any(p is not None for p in (g.record_pin, g.marker_pin, g.holster_pin, g.led_pin, g.haptic_pin))


def _check_thresholds(checks: Sequence[tuple[str, float]], scale: float, zero_point: int, model: str) -> None:
    """Each ``(key, value)`` must be a score the model's int8 output can reach (ConfigError naming the key
    and the model's maximum); one within a quantisation step of it is logged."""
    for where, value in checks:
        warning = check_reachable(where, value, scale, zero_point, model)
        if warning is not None:
            log.warning("%s", warning)


def _video_thresholds(cfg: AppConfig, spec: ModelSpec, package: str | None) -> None:
    """``events.threshold`` (and ``fusion.video_support`` under ``fused``) against the loaded video model.

    A store package whose output cannot reach them is rejected (the service falls back to the previous
    model, which may); with the configured or shipped model it is a start-up error (exit 78)."""
    if cfg.events.threshold is not None:
        checks = [("events.threshold", cfg.events.threshold)]
    else:
        checks = [(f"{spec.name}'s sidecar threshold (events.threshold unset)", spec.threshold)]
    if cfg.fusion.policy == "fused":
        checks.append(("fusion.video_support", cfg.fusion.video_support))
    try:
        _check_thresholds(checks, spec.output.scale, spec.output.zero_point, f"{spec.name} {spec.version}")
    except ConfigError as exc:
        if package is not None:
            raise ModelRejected(package, str(exc)) from exc
        raise


def _audio_detection(cfg: AppConfig, parts: HardwareParts,
                     stack: contextlib.ExitStack) -> tuple[AudioDetector | None, Fusion, ModelRef | None]:
    """The audio detector (when the policy uses sound and there is a microphone) and the fusion.

    A missing or mismatched audio model is a start-up error (ModelError), like the video model's.
    """
    detector = None
    ref = None
    fcfg = cfg.fusion
    if fcfg.policy != "video" and parts.microphone is not None:
        from bodycam.device.detect.audio_detector import build_audio_detector
        from bodycam.device.detect.audio_model_spec import default_audio_model_path, load_audio_model_spec

        path = Path(fcfg.audio_model) if fcfg.audio_model else default_audio_model_path()
        spec = load_audio_model_spec(path)
        checks = [("fusion.audio_alone", fcfg.audio_alone) if fcfg.audio_alone else
                  (f"{spec.name}'s sidecar threshold (fusion.audio_alone = 0)", spec.threshold)]
        if fcfg.policy == "fused":
            checks.append(("fusion.audio_support", fcfg.audio_support))
            if fcfg.incident_s > 0:
                checks.append(("fusion.incident_audio", fcfg.incident_audio))
        _check_thresholds(checks, spec.out_scale, spec.out_zero_point, f"{spec.name} {spec.version}")
        detector = build_audio_detector(str(path), threads=cfg.detector.threads,
                                        threshold=fcfg.pick_threshold(spec.threshold),
                                        echo_drop_db=fcfg.echo_drop_db)
        stack.callback(detector.close)
        ref = ModelRef(name=spec.name, version=spec.version, sha256=spec.sha256)
        # a held onset is decided up to incident_s after it, plus the audio path's lag (< 1 s)
        if fcfg.policy == "fused" and fcfg.incident_s and fcfg.incident_s + 1.0 > cfg.recording.pre_event_s:
            log.warning("fusion.incident_s (%g s) is longer than recording.pre_event_s (%g s): a shot the incident "
                        "rule marks that long before the shot that confirms it is published without a place in "
                        "the footage; lengthen the buffer or shorten incident_s", fcfg.incident_s,
                        cfg.recording.pre_event_s)
        return detector, Fusion(fcfg, audio_alone=spec.threshold), ref
    return None, Fusion(fcfg, audio_alone=1.0), None


@contextlib.contextmanager
def assemble(cfg: AppConfig, parts: HardwareParts, *, state_dir: Path | None = None,
             listeners: Sequence[Callable[[Marker], None]] = (), keep_stage_times: bool = True,
             signer: MarkerSigner | None = None, package: str | None = None,
             models: ModelStore | None = None) -> Iterator[Firmware]:
    """Build the firmware from ``cfg`` and ``parts``; everything is released when the ``with`` ends.

    ``state_dir`` (outbox) defaults to ``<data_dir>/state``; ``listeners`` see every
    committed marker just before the publisher is woken (the simulator's printout). ``signer``
    (markers and manifests) defaults to the device key (``identity``): none is a start-up error.
    ``package``: the model store package ``cfg``'s model comes from (device/model_select.py); if
    it does not load or fails its self-test, :class:`ModelRejected` (the caller falls back).
    ``models``: the model store; with offload on, approved models are fetched from base into it at
    the dock (``uplink/model_fetch.py``).
    """
    clock = parts.clock
    with contextlib.ExitStack() as stack:
        # parts are owned from the start: a failure below still releases them
        stack.callback(parts.camera.stop)  # idempotent; the loop also stops it at the end
        if parts.pins is not None:
            stack.callback(parts.pins.close)
        if parts.notifier is not None:
            stack.callback(parts.notifier.close)
            parts.notifier.status("starting: loading the model")
        if parts.microphone is not None:
            stack.callback(parts.microphone.close)
        try:
            detector = build_detector(cfg.detector, default_model_path())
        except ModelError as exc:
            if package is not None and not isinstance(exc, DetectorUnavailableError):
                raise ModelRejected(package, f"does not load: {exc}") from exc
            raise
        stack.callback(detector.close)
        check_model(detector, model_path(cfg), package)
        spec = detector.spec
        _video_thresholds(cfg, spec, package)  # a threshold the model cannot reach disables detection
        data_dir = cfg.data_dir
        state = state_dir or data_dir / "state"
        try:
            state.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"{state}: cannot create the state directory ({exc.strerror or exc})") from exc
        if signer is None:
            signer = load_signer(key_path(cfg.identity, data_dir))
        encryption = encryption_from_config(cfg.atrest, data_dir)  # base's key missing: a start-up error
        outbox = stack.enter_context(Outbox.from_config(state / "outbox.sqlite", cfg.device.id, clock, cfg.outbox,
                                                          signer=signer))
        inputs, indicators = parts.inputs, parts.indicators
        inputs_alarm: Callable[[], str | None] | None = None  # a pin that cannot be read (hw/inputs.py)
        if parts.pins is not None and _gpio_used(cfg):
            from bodycam.device.hw.indicators import GpioIndicators
            from bodycam.device.hw.inputs import GpioInputs

            if inputs is None:
                gpio_inputs = GpioInputs(parts.pins, cfg.gpio, clock,
                                         on_alarm=parts.notifier.status if parts.notifier is not None else None)
                inputs_alarm = lambda: gpio_inputs.alarm  # noqa: E731
                stack.callback(gpio_inputs.close)
                if parts.input_sampler_s is not None:
                    gpio_inputs.start_sampler(parts.input_sampler_s)
                inputs = gpio_inputs
            if indicators is None:
                gpio_indicators = GpioIndicators(parts.pins, cfg.gpio, clock)
                stack.callback(gpio_indicators.close)
                indicators = gpio_indicators
        location = None
        if parts.location is not None:
            parts.location.start()
            stack.callback(parts.location.close)
            location = parts.location.location
        custody = custody_keys(cfg.offload, data_dir)  # base's custody keys: what base confirmed may be deleted
        retention = Retention(data_dir / "recordings", cfg.retention, reserve=outbox.reserve, trusted=custody)
        try:
            retention_alarm = retention.bound_to_card()  # min_free_mb against the card's size
        except OSError as exc:
            raise StorageError(f"{data_dir}: cannot read the file system's size ({exc.strerror or exc})") from exc
        if retention_alarm is not None:
            log.error("ALARM %s", retention_alarm)
            if parts.notifier is not None:
                parts.notifier.status(f"ALARM {retention_alarm}"[:400])
        recorder = Recorder(data_dir, cfg.device.id, cfg.recording, partial(mono_to_wall, clock), retention,
                            camera_footage=parts.footage, signer=signer, encryption=encryption)
        stack.callback(recorder.close)
        offload = None
        if cfg.offload.enabled:  # uploads finished recordings to base when docked (uplink/offload.py)
            from bodycam.device.uplink.offload import build_service

            offload = build_service(cfg.offload, cfg.device.id, signer, clock, data_dir / "recordings", parts.pins,
                                    models=models, trusted=custody)
            stack.callback(offload.close)
            if offload.alarm is not None and parts.notifier is not None:
                parts.notifier.status(f"ALARM offload: {offload.alarm}"[:400])
            offload.start()
        app_ref: list[App] = []
        audio_detector, fusion, audio_ref = _audio_detection(cfg, parts, stack)
        audio = AudioPath(parts.microphone, audio_detector,
                          on_alarm=parts.notifier.status if parts.notifier is not None else None,
                          sound=parts.footage_sound, source_sound=parts.footage is None)

        def telemetry() -> Mapping[str, JSON]:
            body: dict[str, JSON] = {}
            if app_ref:
                st = app_ref[0].stats
                body["frames"] = st.frames
                body["inference_ms_p50"] = round(st.percentile_ms("invoke", 50), 3)
                body["recording"] = app_ref[0].recorder.active is not None
                body["storage_alarm"] = app_ref[0].recorder.storage_alarm
                body["model"] = app_ref[0].model_ref.to_dict()
                if app_ref[0].clock_status is not None:
                    body["clock"] = app_ref[0].current_clock()
                if app_ref[0].location is not None:
                    loc = app_ref[0].current_location()
                    body["location"] = None if loc is None else loc.to_dict()
            body["detector"] = detector.backend
            if detector.alarm:
                body["detector_alarm"] = detector.alarm
            if inputs_alarm is not None and (why := inputs_alarm()):
                body["inputs_alarm"] = why
            if app_ref:
                body["audio"] = app_ref[0].audio.telemetry()
            if parts.board is not None:
                body["sources"] = parts.board()
            if offload is not None:
                body["offload"] = offload.telemetry()
            if retention_alarm is not None:
                body["retention_alarm"] = retention_alarm
            return body

        publisher = None
        record_requests: collections.deque[Record] = collections.deque(maxlen=64)  # cmd/record, publisher -> loop
        if cfg.mqtt.enabled:
            from bodycam.device.uplink.mqtt_publisher import MqttPublisher

            publisher = MqttPublisher(cfg.mqtt, outbox, clock, telemetry=telemetry)
            publisher.on_record = record_requests.append  # before it starts: no command can find no taker
            stack.enter_context(publisher)
        marker_listeners: list[Callable[[Marker], None]] = list(listeners)
        if publisher is not None:
            pub = publisher
            marker_listeners.append(lambda _m: pub.wake())
        alarm_sources: list[Callable[[], str | None]] = [
            lambda: "microphone" if app_ref and app_ref[0].audio.telemetry().get("alarm") else None,
            lambda: retention_alarm,  # min_free_mb clamped to the card: the LED shows it until the config is fixed
        ]
        if inputs_alarm is not None:
            alarm_sources.append(inputs_alarm)
        if publisher is not None:
            alarm_sources.append(lambda: None if pub.delivery_alarm is None else f"delivery: {pub.delivery_alarm}")
        if offload is not None:
            service = offload
            alarm_sources.append(lambda: None if service.alarm is None else f"offload: {service.alarm}")
        app = App(camera=parts.camera, detector=detector, tracker=ShotTracker.from_config(cfg.events, spec.threshold),
                  journal=outbox, recorder=recorder, clock=clock, state_machine=RecordingStateMachine(cfg.recording),
                  inputs=inputs, indicators=indicators, location=location, watchdog=parts.notifier,
                  listeners=marker_listeners, keep_stage_times=keep_stage_times, audio=audio,
                  clock_status=parts.clock_status, fusion=fusion, audio_model=audio_ref, alarm_sources=alarm_sources,
                  record_requests=record_requests)
        app_ref.append(app)
        yield Firmware(cfg=cfg, app=app, detector=detector, outbox=outbox, recorder=recorder, publisher=publisher,
                       notifier=parts.notifier, listeners=marker_listeners, offload=offload)


__all__ = ["Firmware", "HardwareParts", "LocationSource", "Microphone", "ServiceNotifier", "assemble", "model_spec"]
