"""The durable outbox: order, seq/prev persistence, sent/confirmed, threads, kill -9, disk full."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from bodycam.device.clock import VirtualClock
from bodycam.device.errors import ConfigError, StorageError
from bodycam.device.uplink.markers import GENESIS_PREV, MarkerDraft
from bodycam.device.uplink.outbox import Outbox

WALL = 1_764_072_000_000_000_000


def draft(i: int) -> MarkerDraft:
    return MarkerDraft(kind="manual", t_mono_ns=i * 1_000_000, wall_ns=WALL + i * 1_000_000, extra={"i": i})


def test_record_assigns_seq_and_chain_and_survives_reopen(tmp_path: Path) -> None:
    clock = VirtualClock(wall_epoch_ns=WALL)
    path = tmp_path / "outbox.db"
    with Outbox(path, "cam-01", clock) as ob:
        a = ob.record(draft(1))
        b = ob.record(draft(2))
        assert (a.seq, b.seq) == (1, 2)
        assert a.prev == GENESIS_PREV and b.prev == a.digest()
        ob.mark_sent([a.seq, b.seq])
        assert ob.depth() == 0 and ob.unconfirmed() == 2
        assert ob.confirm(2) and ob.unconfirmed() == 0
    with Outbox(path, "cam-01", clock) as ob:  # seq and prev persist although the queue is empty
        c = ob.record(draft(3))
        assert c.seq == 3 and c.prev == b.digest()
        assert [m.id for m in ob.pending(10)] == [c.id]


def test_pending_is_oldest_first_and_after_seq_pages(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db", "cam-01", VirtualClock(), fsync="normal") as ob:
        ids = [ob.record(draft(i)).id for i in range(10)]
        assert [m.id for m in ob.pending(4)] == ids[:4]
        assert [m.seq for m in ob.pending(3, after_seq=4)] == [5, 6, 7]
        ob.mark_sent([1])
        ob.mark_sent([3, 4])
        ob.mark_sent([99])  # unknown: ignored
        assert [m.seq for m in ob.pending(100)] == [2, 5, 6, 7, 8, 9, 10]
        assert ob.depth() == 7 and ob.unconfirmed() == 10
        assert ids[0] not in {m.id for m in ob.pending(100)}


def test_outbox_refuses_another_devices_file(tmp_path: Path) -> None:
    Outbox(tmp_path / "o.db", "cam-01", VirtualClock()).close()
    with pytest.raises(ConfigError, match="belongs to device 'cam-01'"):
        Outbox(tmp_path / "o.db", "cam-02", VirtualClock())
    with pytest.raises(ConfigError):
        Outbox(tmp_path / "x.db", "bad id!", VirtualClock())


def test_unwritable_location_is_a_storage_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StorageError):
        Outbox(tmp_path / "file" / "o.db", "cam-01", VirtualClock())


def test_concurrent_record_and_ack_keep_order_and_chain(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db", "cam-01", VirtualClock(), fsync="normal") as ob:
        done = threading.Event()
        acked: list[int] = []

        def acker() -> None:
            while not done.is_set() or ob.depth():
                for m in ob.pending(5):
                    ob.mark_sent([m.seq])
                    acked.append(m.seq)

        t = threading.Thread(target=acker)
        t.start()
        made = [ob.record(draft(i)) for i in range(300)]
        done.set()
        t.join(10)
        assert not t.is_alive()
        assert acked == list(range(1, 301))
        for a, b in itertools.pairwise(made):
            assert b.prev == a.digest()


def test_disk_full_drops_telemetry_first_then_keeps_markers_in_memory_in_order(tmp_path: Path) -> None:
    clock = VirtualClock(wall_epoch_ns=WALL)
    path = tmp_path / "o.db"
    with Outbox(path, "cam-01", clock, max_bytes=64 * 1024, max_telemetry=10_000,
                keep_confirmed_s=0) as ob:
        blob = os.urandom(2000)
        while ob.put_telemetry(blob):
            pass
        assert ob.telemetry_depth() > 5
        before = ob.telemetry_dropped
        big = {"pad": "x" * 3900}  # more than a page: needs a new page
        m1 = ob.record(
            MarkerDraft(kind="manual", t_mono_ns=0, wall_ns=WALL, extra=big)
        )  # fits only without telemetry
        assert ob.telemetry_depth() == 0 and ob.telemetry_dropped > before
        assert ob.journal_error is None
        recorded = [m1]
        while ob.journal_error is None:
            recorded.append(ob.record(MarkerDraft(kind="manual", t_mono_ns=1, wall_ns=WALL, extra=big)))
            assert len(recorded) < 1000
        on_disk = len(recorded) - 1
        for i in range(3):  # full: still recorded, chained, handed out for publishing, in order
            recorded.append(ob.record(MarkerDraft(kind="manual", t_mono_ns=i, wall_ns=WALL, extra=big)))
        assert "not written" in (ob.journal_error or "")
        assert ob.in_memory == 4 and ob.last_seq == len(recorded)
        assert [m.id for m in ob.pending(1000)] == [m.id for m in recorded]
        for x, y in itertools.pairwise(recorded):
            assert y.prev == x.digest()
        ob.mark_sent([m.seq for m in recorded[-2:]])  # PUBACKs reach markers only in memory too
        assert ob.depth() == len(recorded) - 2
        assert ob.flush() == 4  # still full
        # room again (base confirmed the old ones, the retention window is 0): all of it is written
        assert ob.confirm(on_disk)
        assert ob.prune() == on_disk
        assert ob.flush() == 0 and ob.journal_error is None and ob.in_memory == 0
        nxt = ob.record(draft(2))
        assert nxt.seq == len(recorded) + 1 and nxt.prev == recorded[-1].digest()
    with Outbox(path, "cam-01", clock) as ob:  # what was in memory is on disk now, with its state
        assert [m.id for m in ob.pending(100)] == [m.id for m in recorded[on_disk:-2]] + [nxt.id]
        assert [h.marker.id for h in ob.unconfirmed_sent(100)] == [m.id for m in recorded[-2:]]


def test_restart_on_a_full_card_continues_the_chain_after_markers_only_in_memory(tmp_path: Path) -> None:
    clock = VirtualClock(wall_epoch_ns=WALL)
    path = tmp_path / "o.db"
    big = {"pad": "x" * 3900}
    with Outbox(path, "cam-01", clock, max_bytes=48 * 1024) as ob:
        made = []
        while ob.in_memory < 2:
            made.append(ob.record(MarkerDraft(kind="manual", t_mono_ns=1, wall_ns=WALL, extra=big)))
    # the process ended with two markers never journaled (they were published): no seq is reused
    with Outbox(path, "cam-01", clock, max_bytes=48 * 1024) as ob:
        assert ob.last_seq == made[-1].seq
        nxt = ob.record(draft(1))
        assert nxt.seq == made[-1].seq + 1 and nxt.prev == made[-1].digest()


def test_confirmation_is_monotonic_and_confirmed_markers_are_kept_for_the_window(tmp_path: Path) -> None:
    clock = VirtualClock(wall_epoch_ns=WALL)
    with Outbox(tmp_path / "o.db", "cam-01", clock, keep_confirmed_s=60) as ob:
        ms = [ob.record(draft(i)) for i in range(6)]
        ob.mark_sent([1, 2, 3, 4, 5])
        assert ob.confirm(3) and ob.acked_seq == 3
        assert not ob.confirm(2) and ob.acked_seq == 3  # lower: base restored from a backup
        assert ob.unconfirmed() == 3
        assert [h.marker.seq for h in ob.unconfirmed_sent(10)] == [4, 5]
        assert [m.seq for m in ob.pending(10)] == [6]
        assert [m.id for m in ob.held(2, 5, 10)] == [m.id for m in ms[1:5]]  # confirmed ones too
        clock.advance_ns(59 * 10**9)
        assert ob.prune() == 0
        clock.advance_ns(2 * 10**9)
        assert ob.prune() == 3
        assert [m.seq for m in ob.held(0, 100, 100)] == [4, 5, 6]
    with Outbox(tmp_path / "o.db", "cam-01", clock) as ob:
        assert ob.acked_seq == 3


def test_an_ack_beyond_the_last_marker_is_refused(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db", "cam-01", VirtualClock(wall_epoch_ns=WALL)) as ob:
        for i in range(3):
            ob.record(draft(i))
        assert not ob.confirm(4) and ob.acked_seq == 0 and ob.unconfirmed() == 3
        assert ob.confirm(3) and ob.acked_seq == 3


def test_a_state_row_behind_the_journaled_markers_never_reuses_a_seq(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A restored or edited outbox whose ``state`` says less than its markers: the chain goes on after
    the newest journaled marker (a reused seq would fork the chain and fail to journal)."""
    import sqlite3

    path = tmp_path / "o.db"
    with Outbox(path, "cam-01", VirtualClock(wall_epoch_ns=WALL)) as ob:
        ms = [ob.record(draft(i)) for i in range(4)]
    with sqlite3.connect(path) as db:
        db.execute("UPDATE state SET seq=1, prev=?", (ms[0].digest(),))
    with Outbox(path, "cam-01", VirtualClock(wall_epoch_ns=WALL)) as ob:
        m = ob.record(draft(9))
        assert (m.seq, m.prev) == (5, ms[3].digest())
        assert ob.journal_error is None
        assert [x.seq for x in ob.pending(10)] == [1, 2, 3, 4, 5]
    assert any("state says seq 1 but markers are journaled up to seq 4" in r.getMessage() for r in caplog.records)


def test_a_corrupt_outbox_file_is_a_clear_error_and_keeps_the_space_reserve(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StorageError, match="not a database"):
        Outbox(path, "cam-01", VirtualClock(), reserve_bytes=2 << 20)
    assert (tmp_path / "o.db.reserve").stat().st_size == 2 << 20  # only a full card spends it


def test_confirmed_markers_are_bounded_by_size_oldest_first(tmp_path: Path) -> None:
    clock = VirtualClock(wall_epoch_ns=WALL)
    with Outbox(tmp_path / "o.db", "cam-01", clock, keep_confirmed_bytes=3000) as ob:
        ms = [ob.record(MarkerDraft(kind="manual", t_mono_ns=i, wall_ns=WALL, extra={"pad": "x" * 900}))
              for i in range(8)]
        assert ob.confirm(6)
        assert ob.prune() >= 3
        kept = [m.seq for m in ob.held(0, 100, 100)]
        assert kept[-2:] == [7, 8] and 1 not in kept  # unconfirmed are never pruned
        assert len(ms) == 8


_WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from bodycam.device.clock import SystemClock
    from bodycam.device.uplink.markers import MarkerDraft
    from bodycam.device.uplink.outbox import Outbox
    ob = Outbox(Path(sys.argv[1]), "cam-01", SystemClock())
    i = 0
    while True:
        m = ob.record(MarkerDraft(kind="manual", t_mono_ns=i, wall_ns=1_764_072_000_000_000_000 + i))
        print(m.seq, flush=True)   # reported only after the commit returned
        i += 1
    """
)


@pytest.mark.integration
def test_kill_9_loses_no_committed_marker(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    seen = 0
    deadline = time.monotonic() + 20
    while seen < 200 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line:
            seen = int(line)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    assert seen >= 200
    with Outbox(path, "cam-01", VirtualClock()) as ob:
        ms = ob.pending(100_000)
        assert ms[0].seq == 1 and ms[-1].seq >= seen  # every reported commit is there
        assert [m.seq for m in ms] == list(range(1, len(ms) + 1))
        for a, b in itertools.pairwise(ms):
            assert b.prev == a.digest()
        assert ob.record(draft(0)).seq == len(ms) + 1


def test_sent_rows_are_the_unconfirmed_sent_ones_unparsed(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db", "cam-01", VirtualClock(wall_epoch_ns=WALL)) as ob:
        ms = [ob.record(draft(i)) for i in range(5)]
        ob.mark_sent([1, 2, 3, 4])
        ob.mark_sent([4])
        assert ob.confirm(1) and ob.last_sent_seq() == 4
        assert ob.sent_rows(10) == [(2, 1, ms[1].to_json()), (3, 1, ms[2].to_json()), (4, 2, ms[3].to_json())]
        assert [(h.marker.seq, h.sends) for h in ob.unconfirmed_sent(10)] == [(2, 1), (3, 1), (4, 2)]


def test_an_unreadable_newest_marker_with_a_state_behind_it_does_not_stop_the_camera(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "o.db"
    with Outbox(path, "cam-01", VirtualClock(wall_epoch_ns=WALL)) as ob:
        ms = [ob.record(draft(i)) for i in range(3)]
    with sqlite3.connect(path) as db:
        db.execute("UPDATE state SET seq=1, prev=?", (ms[0].digest(),))
        db.execute("UPDATE markers SET body=? WHERE seq=3", (b"{not json",))
    with Outbox(path, "cam-01", VirtualClock(wall_epoch_ns=WALL)) as ob:
        m = ob.record(draft(9))
        assert m.seq == 4 and m.prev != ms[2].digest()  # goes on, unlinked (base reports the break)
        # and delivery goes on: the unreadable row is skipped, the markers after it are handed out
        assert [x.seq for x in ob.unsent(1)] == [1]
        assert [x.seq for x in ob.unsent(10)] == [1, 2, 4]
        ob.mark_sent([1, 2, 4])
        assert [h.marker.seq for h in ob.unconfirmed_sent(10)] == [1, 2, 4]
        assert [x.seq for x in ob.held(1, 10, 10)] == [1, 2, 4]
        assert ob.depth() == 0
    with Outbox(path, "cam-01", VirtualClock(wall_epoch_ns=WALL)) as ob:  # and after a restart
        assert [h.marker.seq for h in ob.unconfirmed_sent(2)] == [1, 2]
        assert ob.unsent(10) == []
