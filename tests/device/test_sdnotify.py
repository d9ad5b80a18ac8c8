"""sd_notify and the watchdog: unit tests with the injected clock, and a real process
talking to a real AF_UNIX datagram socket the way systemd's notify socket works."""

from __future__ import annotations

import itertools
import os
import socket
import struct
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bodycam.device.clock import VirtualClock
from bodycam.device.hw.sdnotify import Notifier
from bodycam.device.hw.watchdog import Watchdog


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    try:
        yield sock, str(path)
    finally:
        sock.close()


def recv(sock: socket.socket, timeout_s: float) -> tuple[str, int] | None:
    """One datagram and the sender's PID (SCM_CREDENTIALS), or None on timeout."""
    sock.settimeout(timeout_s)
    try:
        data, anc, _flags, _addr = sock.recvmsg(4096, socket.CMSG_SPACE(12))
    except TimeoutError:
        return None
    pid = -1
    for level, kind, payload in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            pid = struct.unpack("iII", payload[:12])[0]
    return data.decode(), pid


def test_notifier_sends_datagrams(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    with Notifier({"NOTIFY_SOCKET": path}) as n:
        assert n.ready("buffering") and n.status("recording") and n.watchdog()
        assert n.extend_timeout(30)
        with pytest.raises(ValueError, match="one line"):
            n.status("a\nb")
    got = [recv(sock, 1.0) for _ in range(4)]
    assert [g[0] for g in got if g] == [
        "READY=1\nSTATUS=buffering", "STATUS=recording", "WATCHDOG=1", "EXTEND_TIMEOUT_USEC=30000000"
    ]
    assert all(g and g[1] == os.getpid() for g in got)


def test_abstract_namespace_socket() -> None:
    name = f"bodycam-test-{os.getpid()}-{time.monotonic_ns()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    try:
        with Notifier({"NOTIFY_SOCKET": "@" + name}) as n:
            assert n.ready()
        got = recv(sock, 1.0)
    finally:
        sock.close()
    assert got is not None and got[0] == "READY=1"


def test_without_notify_socket_everything_is_a_no_op(tmp_path: Path) -> None:
    n = Notifier({})
    assert not n.enabled and not n.ready() and n.sent == 0
    wd = Watchdog(VirtualClock(), environ={"WATCHDOG_USEC": "1000000"})
    wd.ready()
    wd.kick()
    assert not wd.enabled and wd.pings == 0
    gone = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    assert gone.ready() is False and gone.errors == 1  # counted, not raised
    gone.close()
    assert not Notifier({"NOTIFY_SOCKET": "relative/path"}).enabled


def test_watchdog_pings_at_half_interval_on_kicks(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    clock = VirtualClock()
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "10000000"}
    wd = Watchdog(clock, environ=env)
    try:
        assert wd.enabled and wd.interval_ns == 5_000_000_000
        wd.ready("buffering")
        for _ in range(21 * 30):  # 21 s of frames at 30 fps: pings at ~5.03, 10.07, 15.1, 20.13 s
            clock.advance_ns(33_333_333)
            wd.kick()
        assert wd.pings == 1 + 4
        clock.advance_ns(60 * 10**9)  # the loop stalled for a minute: no kicks, no pings
        assert wd.pings == 5
    finally:
        wd.close()
    msgs = []
    while (m := recv(sock, 0.2)) is not None:
        msgs.append(m[0])
    assert msgs == ["READY=1\nSTATUS=buffering"] + ["WATCHDOG=1"] * 5


def test_watchdog_pid_of_another_process_disables_it(notify_socket: tuple[socket.socket, str]) -> None:
    _sock, path = notify_socket
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    assert not Watchdog(VirtualClock(), environ=env).enabled
    env["WATCHDOG_PID"] = str(os.getpid())
    wd = Watchdog(VirtualClock(), environ=env)
    assert wd.enabled
    wd.close()


CHILD = textwrap.dedent(
    """
    import sys, time
    from bodycam.device.clock import SystemClock
    from bodycam.device.hw.watchdog import Watchdog

    wd = Watchdog(SystemClock())
    wd.ready("buffering")
    end = time.monotonic() + float(sys.argv[1])
    while time.monotonic() < end:      # the healthy loop: one kick per frame
        time.sleep(0.01)
        wd.kick()
    wd.status("stalled")
    time.sleep(float(sys.argv[2]))     # the stalled loop: no kicks
    wd.close()
    """
)


def test_real_process_pings_while_looping_and_stops_when_stalled(
    notify_socket: tuple[socket.socket, str],
) -> None:
    sock, path = notify_socket
    # WatchdogSec=1s: pings every 0.5 s; 5 s of looping. (A 0.2 s watchdog left 0.1 s of margin
    # for the scheduler, which a loaded 2-core machine sometimes took.)
    env = dict(os.environ, NOTIFY_SOCKET=path, WATCHDOG_USEC="1000000")
    env.pop("WATCHDOG_PID", None)
    proc = subprocess.Popen([sys.executable, "-c", CHILD, "5.0", "1.5"], env=env)
    try:
        msgs: list[tuple[float, str, int]] = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            m = recv(sock, 0.5)
            if m is None:
                if proc.poll() is not None:
                    break
                continue
            msgs.append((time.monotonic(), m[0], m[1]))
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    texts = [t for _, t, _ in msgs]
    assert texts[0] == "READY=1\nSTATUS=buffering"
    assert all(pid == proc.pid for _, _, pid in msgs)  # sent by the main PID, as NotifyAccess=main needs
    stall = texts.index("STATUS=stalled")
    pings = [t for t, text, _ in msgs[:stall] if text == "WATCHDOG=1"]
    assert 8 <= len(pings) <= 12  # 5 s of looping at one ping per 500 ms
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    assert max(gaps) < 1.0  # never late enough for systemd to fire
    assert texts[stall + 1 :] == []  # stalled: the pings stop
    stalled_for = time.monotonic() - msgs[stall][0]
    assert stalled_for > 1.4  # no ping for 1.5 s, three intervals of a healthy loop
