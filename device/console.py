"""Shared behaviour of the command-line entry points (``bodycam``, ``bodycam-sim``, ...).

:func:`pipe_safe` makes a ``main`` behave like a Unix tool when its reader goes away
early (``bodycam-sim run ... --json | head -2``): no ``BrokenPipeError`` traceback, no
"Exception ignored" message at interpreter exit, just the conventional exit status 141
(128 + SIGPIPE). Every CLI's ``main`` is wrapped with it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable
from typing import ParamSpec

P = ParamSpec("P")

#: exit status of a command whose output pipe was closed by the reader (128 + SIGPIPE)
BROKEN_PIPE_EXIT = 141


def pipe_safe(main: Callable[P, int]) -> Callable[P, int]:
    """Wrap ``main`` so a closed stdout ends it quietly with :data:`BROKEN_PIPE_EXIT`."""

    @functools.wraps(main)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> int:
        try:
            rc = main(*args, **kwargs)
            sys.stdout.flush()  # a late EPIPE surfaces here, not in the interpreter's exit
            return rc
        except BrokenPipeError:
            # Python flushes stdout again at exit: point it at /dev/null so that cannot fail
            with contextlib.suppress(OSError, ValueError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
                os.close(devnull)
            return BROKEN_PIPE_EXIT

    return wrapper
