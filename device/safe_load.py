"""Reading the project's input files with limits: every bad file fails in one line.

Used by every loader of a file a person or another tool wrote: configs (``device/config.py``),
model sidecars, scenarios (``hw_sim/gpio_sim.py``), truth files (``hw_sim/truth.py``, which
``model_compile`` reads through). The rules:

* **regular files only**: the path is opened non-blocking (a FIFO cannot hang the open) and
  ``fstat`` must say "regular file" (a symlink to ``/dev/zero`` or a directory is refused);
* a **byte cap** (:data:`MAX_BYTES` unless the caller gives one): never more than cap + 1 bytes
  are read;
* **UTF-8** (strict; a decoding error names the byte offset);
* **nesting depth** (:data:`MAX_DEPTH`): checked on the text before parsing (a 100,000-deep JSON
  or TOML never reaches the recursive parser) and on the parsed value;
* **numbers**: no NaN or infinities, and no float that overflows to one (``1e400``).

Errors are raised as the caller's :class:`~bodycam.device.errors.BodycamError` subclass, as one
line: ``<what> <path>: <problem>``.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
import tomllib
from pathlib import Path
from typing import Any

from bodycam.device.errors import BodycamError, ConfigError

MAX_BYTES = 4 * 1024 * 1024
MAX_DEPTH = 64
_JSON_TOKENS = re.compile(r'["\\\[\]{}]')
_TOML_TOKENS = re.compile(r"""["'\\\[\]{}#\n]""")


def read_text(path: str | os.PathLike[str], what: str, *, error: type[BodycamError] = ConfigError,
              max_bytes: int = MAX_BYTES) -> str:
    """The UTF-8 text of a regular file of at most ``max_bytes`` bytes."""
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise error(f"{p}: {what} not found") from None
    except OSError as exc:
        raise error(f"{what} {p}: cannot open ({exc.strerror or exc})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{what} {p}: not a regular file ({_kind(st.st_mode)})")
        if st.st_size > max_bytes:
            raise error(f"{what} {p}: {st.st_size} bytes, more than the {max_bytes} bytes allowed")
        chunks: list[bytes] = []
        left = max_bytes + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
    except OSError as exc:
        raise error(f"{what} {p}: cannot read ({exc.strerror or exc})") from None
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise error(f"{what} {p}: more than the {max_bytes} bytes allowed")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{what} {p}: not UTF-8 (byte {exc.start}: {exc.reason})") from None


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a plain file"


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is out of range (not a finite double)")
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def text_depth(text: str, toml: bool = False) -> int:
    """Deepest bracket nesting of JSON (or TOML) text, not counting brackets inside strings."""
    depth = deepest = 0
    quote: str | None = None
    comment = False
    escaped_at = -1  # the position a backslash escapes (inside a double-quoted string)
    for m in (_TOML_TOKENS if toml else _JSON_TOKENS).finditer(text):
        c = m.group()
        if comment:
            comment = c != "\n"
            continue
        if quote is not None:
            if m.start() == escaped_at:
                continue
            if c == "\\" and quote == '"':
                escaped_at = m.end()
            elif c == quote:
                quote = None
            continue
        if c in "\"'" and (toml or c == '"'):
            quote = c
        elif c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth -= 1
        elif c == "#" and toml:
            comment = True
    return deepest


def value_depth(value: Any) -> int:
    """Nesting depth of a parsed value (containers only), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            deepest = max(deepest, d + 1)
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list | tuple):
            deepest = max(deepest, d + 1)
            stack.extend((x, d + 1) for x in v)
    return deepest


def _check_depth(depth: int, p: Path, what: str, error: type[BodycamError], max_depth: int) -> None:
    if depth > max_depth:
        raise error(f"{what} {p}: nested more than {max_depth} levels deep")


def load_json(path: str | os.PathLike[str], what: str, *, error: type[BodycamError] = ConfigError,
              max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """Parse a JSON file within the limits (see the module docstring)."""
    p = Path(path)
    text = read_text(p, what, error=error, max_bytes=max_bytes)
    _check_depth(text_depth(text), p, what, error, max_depth)
    try:
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:
        raise error(f"{what} {p}: nested too deep") from None
    except ValueError as exc:
        raise error(f"{what} {p}: not valid JSON ({exc})") from None
    _check_depth(value_depth(value), p, what, error, max_depth)
    return value


def load_toml(path: str | os.PathLike[str], what: str, *, error: type[BodycamError] = ConfigError,
              max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """Parse a TOML file within the limits (see the module docstring)."""
    p = Path(path)
    text = read_text(p, what, error=error, max_bytes=max_bytes)
    _check_depth(text_depth(text, toml=True), p, what, error, max_depth)
    try:
        value = tomllib.loads(text, parse_float=_finite_float)
    except RecursionError:
        raise error(f"{what} {p}: nested too deep") from None
    except (tomllib.TOMLDecodeError, ValueError) as exc:
        raise error(f"{what} {p}: not valid TOML ({exc})") from None
    _check_depth(value_depth(value), p, what, error, max_depth)
    return value


def loads_untrusted(data: bytes | str, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads`` of bytes someone else controls (a file on the card, an upload): any input that is
    not JSON within ``max_depth`` levels is a ``ValueError`` (never a ``RecursionError`` escaping the
    caller's ``except (OSError, ValueError)``)."""
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    if text_depth(text) > max_depth:
        raise ValueError(f"nested more than {max_depth} levels deep")
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deep") from None
