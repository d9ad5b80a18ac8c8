"""The one configuration tree of the firmware, validated at load.

A TOML file (see ``docs/config.example.toml``) with these tables; every key has
a default, unknown keys are rejected with their dotted name, values are
type- and range-checked. Loading does I/O (reading the file); building the
dataclasses does none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bodycam.device.detect.detector import DetectorConfig
from bodycam.device.detect.events import EventConfig
from bodycam.device.detect.fusion import FusionConfig
from bodycam.device.errors import ConfigError
from bodycam.device.footage.atrest import AtRestConfig
from bodycam.device.footage.recording_state import RecordingConfig
from bodycam.device.footage.retention import RetentionConfig
from bodycam.device.hw.config import CameraConfig, GnssConfig, GpioConfig, TelemetrySourcesConfig
from bodycam.device.hw.microphone import MicrophoneConfig
from bodycam.device.identity import IdentityConfig
from bodycam.device.model_select import ModelsConfig
from bodycam.device.safe_load import load_toml
from bodycam.device.settings import ConfigErrors, load_section, problems_of, require
from bodycam.device.uplink.mqtt_config import MqttConfig
from bodycam.device.uplink.offload import OffloadConfig
from bodycam.device.uplink.outbox import OutboxConfig
from bodycam.device.uplink.validate import DEVICE_ID_RULE, is_device_id

MAX_CONFIG_BYTES = 1024 * 1024


@dataclass(frozen=True)
class DeviceSection:
    id: str = "bodycam-01"
    data_dir: str = "/var/lib/bodycam"
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        # the same rule as the markers, the outbox and the MQTT topics (one function)
        require(is_device_id(self.id), "device.id", f"{self.id!r} must be {DEVICE_ID_RULE}")
        require(self.log_level in ("DEBUG", "INFO", "WARNING", "ERROR"), "device.log_level",
                f"{self.log_level!r} is not DEBUG, INFO, WARNING or ERROR")


@dataclass(frozen=True)
class AppConfig:
    device: DeviceSection = field(default_factory=DeviceSection)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    events: EventConfig = field(default_factory=EventConfig)
    recording: RecordingConfig = field(default_factory=RecordingConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    outbox: OutboxConfig = field(default_factory=OutboxConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    gpio: GpioConfig = field(default_factory=GpioConfig)
    gnss: GnssConfig = field(default_factory=GnssConfig)
    telemetry_sources: TelemetrySourcesConfig = field(default_factory=TelemetrySourcesConfig)
    microphone: MicrophoneConfig = field(default_factory=MicrophoneConfig)
    identity: IdentityConfig = field(default_factory=IdentityConfig)
    atrest: AtRestConfig = field(default_factory=AtRestConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    offload: OffloadConfig = field(default_factory=OffloadConfig)

    def __post_init__(self) -> None:
        g = self.gpio
        pins = (g.record_pin, g.marker_pin, g.holster_pin, g.led_pin, g.haptic_pin)
        require(self.offload.dock != "gpio" or self.offload.dock_pin not in pins, "offload.dock_pin",
                f"GPIO{self.offload.dock_pin} is already used in [gpio]")

    @property
    def data_dir(self) -> Path:
        return Path(self.device.data_dir)


def config_from_dict(data: dict[str, Any]) -> AppConfig:
    return load_section(AppConfig, data, "")


def load_config(path: str | Path) -> AppConfig:
    """Read and validate a TOML config file; errors name the file and the key."""
    p = Path(path)
    data = load_toml(p, "config file", max_bytes=MAX_CONFIG_BYTES)  # regular file, size, UTF-8, depth, numbers
    try:
        return config_from_dict(data)
    except ConfigError as exc:  # every problem, each with its dotted key
        raise ConfigErrors(problems_of(exc), source=str(p)) from exc
