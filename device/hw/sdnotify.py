"""sd_notify(3) without libsystemd: one datagram to ``$NOTIFY_SOCKET``.

Supports filesystem sockets and abstract-namespace sockets (``@name``). Without
``NOTIFY_SOCKET`` (not started by systemd, or simulator runs) every call is a
no-op that returns False. Send failures are logged once and counted, never raised:
the camera must keep recording even if the service manager went away.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


def _address(value: str) -> str | bytes:
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    return value


class Notifier:
    """Sends ``KEY=VALUE`` lines to the service manager."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.socket_path = env.get("NOTIFY_SOCKET") or None
        if self.socket_path is not None and not (
            self.socket_path.startswith("/") or self.socket_path.startswith("@")
        ):
            log.warning("NOTIFY_SOCKET=%r is not a unix socket path: notifications disabled", self.socket_path)
            self.socket_path = None
        self._sock: socket.socket | None = None
        self.errors = 0
        self.sent = 0

    @property
    def enabled(self) -> bool:
        return self.socket_path is not None

    def notify(self, **fields: str | int) -> bool:
        """Send e.g. ``notify(READY=1, STATUS="buffering")``; True when delivered."""
        if self.socket_path is None:
            return False
        for key, value in fields.items():
            if "\n" in str(value):
                raise ValueError(f"sd_notify {key}: value must be one line")
        payload = "\n".join(f"{k}={v}" for k, v in fields.items()).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(payload, _address(self.socket_path))
        except OSError as exc:
            self.errors += 1
            if self.errors == 1:
                log.warning("sd_notify to %s failed: %s", self.socket_path, exc)
            return False
        self.sent += 1
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.notify(READY=1, **({"STATUS": status} if status else {}))

    def status(self, text: str) -> bool:
        return self.notify(STATUS=text)

    def stopping(self, status: str | None = None) -> bool:
        return self.notify(STOPPING=1, **({"STATUS": status} if status else {}))

    def watchdog(self) -> bool:
        return self.notify(WATCHDOG=1)

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for more start/stop time (e.g. while the model loads)."""
        return self.notify(EXTEND_TIMEOUT_USEC=int(seconds * 1_000_000))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> Notifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
