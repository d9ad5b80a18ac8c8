"""An operator starts recording on a camera from the dashboard (``POST /devices/{device}/record``).

Any logged-in user (operator and up) may: starting a recording only adds evidence, and every request
is audited. The button is on the fleet page (a device chooser) and on a marker's page (that
marker's camera). The command is the peer activation's own ``cmd/record`` (QoS 1, MQTT 5 expiry,
``reason = "base:<user>"``), published by ``serve`` on its own short connection to the broker
(``serve --broker``) and confirmed by the broker's PUBACK before the page says it was sent; it is
logged in ``peer_commands`` and ``web_audit`` in one transaction (``record``), a failure in
``web_audit`` (``record_failed``, with the reason).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from bodycam.base import peer
from bodycam.base.web import pages
from bodycam.base.web.auth import Session
from bodycam.base.web.db import WebDb, audit
from bodycam.device.errors import BrokerError
from bodycam.device.uplink.mqtt_config import MqttConfig
from bodycam.device.uplink.validate import is_device_id


class RecordSender:
    """Publishes ``cmd/record`` for an operator and keeps the record of it."""

    def __init__(self, db: WebDb, mqtt: MqttConfig | None, *, prefix: str = "bodycam", expiry_s: int = 60) -> None:
        self.db = db
        self.mqtt = None if mqtt is None else replace(mqtt, session_expiry_s=0)  # a short, clean connection
        self.prefix = prefix
        self.expiry_s = expiry_s
        peer.ensure_tables(db.store)

    def known(self, device: str) -> str | None:
        """The device's state (``online``, ``offline``, or '' if never said), None if base does not know it."""
        rows = self.db.rows("SELECT state FROM devices WHERE device=?", (device,))
        return None if not rows else str(rows[0][0] or "")

    def send(self, device: str, user: str, client: str, now_ns: int) -> peer.Command:
        """Publish and log; BrokerError (audited as ``record_failed``) when the broker did not take it."""
        cmd = peer.record_command(self.prefix, device, f"base:{user}", now_ns, self.expiry_s)
        try:
            self._publish(cmd)
        except BrokerError as exc:
            with self.db.tx() as tx:
                audit(tx, now_ns, user, "record_failed", f"device {device}", str(exc)[:300], client)
            raise
        peer.log_commands(self.db.store, [cmd], None, user, now_ns, self.expiry_s)
        with self.db.tx() as tx:
            audit(tx, now_ns, user, "record", f"device {device}", f"cmd/record {cmd.id}", client)
        return cmd

    def _publish(self, cmd: peer.Command) -> None:
        from bodycam.device.uplink.mqtt_session import MQTT5, MqttSession, SessionError

        if self.mqtt is None:
            raise BrokerError("serve has no broker to send commands through (start it with --broker)")
        try:
            with MqttSession(self.mqtt, f"bodycam-base-web-{secrets.token_hex(6)}", MQTT5,
                             timer=time.monotonic) as s:
                mid = s.publish(cmd.topic, cmd.payload, qos=1, expiry_s=self.expiry_s)
                if not s.wait_puback(mid, self.mqtt.connect_timeout_s):
                    raise BrokerError(f"broker {self.mqtt.host}:{self.mqtt.port} did not confirm the command")
                refused = s.puback_failure(mid)
                if refused is not None:  # e.g. the broker's ACL: this identity may not command cameras
                    raise BrokerError(f"broker {self.mqtt.host}:{self.mqtt.port} refused the command: {refused}")
        except SessionError as exc:
            raise BrokerError(f"broker {self.mqtt.host}:{self.mqtt.port}: {exc}") from None


PageFn = Callable[[pages.Context, Request, Session], Awaitable[Response]]


def page(sender: RecordSender | None, client_of: Callable[[Request], str]) -> PageFn:
    """The POST handler (CSRF already checked by the guard)."""

    async def record(ctx: pages.Context, request: Request, s: Session) -> Response:
        if "device" in request.path_params:  # the marker page's button
            device = str(request.path_params["device"])
        else:  # the fleet page's chooser
            value = (await request.form()).get("device")
            device = value if isinstance(value, str) else ""
        if not is_device_id(device):
            raise HTTPException(404, "no such device")
        if sender is None:
            raise HTTPException(503, "this dashboard cannot send commands (serve was started without --broker)")
        state = await run_in_threadpool(sender.known, device)
        if state is None:
            raise HTTPException(404, "no such device")
        try:
            cmd = await run_in_threadpool(sender.send, device, s.user.name, client_of(request), ctx.now_ns())
        except BrokerError as exc:
            return ctx.render(request, "record.html", {"s": s, "device": device, "state": state, "error": str(exc),
                                                       "cmd": None}, 503)
        return ctx.render(request, "record.html", {"s": s, "device": device, "state": state, "error": "",
                                                   "cmd": cmd, "expiry_s": sender.expiry_s})

    return record
