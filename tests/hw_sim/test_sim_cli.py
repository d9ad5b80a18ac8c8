"""``bodycam-sim`` as a newcomer meets it (issue 10): bad input fails before anything is created,
an unreachable broker shows the outbox at work, latency comes from every marker, progress bars
print their lines above the bar, and a reader that goes away ends a command quietly."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from _clips import make_plain_clip
from _mqtt import Mosquitto, free_port

from bodycam.device.config import AppConfig
from bodycam.device.uplink.markers import Marker
from bodycam.hw_sim.cli import main
from bodycam.hw_sim.marker_watch import marker_latencies_ms
from bodycam.hw_sim.sim_run import SimOptions, run_clip

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "range_demo.mp4"
SIM = [sys.executable, "-m", "bodycam.hw_sim.cli"]


# -- item 6: a bad clip fails before anything is created --------------------------------------------
@pytest.mark.parametrize("name", ["README.md", "nope.mp4", "docs"])
def test_a_file_that_is_no_clip_fails_in_plain_words_and_creates_nothing(
        name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    rc = main(["run", str(ROOT / name), "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 1
    assert captured.out == ""  # not even the header
    (line,) = captured.err.splitlines()
    assert line.startswith(f"bodycam-sim run: error: {ROOT / name}: ")
    assert "Errno" not in line and "1094995529" not in line
    assert not out.exists()


def test_invalid_data_is_named_in_words(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(ROOT / "README.md"), "--out", str(tmp_path / "o")]) == 1
    assert "not a readable video file (invalid data found when processing input)" in capsys.readouterr().err


def test_a_bad_scenario_fails_before_anything_is_created(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scenario = tmp_path / "s.json"
    scenario.write_text('{"events": [{"t_s": 1, "event": "reload"}]}')
    out = tmp_path / "out"
    assert main(["run", str(EXAMPLE), "--out", str(out), "--scenario", str(scenario)]) == 2
    assert "reload" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(("extra", "says"), [
    (["--watch-cert", "c.pem", "--watch-key", "k.pem"], "need --broker mqtts://"),
    (["--broker", "mqtts://127.0.0.1:1", "--watch-cert", "c.pem"], "--watch-cert and --watch-key go together"),
    (["--broker", "mqtts://127.0.0.1:1", "--watch-cert", "nope.pem", "--watch-key", "nope.key"],
     "--watch-cert nope.pem: no such file"),
])
def test_the_watcher_s_tls_options_fail_in_one_line_before_anything_is_created(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], says: str) -> None:
    out = tmp_path / "out"
    assert main(["run", str(EXAMPLE), "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1, err
    assert not out.exists()


def test_the_library_entry_point_creates_nothing_for_a_bad_clip(tmp_path: Path) -> None:
    from bodycam.device.errors import ClipError

    with pytest.raises(ClipError, match="not a readable video file"):
        run_clip(SimOptions(clip=ROOT / "README.md", out=tmp_path / "o", config=AppConfig(), broker=None))
    assert not (tmp_path / "o").exists()


# -- item 4: latency from every marker -------------------------------------------------------------
def test_latency_is_measured_for_every_marker(tmp_path: Path) -> None:
    report = run_clip(SimOptions(clip=EXAMPLE, out=tmp_path / "o", config=AppConfig()))
    assert report.undelivered == 0 and len(report.stats.markers) == 8
    assert len(report.latency_ms) == len(report.stats.markers)  # every marker, not a partial sample
    assert all(0 < ms < 15_000 for ms in report.latency_ms)
    assert {m.id for m in report.received} == {m.id for m in report.stats.markers}


def test_marker_latencies_are_taken_from_the_frame_of_the_event() -> None:
    def marker(i: int, t_ns: int) -> Marker:
        return Marker.from_dict({
            "schema": "bodycam.marker/1", "id": f"0190f2a4-0000-7000-8000-00000000000{i}", "device": "cam",
            "seq": i, "kind": "manual", "t": "2026-01-01T00:00:00.000Z", "t_mono_ns": t_ns, "media": None,
            "location": None, "model": None, "prev": "0" * 64})

    frames = [(0, 100.0), (33_000_000, 100.5), (66_000_000, 101.0)]
    a, b, c = marker(1, 0), marker(2, 40_000_000), marker(3, 66_000_000)
    arrivals = {a.id: 100.02, b.id: 101.25}  # c never arrived: no latency for it, nothing waits on it
    assert marker_latencies_ms([a, b, c], arrivals, frames) == pytest.approx([20.0, 250.0])


# -- item 7: a broker that is down when the run starts ---------------------------------------------
def test_an_unreachable_broker_queues_markers_in_the_outbox_until_it_comes_back(tmp_path: Path) -> None:
    clip = make_plain_clip(tmp_path / "plain.mp4", seconds=6, audio=False, size=(160, 96))
    scenario = tmp_path / "s.json"
    scenario.write_text(json.dumps({"events": [{"t_s": 0.3, "event": "holster_draw"},
                                               {"t_s": 0.6, "event": "marker"},
                                               {"t_s": 5.0, "event": "marker"}]}))
    port = free_port()
    broker = Mosquitto(tmp_path / "mosquitto", port=port)
    proc = subprocess.Popen([*SIM, "run", str(clip), "--out", str(tmp_path / "o"), "--realtime",
                             "--broker", f"mqtt://127.0.0.1:{port}", "--scenario", str(scenario)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert proc.stderr is not None
        warning = proc.stderr.readline()  # the run has begun and the broker is still down
        assert "warning: broker" in warning and "is not reachable" in warning and "outbox" in warning
        time.sleep(1.5)  # markers are queued meanwhile
        broker.start()
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        broker.stop()
    assert proc.returncode == 0, err
    assert "queued in the outbox: broker unreachable" in out  # the markers made before it came up
    assert "reachable: markers waiting in the outbox are being published" in err
    kinds = ["recording_start", "holster_draw", "manual", "manual", "recording_stop"]
    assert f"{len(kinds)} acknowledged" in out
    assert "0 acknowledged" not in out and "still queued" not in out


# -- item 9: a reader that goes away ----------------------------------------------------------------
def test_json_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    r, w = os.pipe()
    os.close(r)
    try:
        proc = subprocess.run([*SIM, "run", str(EXAMPLE), "--out", str(tmp_path / "o"), "--no-broker", "--json"],
                              stdout=w, stderr=subprocess.PIPE, text=True, cwd=ROOT, timeout=300)
    finally:
        os.close(w)
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr, proc.stderr
    assert proc.returncode == 141


# -- item 5: progress on a terminal, lines above the bar ---------------------------------------------
def _on_a_terminal(argv: list[str], timeout: float = 300) -> tuple[int, str]:
    """Run ``argv`` with stdout and stderr on one pseudo-terminal (100 columns); all it wrote."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    proc = subprocess.Popen(argv, stdout=slave, stderr=slave, stdin=subprocess.DEVNULL, cwd=ROOT)
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        rc = proc.wait(timeout=30)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return rc, b"".join(chunks).decode("utf-8", "replace")


def test_run_shows_a_progress_bar_and_prints_marker_lines_above_it(tmp_path: Path) -> None:
    clip = make_plain_clip(tmp_path / "long.mp4", seconds=32, audio=False, size=(160, 96))
    scenario = tmp_path / "s.json"
    scenario.write_text(json.dumps({"events": [{"t_s": t, "event": "marker"} for t in (5.0, 12.0, 20.0, 28.0)]}))
    rc, text = _on_a_terminal([*SIM, "run", str(clip), "--out", str(tmp_path / "o"), "--no-broker",
                               "--scenario", str(scenario)])
    assert rc == 0, text
    assert "footage" in text and "%" in text  # the bar was drawn
    # what stays on each screen line (the terminal turns "\n" into "\r\n")
    visible = [line.rstrip("\r").rsplit("\r", 1)[-1] for line in text.split("\n")]
    marker_lines = [line for line in visible if "marker #" in line]
    assert len(marker_lines) == 4
    assert all(line.startswith("  marker #") for line in marker_lines), marker_lines  # not glued to the bar


def test_make_clip_shows_progress_on_a_terminal(tmp_path: Path) -> None:
    rc, text = _on_a_terminal([*SIM, "make-clip", str(tmp_path / "c.mp4"), "--seconds", "4", "--size", "160x96",
                               "--seed", "1"])
    assert rc == 0, text
    assert "rendering" in text and "frame" in text
    last = text.rstrip().split("\n")[-1].rstrip("\r").rsplit("\r", 1)[-1]
    assert last.startswith(str(tmp_path / "c.mp4")), last
