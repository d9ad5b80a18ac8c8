"""The pre-event buffer: the last N seconds of encoded footage, starting at a keyframe.

Like picamera2's ``CircularOutput2``, it holds encoded packets (video and audio)
by *duration*: it always keeps the newest keyframe that is at least
``duration_s`` old and everything after it, so a recording that takes the buffer
starts with a decodable keyframe and covers at least the configured time
before the trigger.
"""

from __future__ import annotations

import collections

from bodycam.device.hw.frames import EncodedPacket


class PreEventBuffer:
    def __init__(self, duration_s: float, max_bytes: int = 256 * 1024 * 1024) -> None:
        self.duration_ns = int(duration_s * 1e9)
        self.max_bytes = max_bytes
        self.overflows = 0
        self._packets: collections.deque[EncodedPacket] = collections.deque()
        self._bytes = 0

    def push(self, packet: EncodedPacket) -> None:
        self._packets.append(packet)
        self._bytes += packet.size
        if packet.stream == "video":
            self._trim(packet.t_ns)

    def _trim(self, newest_ns: int) -> None:
        # the newest keyframe at or before the cutoff: everything before it goes (the scan stops
        # at the cutoff, so it touches only the old end of the buffer on this per-frame path)
        cutoff = newest_ns - self.duration_ns
        start_idx = 0
        for i, p in enumerate(self._packets):
            if p.t_ns > cutoff:
                break
            if p.stream == "video" and p.keyframe:
                start_idx = i
        for _ in range(start_idx):
            self._bytes -= self._packets.popleft().size
        # bound memory even when no keyframe is old enough (an encoder that stopped sending
        # them): drop the oldest packets; drain() still starts at a keyframe
        while self._bytes > self.max_bytes and len(self._packets) > 1:
            self._bytes -= self._packets.popleft().size
            self.overflows += 1

    def drain(self) -> list[EncodedPacket]:
        """Everything buffered, oldest first, starting at a video keyframe; empties the buffer."""
        packets = list(self._packets)
        while packets and not (packets[0].stream == "video" and packets[0].keyframe):
            packets.pop(0)
        self.clear()
        return packets

    def clear(self) -> None:
        self._packets.clear()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._packets)
