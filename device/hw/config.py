"""Configuration sections of the hardware adapters (GPIO, GNSS, telemetry, camera).

Frozen dataclasses loaded strictly with :func:`bodycam.device.settings.load_section`,
e.g. ``load_section(GpioConfig, cfg.get("gpio"), "gpio")``. Pins are BCM numbers;
``None`` means "not fitted". Range checks raise :class:`ConfigError` naming the key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from bodycam.device.settings import require

_BCM_PINS = range(0, 28)


def _check_pin(where: str, pin: int | None) -> None:
    require(pin is None or pin in _BCM_PINS, where, f"BCM pin must be 0..27 or null, got {pin}")


def _check_positive(where: str, value: float, most: float) -> None:
    """``0 < value <= most``: timings reach waits and timeouts (``Event.wait``, pyserial), which raise
    OverflowError far below float's range (``threading.TIMEOUT_MAX``, a C ``time_t``) and kill the thread."""
    require(math.isfinite(value) and 0 < value <= most, where, f"must be more than 0 and at most {most:g}, got {value}")


@dataclass(frozen=True)
class GpioConfig:
    """Buttons, holster sensor, status LED and haptic motor (BCM pin numbers)."""

    # false: no GPIO at all (a board without buttons, or a bench test off a Pi)
    enabled: bool = True
    record_pin: int | None = 17
    marker_pin: int | None = 27
    holster_pin: int | None = 22
    led_pin: int | None = 23
    haptic_pin: int | None = 24
    # Buttons close to ground with the internal pull-up: pressed reads low.
    buttons_active_low: bool = True
    # Level of the holster sensor while the weapon is holstered (reed switch to ground: "low").
    holster_holstered_level: Literal["low", "high"] = "low"
    led_active_high: bool = True
    haptic_active_high: bool = True
    debounce_ms: float = 30.0
    # Holding the marker button this long is the dismiss gesture (a shorter press is a manual marker).
    dismiss_hold_s: float = 1.5

    def __post_init__(self) -> None:
        pins = {
            "record_pin": self.record_pin,
            "marker_pin": self.marker_pin,
            "holster_pin": self.holster_pin,
            "led_pin": self.led_pin,
            "haptic_pin": self.haptic_pin,
        }
        for name, pin in pins.items():
            _check_pin(f"gpio.{name}", pin)
        used = [p for p in pins.values() if p is not None]
        require(len(used) == len(set(used)), "gpio", f"two functions share a pin: {pins}")
        require(
            math.isfinite(self.debounce_ms) and 1.0 <= self.debounce_ms <= 500.0,
            "gpio.debounce_ms",
            f"must be 1..500 ms, got {self.debounce_ms}",
        )
        require(
            math.isfinite(self.dismiss_hold_s) and 0.5 <= self.dismiss_hold_s <= 10.0,
            "gpio.dismiss_hold_s",
            f"must be 0.5..10 s (a deliberate hold, longer than any tap), got {self.dismiss_hold_s}",
        )


@dataclass(frozen=True)
class GnssConfig:
    """GNSS receiver on a UART speaking NMEA 0183."""

    enabled: bool = True
    device: str = "/dev/serial0"
    baudrate: int = 9600
    # A fix older than this is not put into markers (location becomes null).
    max_fix_age_s: float = 10.0
    # Flag the system clock when it differs from GNSS UTC by more than this.
    clock_tolerance_s: float = 2.0
    read_timeout_s: float = 0.2
    reopen_interval_s: float = 2.0
    max_line_bytes: int = 256

    def __post_init__(self) -> None:
        require(bool(self.device), "gnss.device", "must not be empty")
        require(
            self.baudrate in (4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800),
            "gnss.baudrate",
            f"unsupported baud rate {self.baudrate}",
        )
        _check_positive("gnss.max_fix_age_s", self.max_fix_age_s, 3600)  # an older fix is no location
        _check_positive("gnss.clock_tolerance_s", self.clock_tolerance_s, 86400)
        _check_positive("gnss.read_timeout_s", self.read_timeout_s, 5)  # also how long stopping the reader takes
        _check_positive("gnss.reopen_interval_s", self.reopen_interval_s, 3600)
        require(83 <= self.max_line_bytes <= 4096, "gnss.max_line_bytes", "must be 83..4096")


@dataclass(frozen=True)
class TelemetrySourcesConfig:
    """Where the board exposes temperature, throttling, storage and battery."""

    thermal_glob: str = "/sys/class/thermal/thermal_zone*/temp"
    throttled_path: str = "/sys/devices/platform/soc/soc:firmware/get_throttled"
    # Fallback when throttled_path is absent; "" disables it.
    vcgencmd: str = "vcgencmd"
    power_supply_root: str = "/sys/class/power_supply"
    # Name of the fuel gauge under power_supply_root (e.g. "battery"); "" = no gauge fitted.
    battery: str = ""

    def __post_init__(self) -> None:
        require("/" not in self.battery, "telemetry_sources.battery", "is a power_supply name, not a path")


@dataclass(frozen=True)
class CameraConfig:
    """picamera2 streams, encoder and pre-event buffer."""

    main_size: tuple[int, int] = (1920, 1080)
    # The model input size (width, height). None (the default): the model's input size from its
    # sidecar, which is what the detector needs; a different size here is overridden (with a warning).
    # The lores stream itself is the nearest size the ISP can produce; frames are cut to this size.
    lores_size: tuple[int, int] | None = None
    # "YUV420" works on every Pi; Pi 5 can deliver "RGB888"/"BGR888" directly.
    lores_format: Literal["YUV420", "RGB888", "BGR888", "XRGB8888", "XBGR8888"] = "YUV420"
    framerate: float = 30.0
    bitrate: int = 8_000_000
    # Keyframe period in frames: the pre-event buffer starts at a keyframe, and a fragment of the
    # crash-safe MP4 is written per keyframe, so keep it short.
    iperiod: int = 30
    # Removed: the pre-event buffer is `recording.pre_event_s` on every path. Setting it is an error.
    buffer_s: float | None = None
    camera_index: int = 0
    hflip: bool = False
    vflip: bool = False

    def __post_init__(self) -> None:
        sizes = [("main_size", self.main_size)]
        if self.lores_size is not None:
            sizes.append(("lores_size", self.lores_size))
        for name, (w, h) in sizes:
            require(16 <= w <= 4608 and 16 <= h <= 3456, f"camera.{name}", f"out of range: {w}x{h}")
            require(w % 2 == 0 and h % 2 == 0, f"camera.{name}", f"must be even: {w}x{h}")
        require(
            self.lores_size is None
            or (self.lores_size[0] <= self.main_size[0] and self.lores_size[1] <= self.main_size[1]),
            "camera.lores_size",
            "must not be larger than main_size",
        )
        require(
            math.isfinite(self.framerate) and 1.0 <= self.framerate <= 120.0, "camera.framerate", "must be 1..120"
        )
        require(100_000 <= self.bitrate <= 50_000_000, "camera.bitrate", "must be 100k..50M bit/s")
        require(1 <= self.iperiod <= 600, "camera.iperiod", "must be 1..600 frames")
        require(self.buffer_s is None, "camera.buffer_s",
                "was removed: set recording.pre_event_s instead (the one setting for the pre-event buffer)")
        require(self.camera_index >= 0, "camera.camera_index", "must be >= 0")


@dataclass(frozen=True)
class HardwareConfig:
    """All hardware sections together (each also loads on its own)."""

    gpio: GpioConfig = field(default_factory=GpioConfig)
    gnss: GnssConfig = field(default_factory=GnssConfig)
    telemetry_sources: TelemetrySourcesConfig = field(default_factory=TelemetrySourcesConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
