"""`bodycam-model build`'s Edge TPU step: the compiler's output when it is on PATH, its absence otherwise.

`edgetpu_compiler` comes from Coral's apt repository (not reachable here), so a stand-in script with
the real command line and log format plays it; what is tested is our side: how it is called, where
the build lands, what the sidecar records, and that a failing compiler is recorded as such.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from bodycam.device.detect.model_spec import default_model_path, sha256_file
from bodycam.model_compile.deps import load_interpreter
from bodycam.model_compile.edgetpu import compile_for_edgetpu

FAKE_COMPILER = """#!/bin/sh
# stand-in for Coral's edgetpu_compiler: same options, same log lines
if [ "$1" = "--version" ]; then echo "Edge TPU Compiler version 16.0.384591198"; exit 0; fi
[ "$1" = "-s" ] && [ "$2" = "-o" ] || { echo "usage: edgetpu_compiler -s -o DIR MODEL" >&2; exit 2; }
out="$3"; model="$4"; name=$(basename "$model" .tflite)
echo "$@" > "$out/compiler-args.txt"
[ -n "$FAIL" ] && { echo "Internal compiler error. Aborting!" >&2; exit 1; }
cp "$model" "$out/${name}_edgetpu.tflite"
echo "Model compiled successfully in 123 ms."
echo "Number of operations that will run on Edge TPU: 17"
echo "Number of operations that will run on CPU: 0"
"""


@pytest.fixture
def model(tmp_path: Path) -> Path:
    src = default_model_path()
    shutil.copy(src, tmp_path / src.name)
    return tmp_path / src.name


@pytest.fixture
def compiler_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "edgetpu_compiler"
    exe.write_text(FAKE_COMPILER)
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return exe


def test_with_the_compiler_the_edge_tpu_build_is_emitted(model: Path, compiler_on_path: Path) -> None:
    section = compile_for_edgetpu(model, load_interpreter(model, analysis=True))
    out = model.with_name(f"{model.stem}_edgetpu.tflite")
    assert section["compiled"] is True and section["file"] == out.name and out.is_file()
    assert section["sha256"] == sha256_file(out)
    assert section["compiler"] == "Edge TPU Compiler version 16.0.384591198"
    assert section["op_report"]["compiler_edgetpu_ops"] == 17
    args = (model.parent / "compiler-args.txt").read_text().split()
    assert args == ["-s", "-o", str(model.parent), str(model)]


def test_a_failing_compiler_is_recorded(model: Path, compiler_on_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAIL", "1")
    section = compile_for_edgetpu(model, load_interpreter(model, analysis=True))
    assert section["compiled"] is False and section["file"] is None and "exited 1" in section["reason"]
    assert "Internal compiler error" in section["op_report"]["compiler_log"]


def test_without_the_compiler_the_sidecar_says_so(model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(model.parent))  # nothing called edgetpu_compiler there
    section = compile_for_edgetpu(model, load_interpreter(model, analysis=True))
    assert section["compiled"] is False and section["file"] is None and section["compiler"] is None
    assert "edgetpu_compiler is not on PATH" in section["reason"]
    assert section["op_report"]["fully_mappable"] is True
