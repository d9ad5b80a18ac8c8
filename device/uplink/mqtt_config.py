"""``[mqtt]`` configuration: loaded strictly with ``load_section(MqttConfig, data, "mqtt")``.

No I/O happens in the constructors: the password file is read by
:meth:`MqttConfig.resolve_password`, called by the publisher when it connects.
``password_file`` is a path, or a bare credential name that is looked up in
``$CREDENTIALS_DIRECTORY`` (systemd ``LoadCredential=``) when that is set.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from bodycam.device.errors import ConfigError
from bodycam.device.settings import require

_URL_RE = re.compile(
    r"^(?P<scheme>mqtts?)://(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(?::(?P<port>\d{1,5}))?/?$"
)
_PREFIX_RE = re.compile(r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")


@dataclass(frozen=True)
class TlsConfig:
    """TLS for ``mqtts://``: CA bundle (None = system store), optional client certificate and key."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    check_hostname: bool = True

    def __post_init__(self) -> None:
        require(
            (self.cert_file is None) == (self.key_file is None),
            "mqtt.tls",
            "cert_file and key_file go together",
        )


@dataclass(frozen=True)
class MqttConfig:
    enabled: bool = True
    url: str = "mqtt://127.0.0.1:1883"
    topic_prefix: str = "bodycam"
    keepalive: int = 30
    tls: TlsConfig = field(default_factory=TlsConfig)
    username: str | None = None
    password: str | None = None
    password_file: str | None = None
    protocol: Literal["auto", "5", "3.1.1"] = "auto"
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0
    reconnect_jitter: float = 0.3
    telemetry_interval_s: float = 10.0
    telemetry_expiry_s: int = 60
    session_expiry_s: int = 3600
    max_inflight: int = 20
    connect_timeout_s: float = 10.0
    ack_timeout_s: float = 120.0  # a marker sent but not confirmed by base's ack this long is sent again
    resend_alarm_after: int = 3  # delivery alarm once a marker was resent this often without confirmation

    def __post_init__(self) -> None:
        m = _URL_RE.match(self.url)
        require(m is not None, "mqtt.url", f"{self.url!r} is not mqtt://host[:port] or mqtts://host[:port]")
        assert m is not None
        port = int(m["port"]) if m["port"] else (8883 if m["scheme"] == "mqtts" else 1883)
        require(1 <= port <= 65535, "mqtt.url", f"port {port} is out of range")
        require(
            bool(_PREFIX_RE.match(self.topic_prefix)),
            "mqtt.topic_prefix",
            f"{self.topic_prefix!r} is not a valid prefix",
        )
        require(5 <= self.keepalive <= 3600, "mqtt.keepalive", "must be 5..3600 s")
        require(
            not (self.password is not None and self.password_file is not None),
            "mqtt",
            "set password or password_file, not both",
        )
        require(
            self.username is not None or (self.password is None and self.password_file is None),
            "mqtt",
            "a password needs a username",
        )
        require(0 < self.reconnect_min_s <= 3600, "mqtt.reconnect_min_s", "need 0 < min <= max <= 3600")
        require(self.reconnect_min_s <= self.reconnect_max_s <= 3600, "mqtt.reconnect_max_s",
                "need 0 < min <= max <= 3600")
        require(
            0 <= self.reconnect_jitter <= 1, "mqtt.reconnect_jitter", "must be 0..1 (a fraction of the delay)"
        )
        require(0 <= self.telemetry_interval_s <= 86400, "mqtt.telemetry_interval_s", "must be 0..86400 s (0 = off)")
        require(1 <= self.telemetry_expiry_s <= 86400, "mqtt.telemetry_expiry_s", "must be 1..86400 s")
        require(0 <= self.session_expiry_s <= 0xFFFFFFFF, "mqtt.session_expiry_s", "must be 0..2^32-1")
        require(1 <= self.max_inflight <= 1000, "mqtt.max_inflight", "must be 1..1000")
        require(0 < self.connect_timeout_s <= 300, "mqtt.connect_timeout_s", "must be 0..300 s")
        require(0.05 <= self.ack_timeout_s <= 86400, "mqtt.ack_timeout_s", "must be 0.05..86400 s")
        require(1 <= self.resend_alarm_after <= 1000, "mqtt.resend_alarm_after", "must be 1..1000")
        if m["scheme"] == "mqtt":
            require(
                self.tls == TlsConfig(),
                "mqtt.tls",
                "TLS settings need an mqtts:// url",
            )

    @property
    def host(self) -> str:
        m = _URL_RE.match(self.url)
        assert m is not None
        return m["host"].strip("[]")

    @property
    def port(self) -> int:
        m = _URL_RE.match(self.url)
        assert m is not None
        return int(m["port"]) if m["port"] else (8883 if m["scheme"] == "mqtts" else 1883)

    @property
    def use_tls(self) -> bool:
        return self.url.startswith("mqtts://")

    def resolve_password(self, env: Mapping[str, str] | None = None) -> str | None:
        """The password: inline, or read from ``password_file`` (systemd credentials aware)."""
        if self.password is not None or self.password_file is None:
            return self.password
        env = os.environ if env is None else env
        path = Path(self.password_file)
        creds = env.get("CREDENTIALS_DIRECTORY")
        if creds and not path.is_absolute() and len(path.parts) == 1:
            path = Path(creds) / path
        try:
            return path.read_text("utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"mqtt.password_file: cannot read {str(path)!r}: {exc}") from exc


def topic(prefix: str, device: str, leaf: str) -> str:
    """``<prefix>/<device>/<leaf>``."""
    return f"{prefix}/{device}/{leaf}"
