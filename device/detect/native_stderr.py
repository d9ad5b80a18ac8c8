"""Filter what native code writes to file descriptor 2 while a block runs.

The TFLite runtime prints ``INFO: Created TensorFlow Lite XNNPACK delegate for CPU.``
from C++ straight to fd 2 when an interpreter is built. Neither ``TF_CPP_MIN_LOG_LEVEL``
nor any exported setter reaches that logger (ai-edge-litert 2.3: checked on this machine),
so :func:`filtered_native_stderr` points fd 2 at a temporary file for the duration of the
block and then writes back every line except the ones it was asked to drop. Nothing else is
lost: warnings and errors from the runtime (or from another thread during the block) still
reach stderr, just after the block instead of during it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator

#: Lines the TFLite runtime prints on every start that say nothing an operator needs.
TFLITE_NOISE = ("INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",)


@contextlib.contextmanager
def filtered_native_stderr(drop: tuple[str, ...] = TFLITE_NOISE) -> Iterator[None]:
    """Run the block with fd 2 captured; afterwards re-emit every captured line not in ``drop``."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all: nothing to filter
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = [line for line in tmp.read().splitlines(keepends=True)
                    if line.rstrip(b"\r\n").decode("utf-8", "replace") not in drop]
            if kept:
                with contextlib.suppress(OSError):
                    os.write(2, b"".join(kept))
