"""Running the real firmware loop on a clip: the engine behind ``bodycam-sim run``.

:func:`run_clip` builds the firmware with the camera's own assembly
(:func:`bodycam.device.assemble.assemble`) from simulated parts: the clip as camera (frames stamped from PTS), a
virtual clock that follows the clip's timeline (or the wall clock with
``realtime``), scripted buttons from a scenario file, and an MQTT broker
(embedded by default). It returns a :class:`SimReport`; printing is the
command's job.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bodycam.device.app import RunStats
from bodycam.device.assemble import Firmware, HardwareParts, assemble, model_spec
from bodycam.device.clock import VirtualClock, parse_rfc3339
from bodycam.device.config import AppConfig
from bodycam.device.detect.model_spec import ModelSpec
from bodycam.device.errors import BodycamError, BrokerError, ClipError, MarkerError, UsageError
from bodycam.device.footage.atrest import AtRestConfig, generate_identity_file, install_recipient
from bodycam.device.hw.clock_sync import ClockSync
from bodycam.device.hw.frames import Frame, StreamInfo
from bodycam.device.hw.gnss import GnssLocation
from bodycam.device.hw.telemetry_sources import TelemetrySources
from bodycam.device.identity import Signer, ensure_key, key_path, load_signer
from bodycam.device.uplink.markers import Location, Marker
from bodycam.device.uplink.mqtt_config import MqttConfig, TlsConfig
from bodycam.device.uplink.validate import T_MAX, T_MIN, check_wall_ns
from bodycam.hw_sim.clip_camera import ClipCamera

if TYPE_CHECKING:
    from bodycam.hw_sim.marker_watch import MarkerWatch

log = logging.getLogger(__name__)

#: Wall-clock start of a simulated run when the clip has no ``creation_time`` tag.
DEFAULT_EPOCH = "2026-01-01T00:00:00.000Z"


class ClockedCamera:
    """A clip camera that drives the virtual clock from frame times (and paces in real time).

    ``on_time`` is called after the clock moved to each frame's time (the simulated GNSS
    receiver writes its NMEA epochs from there, in step with the clip).
    """

    def __init__(self, inner: ClipCamera, clock: VirtualClock, realtime: bool,
                 on_time: Callable[[int], None] | None = None) -> None:
        self.inner = inner
        self.clock = clock
        self.realtime = realtime
        self.on_time = on_time
        self._t0: float | None = None
        #: (frame t_ns, time.monotonic() when it was read): markers' latencies are measured from here
        self.frame_clock: list[tuple[int, float]] = []

    def start(self) -> StreamInfo:
        return self.inner.start()

    def read(self) -> Frame | None:
        frame = self.inner.read()
        if frame is None:
            return None
        if self.realtime:
            if self._t0 is None:
                self._t0 = time.perf_counter() - frame.t_ns / 1e9
            delay = self._t0 + frame.t_ns / 1e9 - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        self.clock.set_ns(frame.t_ns)
        self.frame_clock.append((frame.t_ns, time.monotonic()))
        if self.on_time is not None:
            self.on_time(frame.t_ns)
        return frame

    def stop(self) -> None:
        self.inner.stop()


@dataclass
class SimOptions:
    clip: Path
    out: Path
    config: AppConfig
    realtime: bool = False
    broker: str | None = "embedded"  # "embedded", a URL, or None for no MQTT
    scenario: Path | None = None
    model: Path | None = None
    start_time: str | None = None
    drain_timeout_s: float = 15.0
    state_dir: Path | None = None  # the outbox's directory; default OUT/state
    gnss: bool = True  # a simulated receiver writes NMEA into a real pty that the firmware reads
    gnss_at: tuple[float, float] | None = None  # (lat, lon) where the walk starts; default DEFAULT_ROUTE's start
    # footage encrypted at rest as on the camera (docs/encryption-at-rest.md); off by default in the
    # simulator, whose footage is there to be looked at: sim_encryption() says with which key
    encrypt: bool = False
    # the watching subscriber's TLS for an mqtts:// broker (its own client certificate under mutual
    # TLS); None: the camera's CA (mqtt.tls.ca_file), no client certificate
    watch_tls: TlsConfig | None = None


@dataclass
class SimReport:
    clip: Path
    out: Path
    stats: RunStats
    info: StreamInfo | None
    recordings: list[dict[str, Any]] = field(default_factory=list)
    broker_url: str | None = None
    published: int = 0
    received: list[Marker] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)
    undelivered: int = 0
    error: str | None = None
    storage_errors: list[str] = field(default_factory=list)
    detector_backend: str = ""
    model_name: str = ""


def clip_epoch_ns(clip: Path, override: str | None) -> int:
    if override:
        try:
            # "now": the machine's clock, for a simulated camera that talks to a live base (peer activation)
            start = time.time_ns() if override == "now" else parse_rfc3339(override)
        except (ValueError, OverflowError) as exc:
            raise UsageError(f"--start-time {override!r} is not an RFC 3339 UTC time ({exc})") from exc
        try:
            return check_wall_ns(start, "--start-time")
        except MarkerError:  # markers could not carry it: refuse now, not at the first marker
            raise UsageError(f"--start-time {override!r} is outside {T_MIN} .. {T_MAX}") from None
    import av

    tag = None
    with contextlib.suppress(Exception), av.open(str(clip)) as c:
        tag = c.metadata.get("creation_time")
    if tag:
        try:
            return check_wall_ns(parse_rfc3339(str(tag)), "creation_time")
        except (ValueError, OverflowError, MarkerError) as exc:
            log.warning("%s: creation_time %r not usable (%s); starting at %s", clip, tag, exc, DEFAULT_EPOCH)
    return parse_rfc3339(DEFAULT_EPOCH)


@contextlib.contextmanager
def _broker(opts: SimOptions, report: SimReport, on_arrival: Callable[[Marker, float], None] | None,
            on_broker: Callable[[bool, str], None] | None = None
            ) -> Iterator[tuple[MqttConfig, MarkerWatch | None]]:
    """Broker (embedded or given) and a watching subscriber; yields (the firmware's MQTT config, the watch).

    A given broker that cannot be reached is not an error: the markers wait in the outbox, as on
    the camera, and ``on_broker(False, reason)`` / ``on_broker(True, "")`` say when it is down / up.
    """
    if opts.broker is None:
        yield replace(opts.config.mqtt, enabled=False), None
        return
    from bodycam.hw_sim.embedded_broker import EmbeddedBroker
    from bodycam.hw_sim.marker_watch import MarkerWatch

    with contextlib.ExitStack() as stack:
        if opts.broker == "embedded":
            broker = stack.enter_context(EmbeddedBroker())
            url = broker.url
        else:
            url = opts.broker
        report.broker_url = url
        cfg = replace(opts.config.mqtt, url=url, enabled=True)
        if opts.broker == "embedded":  # amqtt speaks MQTT 3.1.1 only: skip the MQTT 5 attempt
            cfg = replace(cfg, protocol="3.1.1")
        watch_tls = opts.watch_tls or TlsConfig(ca_file=cfg.tls.ca_file)
        watch = stack.enter_context(MarkerWatch(url, prefix=cfg.topic_prefix, on_marker=on_arrival,
                                                on_state=on_broker, required=opts.broker == "embedded",
                                                tls=watch_tls if url.startswith("mqtts://") else None))
        yield cfg, watch


def run_clip(opts: SimOptions, on_marker: Callable[[Marker], None] | None = None,
             on_arrival: Callable[[Marker, float], None] | None = None,
             on_progress: Callable[[int, float], None] | None = None,
             on_broker: Callable[[bool, str], None] | None = None,
             on_assembled: Callable[[Firmware], None] | None = None) -> SimReport:
    """Run the firmware loop over ``opts.clip`` with simulated parts; see the module docstring.

    ``on_assembled`` sees the assembled firmware before it starts (the evaluation's fusion traces).
    """
    from bodycam.hw_sim.clip_probe import probe_clip
    from bodycam.hw_sim.marker_watch import marker_latencies_ms

    cfg = opts.config
    probe_clip(opts.clip)  # a file that is no clip fails here, before anything is created
    clock = VirtualClock(0, clip_epoch_ns(opts.clip, opts.start_time))
    cfg = replace(cfg, device=replace(cfg.device, data_dir=str(opts.out)))
    if opts.model is not None:
        cfg = replace(cfg, detector=replace(cfg.detector, model=str(opts.model)))
    spec = model_spec(cfg)
    try:
        opts.out.mkdir(parents=True, exist_ok=True)
        state_dir = opts.state_dir or opts.out / "state"
        state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        from bodycam.device.errors import StorageError

        raise StorageError(f"{opts.out}: cannot create the output directory ({exc.strerror or exc})") from exc
    report = SimReport(opts.clip, opts.out, RunStats(), None, model_name=f"{spec.name} {spec.version}")

    def arrival(marker: Marker, now: float) -> None:
        report.received.append(marker)
        if on_arrival is not None:
            on_arrival(marker, now)

    def listener(marker: Marker) -> None:
        if on_marker is not None:
            on_marker(marker)

    with _broker(opts, report, arrival, on_broker) as (mqtt_cfg, watch):
        cfg = replace(cfg, mqtt=mqtt_cfg)
        parts = sim_parts(opts, cfg, clock, spec)
        cfg = replace(cfg, atrest=sim_atrest(cfg, state_dir, opts.encrypt))
        with assemble(cfg, parts, state_dir=state_dir, listeners=[listener], signer=sim_signer(cfg, state_dir)) as fw:
            report.detector_backend = fw.detector.backend
            if on_assembled is not None:
                on_assembled(fw)
            report.info = fw.start()  # a clip that cannot be opened at all is an error of its own
            try:
                fw.run(progress=(lambda st: on_progress(st.frames, st.last_t_ns / 1e9)) if on_progress else None,
                       progress_every=30)
            except ClipError as exc:
                report.error = str(exc)
            finally:
                report.stats = fw.app.stats
                report.storage_errors = list(fw.recorder.errors)
                report.recordings = [r.manifest() for r in fw.recorder.finished]
                if fw.publisher is not None:
                    report.undelivered = fw.drain(opts.drain_timeout_s)
                    report.published = fw.publisher.stats.acked
        if watch is not None:
            # every marker the broker acknowledged reaches the subscriber within moments; markers
            # still in the outbox never will (no waiting on those)
            if report.undelivered == 0:
                watch.wait_ids({m.id for m in report.stats.markers}, timeout=min(5.0, opts.drain_timeout_s))
            camera = parts.camera
            frame_clock = camera.frame_clock if isinstance(camera, ClockedCamera) else []
            report.latency_ms = marker_latencies_ms(report.stats.markers, dict(watch.first_arrival), frame_clock)
    return report


def sim_signer(cfg: AppConfig, state_dir: Path) -> Signer:
    """The configured device key, else a throwaway one kept with the outbox's state
    (``STATE/identity/device.key``, default ``OUT/state``; ``device.pub`` beside it, which
    ``bodycam verify OUT`` finds), made at the first run: markers and footage are signed, and runs
    sharing a state directory (one simulated camera) share its key."""
    if cfg.identity.key_file:
        return load_signer(key_path(cfg.identity, state_dir))
    return ensure_key(state_dir / "identity" / "device.key", cfg.device.id)


def sim_atrest(cfg: AppConfig, state_dir: Path, encrypt: bool) -> AtRestConfig:
    """At rest in the simulator: plaintext unless ``encrypt``; then the configured base key, else a
    throwaway base key pair made at the first run in ``STATE/identity/base.age.key`` (base's private
    key, for ``bodycam verify OUT --decrypt-key``) and ``base.age.pub`` (what the camera holds)."""
    if not encrypt:
        return replace(cfg.atrest, encrypt=False)
    if cfg.atrest.base_key_file:
        return replace(cfg.atrest, encrypt=True)
    pub = state_dir / "identity" / "base.age.pub"
    if not pub.exists():
        key = state_dir / "identity" / "base.age.key"
        if not key.exists():
            generate_identity_file(key)
        install_recipient(pub, str(key))
    return AtRestConfig(encrypt=True, base_key_file=str(pub))


def sim_parts(opts: SimOptions, cfg: AppConfig, clock: VirtualClock, spec: ModelSpec) -> HardwareParts:
    """The simulated hardware: the clip as camera on the virtual clock, scripted buttons, NMEA over a pty."""
    gnss = _SimGnss(clock, opts.gnss_at) if opts.gnss else None
    camera = ClockedCamera(ClipCamera(opts.clip, (spec.input.width, spec.input.height)), clock, opts.realtime,
                           on_time=gnss.advance if gnss is not None else None)
    inputs = None
    if opts.scenario is not None:
        from bodycam.hw_sim.gpio_sim import ScenarioInputs, load_scenario

        inputs = ScenarioInputs(load_scenario(opts.scenario), clock, cfg.gpio)
    from bodycam.hw_sim.sim_microphone import ClipMicrophone

    microphone = ClipMicrophone(opts.clip) if cfg.microphone.enabled else None
    # the scripted pins also carry the LED and haptic outputs (the firmware's own GpioIndicators)
    # board telemetry: the firmware's own reader on the config's paths (a test points them at a fake sysfs)
    board = TelemetrySources(cfg.telemetry_sources, opts.out).read_all
    return HardwareParts(camera=camera, clock=clock, inputs=inputs, pins=inputs.pins if inputs else None,
                         location=gnss, microphone=microphone, board=board,
                         # the simulated wall clock is checked against the simulated GNSS time only
                         clock_status=ClockSync(gnss.tracker if gnss is not None else None, flag=None,
                                                kernel_state=None))


#: Where the simulated receiver is: a walk across a (fictional) outdoor range.
DEFAULT_ROUTE = ((0.0, 52.2053, 0.1218, 12.0), (60.0, 52.2058, 0.1226, 12.5), (600.0, 52.2071, 0.1250, 13.0))


def shifted_route(start_at: tuple[float, float] | None) -> tuple[tuple[float, float, float, float], ...]:
    """DEFAULT_ROUTE moved so that it starts at ``start_at`` (lat, lon); several simulated cameras
    at chosen places (``bodycam-sim run --gnss-at``)."""
    if start_at is None:
        return DEFAULT_ROUTE
    dlat, dlon = start_at[0] - DEFAULT_ROUTE[0][1], start_at[1] - DEFAULT_ROUTE[0][2]
    return tuple((t, lat + dlat, lon + dlon, alt) for t, lat, lon, alt in DEFAULT_ROUTE)


class _SimGnss:
    """A GNSS receiver on a real pseudo-terminal, read by the firmware's own LocationTracker.

    Epochs (1 Hz) are written as the clip's clock passes them; after each, the simulator
    waits (briefly, real time) until the reader thread has taken it in, so fast runs stay
    deterministic.
    """

    def __init__(self, clock: VirtualClock, start_at: tuple[float, float] | None = None) -> None:
        from bodycam.device.hw.config import GnssConfig
        from bodycam.device.hw.gnss import LocationTracker
        from bodycam.hw_sim.gnss_sim import GnssSimulator, PtyPort, Route, Waypoint

        self.clock = clock
        self.port = PtyPort()
        self.sim = GnssSimulator(self.port, Route([Waypoint(*w) for w in shifted_route(start_at)]), clock.wall_ns())
        self.cfg = GnssConfig(device=self.port.device, read_timeout_s=0.05)
        self.tracker = LocationTracker(self.cfg, clock)
        self._next_s = 0.0

    def start(self) -> None:
        self.tracker.start()
        if not self.tracker.wait_connected(5.0):
            raise BrokerError(f"simulated GNSS: the reader did not open {self.port.device}")

    def close(self) -> None:
        self.tracker.stop()
        self.port.close()

    def advance(self, t_ns: int) -> None:
        while t_ns / 1e9 >= self._next_s:
            # wait for the sentences, not for their use: a fix the reader refuses is taken in all the same
            before = self.tracker.stats().sentences
            self.sim.write_epoch(self._next_s)
            self._next_s += 1.0
            deadline = time.monotonic() + 0.5
            while self.tracker.stats().sentences < before + 3 and time.monotonic() < deadline:
                time.sleep(0.0005)

    def location(self) -> Location | None:
        return GnssLocation(self.tracker, self.cfg.max_fix_age_s).location()


__all__ = ["DEFAULT_EPOCH", "BodycamError", "SimOptions", "SimReport", "run_clip"]
