"""A serial port as a stream of byte chunks (pyserial underneath).

:class:`ByteStream` is what readers such as the GNSS tracker consume: ``read_chunk()``
blocks at most the port's timeout and returns whatever arrived (``b""`` on silence).
:func:`open_serial` opens a real UART or a pseudo-terminal with clear errors.
"""

from __future__ import annotations

import errno
import os
from typing import Any, Protocol

from bodycam.device.errors import DependencyError, HardwareError


class ByteStream(Protocol):
    def read_chunk(self) -> bytes:
        """Bytes that arrived, waiting at most the stream's timeout; ``b""`` if none."""
        ...

    def close(self) -> None: ...


class SerialByteStream:
    """A pyserial ``Serial`` read in chunks (one byte blocking, then whatever is buffered)."""

    def __init__(self, port: Any) -> None:
        self._port = port

    def read_chunk(self) -> bytes:
        import serial

        try:
            first = bytes(self._port.read(1))
            if not first:
                return b""
            waiting = int(self._port.in_waiting)
            return first + (bytes(self._port.read(waiting)) if waiting else b"")
        except (serial.SerialException, OSError) as exc:
            raise HardwareError(f"serial port {self._port.port}: read failed: {exc}") from exc

    def close(self) -> None:
        self._port.close()


def open_serial(device: str, baudrate: int, timeout_s: float) -> SerialByteStream:
    """Open ``device`` 8N1 without flow control; HardwareError with a hint if that fails."""
    try:
        import serial
    except ImportError as exc:  # pragma: no cover - pyserial is a dependency
        raise DependencyError("pyserial is not installed: pip install pyserial") from exc
    if not os.path.exists(device):
        raise HardwareError(
            f"serial device {device} does not exist (GNSS not connected, UART not enabled "
            "with enable_uart=1, or wrong gnss.device)"
        )
    try:
        port = serial.Serial(
            device,
            baudrate=baudrate,
            bytesize=serial.EIGHTBITS,
            parity=serial.PARITY_NONE,
            stopbits=serial.STOPBITS_ONE,
            timeout=timeout_s,
            exclusive=True,
        )
    except serial.SerialException as exc:
        hint = ""
        if isinstance(exc.errno, int) and exc.errno in (errno.EACCES, errno.EPERM):
            hint = " (permission denied: add the user to group 'dialout')"
        elif isinstance(exc.errno, int) and exc.errno == errno.EBUSY:
            hint = " (busy: a serial console or gpsd holds it)"
        raise HardwareError(f"cannot open serial device {device}: {exc}{hint}") from exc
    return SerialByteStream(port)
