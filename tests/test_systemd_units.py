"""The systemd units, checked by the real systemd tools (systemd-analyze, -sysusers, -tmpfiles).

The tools come from Debian's `systemd` package (no systemd as PID 1 needed); set
SYSTEMD_ANALYZE to use an unpacked copy. `verify` exits 0 on unknown keys, so its
stderr must be empty too.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UNITS = ROOT / "systemd"
SERVICE = UNITS / "bodycam.service"
EXPOSURE_MAX = 2.0  # "OK" is <= 4.9; the unit scores 1.6


def tool(name: str) -> str:
    env = os.environ.get(name.upper().replace("-", "_"))
    path = env or shutil.which(name)
    if not path:
        pytest.fail(f"{name} not found: apt-get install systemd (or set {name.upper().replace('-', '_')})")
    return path


def unit_copy(tmp_path: Path, unit: Path = SERVICE, extra: str = "") -> Path:
    """The unit with ExecStart pointed at an existing binary (the venv is not installed here)."""
    text = unit.read_text()
    assert re.search(r"^ExecStart=/opt/bodycam/venv/bin/bodycam run --config /etc/bodycam/config.toml$", text, re.M)
    text = re.sub(r"^ExecStart=\S+", f"ExecStart={sys.executable}", text, flags=re.M) + extra
    out = tmp_path / unit.name
    out.write_text(text)
    return out


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("systemd-analyze"), *args], capture_output=True, text=True, timeout=60)


def settings(unit: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_verify_is_clean(tmp_path: Path) -> None:
    res = analyze("verify", "--man=no", str(unit_copy(tmp_path)))
    assert res.returncode == 0, res.stderr
    assert res.stderr.strip() == "" and res.stdout.strip() == ""


def test_verify_catches_mistakes(tmp_path: Path) -> None:
    """The check above can fail: unknown keys and bad values show up on stderr."""
    bad = unit_copy(tmp_path, extra="WatchdogSecs=5\n")
    res = analyze("verify", "--man=no", str(bad))
    assert "Unknown key 'WatchdogSecs'" in res.stderr
    orig = analyze("verify", "--man=no", str(SERVICE))  # the real ExecStart is absent here
    assert orig.returncode != 0 and "/opt/bodycam/venv/bin/bodycam" in orig.stderr


def test_security_exposure_is_ok(tmp_path: Path) -> None:
    unit = unit_copy(tmp_path)
    res = analyze("security", "--offline=true", f"--threshold={int(EXPOSURE_MAX * 10)}", str(unit))
    m = re.search(r"Overall exposure level for bodycam\.service: (\d+\.\d+) (\w+)", res.stdout)
    assert m, res.stdout[-500:] + res.stderr
    score = float(m.group(1))
    print(f"systemd-analyze security --offline=true: {score} {m.group(2)}")
    assert score <= EXPOSURE_MAX and m.group(2) == "OK"
    assert res.returncode == 0, res.stderr
    assert not any("Unknown" in line or "ignoring" in line for line in res.stderr.splitlines())


def test_service_contract() -> None:
    s = settings(SERVICE)
    assert s["Type"] == ["notify"] and s["NotifyAccess"] == ["main"]
    assert s["Restart"] == ["on-failure"] and s["User"] == ["bodycam"]
    assert "StartLimitIntervalSec" in s and "StartLimitBurst" in s
    assert re.fullmatch(r"\d+s", s["WatchdogSec"][0])
    assert s["StateDirectory"] == ["bodycam"] and s["LogsDirectory"] == ["bodycam"]
    assert s["LoadCredential"] == ["mqtt:/etc/bodycam/credentials"]
    assert s["DevicePolicy"] == ["closed"]
    allowed = {v.split()[0] for v in s["DeviceAllow"]}
    assert {"char-video4linux", "char-media", "char-dma_heap", "char-gpiochip", "/dev/gpiomem", "char-ttyAMA"} <= allowed
    # /dev/vcio is a misc device (major 10): only the node itself works (there is no "vcio" class)
    assert "/dev/vcio" in allowed and "char-vcio" not in allowed
    assert {"char-apex", "char-usb_device"} <= allowed  # Coral: PCIe/M.2 and USB
    assert "char-alsa" in allowed  # microphone
    assert {"char-ttyUSB", "char-ttyACM"} <= allowed  # USB GNSS receivers
    assert all(v.split()[1] == "rw" for v in s["DeviceAllow"])
    assert "78" in s["RestartPreventExitStatus"][0].split()  # start-up failure: say why, do not spin
    assert "time-sync.target" in s["After"][0].split() and "Wants" not in s  # ordered, not waited for
    for key in ("ProtectSystem", "NoNewPrivileges", "PrivateTmp", "ProtectHome", "MemoryDenyWriteExecute",
                "LockPersonality", "RestrictAddressFamilies", "ProtectKernelTunables"):
        assert key in s, key
    assert s["CapabilityBoundingSet"] == [""]
    assert "ProcSubset" not in s  # RPi.GPIO / picamera2 read /proc/cpuinfo and /proc/device-tree


def test_sysusers_creates_user_and_groups(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    res = subprocess.run(
        [tool("systemd-sysusers"), f"--root={tmp_path}", str(UNITS / "bodycam.sysusers")],
        capture_output=True, text=True, timeout=60,
    )
    assert res.returncode == 0, res.stderr
    passwd = (tmp_path / "etc/passwd").read_text()
    group = (tmp_path / "etc/group").read_text()
    assert re.search(r"^bodycam:x:\d+:\d+:.*:/var/lib/bodycam:/usr/sbin/nologin$", passwd, re.M)
    for g in ("video", "gpio", "dialout", "audio", "apex", "plugdev"):
        assert re.search(rf"^{g}:x:\d+:.*\bbodycam\b", group, re.M), group


def test_tmpfiles_creates_a_private_credentials_dir(tmp_path: Path) -> None:
    res = subprocess.run(
        [tool("systemd-tmpfiles"), f"--root={tmp_path}", "--create", str(UNITS / "bodycam.tmpfiles")],
        capture_output=True, text=True, timeout=60,
    )
    assert res.returncode == 0, res.stderr
    creds = tmp_path / "etc/bodycam/credentials"
    assert creds.is_dir() and (creds.stat().st_mode & 0o777) == 0o700


def test_udev_rules_are_well_formed() -> None:
    for n, line in enumerate((UNITS / "99-bodycam.rules").read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        for part in (p.strip() for p in line.split(",")):
            assert re.fullmatch(r'[A-Z_]+(\{[A-Za-z_]+\})?(==|=)"[^"]*"', part), f"line {n}: {part!r}"
        assert 'GROUP="' in line and 'MODE="0660"' in line, f"line {n}"


MDWE_CHILD = textwrap.dedent(
    """
    import ctypes, glob, io, mmap, sys
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(65, 1, 0, 0, 0) != 0:   # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN (Linux >= 6.3)
        sys.exit(f"PR_SET_MDWE failed: errno {ctypes.get_errno()}")
    try:
        mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        sys.exit("W+X mapping was allowed: MDWE not active")
    except PermissionError:
        pass
    import numpy as np, av
    from ai_edge_litert.interpreter import Interpreter
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as c:
        s = c.add_stream("h264", rate=30)
        s.width, s.height = 64, 64
        for i in range(3):
            for p in s.encode(av.VideoFrame.from_ndarray(np.full((64, 64, 3), i, np.uint8), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    models = sorted(glob.glob(sys.argv[1] + "/*.tflite"))
    for m in models:
        it = Interpreter(model_path=m, num_threads=1)
        it.allocate_tensors()
        d = it.get_input_details()[0]
        it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
        it.invoke()
    print(f"ok h264={len(buf.getvalue())} models={len(models)}")
    """
)


def test_firmware_stack_runs_with_memory_deny_write_execute() -> None:
    """MemoryDenyWriteExecute=yes must not break NumPy, PyAV/x264 or TFLite+XNNPACK.

    The kernel's prctl(PR_SET_MDWE) enforces the same W^X rule as systemd's seccomp
    filter; the child enables it and then runs the stack (the shipped models, when present).
    """
    res = subprocess.run(
        [sys.executable, "-c", MDWE_CHILD, str(ROOT / "device/models")],
        capture_output=True, text=True, timeout=120,
    )
    assert res.returncode == 0 and res.stdout.startswith("ok"), res.stdout + res.stderr
