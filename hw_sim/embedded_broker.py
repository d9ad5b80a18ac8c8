"""An in-process MQTT 3.1.1 broker (amqtt) for the simulator and tests.

::

    with EmbeddedBroker(host="127.0.0.1", port=0) as broker:
        print(broker.url)          # mqtt://127.0.0.1:<free port>

The broker runs in a background thread with its own asyncio loop; ``port=0``
picks a free port (the one the listening socket really got). Leaving the
context shuts it down and joins the thread. amqtt speaks MQTT 3.1.1 only: the
publisher's ``protocol="auto"`` falls back to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from types import TracebackType
from typing import Any

from bodycam.device.errors import BrokerError

_log = logging.getLogger(__name__)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class EmbeddedBroker:
    """amqtt broker on ``host:port`` (0 = a free port) in its own thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, start_timeout_s: float = 10.0) -> None:
        self.host = host
        self._requested_port = port
        self.port = 0
        self._timeout = start_timeout_s
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def start(self) -> EmbeddedBroker:
        if self._thread is not None:
            raise BrokerError("embedded broker already started")
        self.port = self._requested_port or _free_port(self.host)
        self._thread = threading.Thread(target=self._run, name="embedded-broker", daemon=True)
        self._thread.start()
        if not self._started.wait(self._timeout):
            raise BrokerError(f"embedded broker did not start within {self._timeout} s")
        if self._error is not None:
            self._thread.join(self._timeout)
            self._thread = None
            raise BrokerError(f"embedded broker on {self.host}:{self.port} failed to start: {self._error}")
        return self

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to start() or logged
            if not self._started.is_set():
                self._error = exc
                self._started.set()
            else:
                _log.exception("embedded broker crashed")

    async def _main(self) -> None:
        from amqtt.broker import Broker

        config: dict[str, Any] = {
            "listeners": {
                "default": {"type": "tcp", "bind": f"{self.host}:{self.port}", "max_connections": 1000}
            },
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        broker = Broker(config)
        await broker.start()
        self._started.set()
        try:
            await self._stop.wait()
        finally:
            await broker.shutdown()
            await self._close_leftovers()

    async def _close_leftovers(self) -> None:
        """Close what amqtt leaves open at shutdown (e.g. a TCP connection that never sent CONNECT)."""
        loop = asyncio.get_running_loop()
        me = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not me]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        transports = getattr(loop, "_transports", None)  # the selector loop's open transports (CPython)
        if transports is not None:
            for transport in list(transports.values()):
                if transport is not None and not transport.is_closing():
                    transport.close()
        await asyncio.sleep(0)

    def stop(self) -> None:
        """Shut the broker down and join its thread (idempotent)."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                self._loop.call_soon_threadsafe(self._stop.set)
        thread.join(self._timeout)
        if thread.is_alive():
            raise BrokerError("embedded broker did not stop in time")

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
