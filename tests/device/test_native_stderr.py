"""The TFLite runtime's start-up INFO line is dropped; everything else on fd 2 still gets through."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=120, check=True)


def test_building_the_detector_prints_no_xnnpack_info_line() -> None:
    r = _run("""
        from bodycam.device.detect.detector import DetectorConfig, build_detector
        from bodycam.device.detect.model_spec import default_model_path
        det = build_detector(DetectorConfig(backend="cpu"), default_model_path())
        print(det.backend)
    """)
    assert r.stdout.strip() == "cpu"
    assert "XNNPACK" not in r.stderr, r.stderr
    assert r.stderr == ""


def test_the_runtime_does_print_it_without_the_filter() -> None:
    """The premise: the bare runtime prints the line (else the filter above proves nothing)."""
    r = _run("""
        from bodycam.device.detect.detector import _runtime
        from bodycam.device.detect.model_spec import default_model_path
        it = _runtime()[0](model_path=str(default_model_path()), num_threads=1)
        it.allocate_tensors()
    """)
    assert "Created TensorFlow Lite XNNPACK delegate for CPU." in r.stderr


def test_other_native_output_is_kept_in_order() -> None:
    r = _run("""
        import os, sys
        from bodycam.device.detect.native_stderr import filtered_native_stderr
        os.write(2, b"before\\n")
        with filtered_native_stderr():
            os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\\n")
            os.write(2, b"ERROR: something real\\n")
            print("python warning", file=sys.stderr)
        os.write(2, b"after\\n")
    """)
    assert r.stderr.splitlines() == ["before", "ERROR: something real", "python warning", "after"]


def test_output_is_restored_when_the_block_raises() -> None:
    r = subprocess.run([sys.executable, "-c", textwrap.dedent("""
        import os
        from bodycam.device.detect.native_stderr import filtered_native_stderr
        try:
            with filtered_native_stderr():
                os.write(2, b"inside\\n")
                raise ValueError("boom")
        except ValueError:
            pass
        os.write(2, b"after\\n")
    """)], capture_output=True, text=True, timeout=60, check=True)
    assert r.stderr.splitlines() == ["inside", "after"]
