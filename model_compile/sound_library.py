"""Sound files made by other people and other tools, read by a manifest (audio evaluation only).

The audio detector's training and test sounds so far all come from the project's own generators.
A library here is a folder of someone else's sound files (unpacked Debian game-data packages in
``scripts/third-party-sounds.sh``; any folder of recordings works) and a manifest that says what each
file is. Nothing of a library is shipped or trained on; it is read only to test on.

Manifest (UTF-8 text, one sound a line, ``#`` starts a comment, fields separated by tabs)::

    source  label  kind  path

* ``source``: who made it (a game, a recordist): the unit that evaluation groups by and holds out;
* ``label``: ``shot`` (one gunshot, its onset the sound's onset), ``impulse`` (a non-shot impulsive
  sound: a distractor), or ``bed`` (a continuous background);
* ``kind``: what it is (``pistol``, ``door``, ``explosion`` ...), reported per kind;
* ``path``: relative to the library's root; ``ARCHIVE!MEMBER`` reads a member of a zip archive
  (``.zip``, ``.pk3``, ``.wz``) and ``FILE.wad!LUMP`` a Doom-format sound lump.

Files are decoded with PyAV (any format FFmpeg reads: Ogg Vorbis, WAV, WavPack, FLAC ...), mixed to
mono float32 in [-1, 1] at their own sample rate.
"""

from __future__ import annotations

import io
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bodycam.device.errors import ClipError, ConfigError

F32 = npt.NDArray[np.float32]

LABELS = ("shot", "impulse", "bed")
ARCHIVES = (".zip", ".pk3", ".wz")


@dataclass(frozen=True)
class LibrarySound:
    source: str
    label: str
    kind: str
    path: str
    line: int = 0

    @property
    def name(self) -> str:
        return f"{self.source}:{self.path}"


@dataclass(frozen=True)
class Decoded:
    sound: LibrarySound
    audio: F32
    rate: int


def read_manifest(path: Path) -> list[LibrarySound]:
    """The manifest's entries; a malformed line is a :class:`ConfigError` naming the file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the sound manifest: {exc}") from exc
    out: list[LibrarySound] = []
    seen: set[tuple[str, str]] = set()
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split("\t")]
        if len(parts) != 4 or not all(parts):
            raise ConfigError(f"{path}:{n}: expected 4 tab-separated fields (source, label, kind, path), "
                              f"got {len(parts)}: {raw!r}")
        source, label, kind, rel = parts
        if label not in LABELS:
            raise ConfigError(f"{path}:{n}: label {label!r} is not one of {', '.join(LABELS)}")
        if rel.startswith("/") or ".." in Path(rel.split("!", 1)[0]).parts:
            raise ConfigError(f"{path}:{n}: path {rel!r} must stay inside the library's root")
        if (source, rel) in seen:
            raise ConfigError(f"{path}:{n}: {rel!r} of {source!r} is listed twice")
        seen.add((source, rel))
        out.append(LibrarySound(source, label, kind, rel, n))
    if not out:
        raise ConfigError(f"{path}: the sound manifest lists no sounds")
    return out


def _decode_bytes(data: bytes, where: str) -> tuple[F32, int]:
    import av

    try:
        c: Any = av.open(io.BytesIO(data), mode="r")
        with c:
            if not c.streams.audio:
                raise ClipError(f"{where}: no audio stream")
            st = c.streams.audio[0]
            chunks: list[F32] = []
            rate = int(st.codec_context.sample_rate or 0)
            for frame in c.decode(st):
                a = frame.to_ndarray().astype(np.float32)
                if frame.format.name in ("s16", "s16p"):
                    a /= 32768.0
                elif frame.format.name in ("s32", "s32p"):
                    a /= 2147483648.0
                elif frame.format.name in ("u8", "u8p"):
                    a = (a - 128.0) / 128.0
                if not frame.format.is_planar:
                    a = a.reshape(-1, len(frame.layout.channels)).T
                chunks.append(a.mean(axis=0))
                rate = int(frame.sample_rate)
    except ClipError:
        raise
    except Exception as exc:
        raise ClipError(f"{where}: cannot decode: {exc}") from exc
    if not chunks or rate <= 0:
        raise ClipError(f"{where}: no audio samples")
    return np.concatenate(chunks).astype(np.float32), rate


def _wad_lump(wad: Path, lump: str) -> bytes:
    data = wad.read_bytes()
    if len(data) < 12 or data[:4] not in (b"IWAD", b"PWAD"):
        raise ClipError(f"{wad}: not a WAD file")
    count, offset = struct.unpack_from("<ii", data, 4)
    for k in range(count):
        pos, size, raw = struct.unpack_from("<ii8s", data, offset + 16 * k)
        if raw.rstrip(b"\0").decode("ascii", "replace").upper() == lump.upper():
            return data[pos : pos + size]
    raise ClipError(f"{wad}: no lump {lump!r}")


def _dmx_sound(data: bytes, where: str) -> tuple[F32, int]:
    """A Doom sound lump: format 3, rate, sample count, 16 pad bytes, unsigned 8-bit samples."""
    if len(data) < 8:
        raise ClipError(f"{where}: truncated sound lump")
    fmt, rate, n = struct.unpack_from("<HHI", data, 0)
    if fmt != 3 or rate <= 0 or n < 32 or 8 + n > len(data):
        raise ClipError(f"{where}: not a Doom sound lump (format {fmt}, rate {rate}, {n} samples)")
    raw = np.frombuffer(data, np.uint8, n - 32, 8 + 16)
    return ((raw.astype(np.float32) - 128.0) / 128.0), int(rate)


def load(root: Path, sound: LibrarySound) -> Decoded:
    """One sound decoded (mono float32, its own rate); a missing or undecodable file is a
    :class:`ClipError` naming it."""
    outer, _, member = sound.path.partition("!")
    file = root / outer
    where = f"{file}{'!' + member if member else ''}"
    if not file.is_file():
        raise ClipError(f"{where}: no such file (is the library unpacked under {root}?)")
    if member and file.suffix.lower() == ".wad":
        audio, rate = _dmx_sound(_wad_lump(file, member), where)
    elif member and file.suffix.lower() in ARCHIVES:
        try:
            with zipfile.ZipFile(file) as z:
                data = z.read(member)
        except (KeyError, zipfile.BadZipFile, OSError) as exc:
            raise ClipError(f"{where}: cannot read: {exc}") from exc
        audio, rate = _decode_bytes(data, where)
    elif member:
        raise ClipError(f"{where}: {file.suffix or 'this file'} is not an archive this reader opens")
    else:
        audio, rate = _decode_bytes(file.read_bytes(), where)
    if not np.isfinite(audio).all() or float(np.abs(audio).max(initial=0.0)) == 0.0:
        raise ClipError(f"{where}: silent or not finite")
    return Decoded(sound, audio, rate)


def onset(audio: F32, rate: int, rel_db: float = -20.0, frame_ms: float = 1.0) -> int:
    """The sound's onset: the first sample of the first ``frame_ms`` frame whose RMS reaches
    ``rel_db`` under the loudest frame's (leading silence and faint pre-noise skipped)."""
    k = max(1, int(rate * frame_ms / 1000))
    n = len(audio) // k
    if n == 0:
        return 0
    rms = np.sqrt(np.mean(audio[: n * k].reshape(n, k).astype(np.float64) ** 2, axis=1))
    hit = np.flatnonzero(rms >= rms.max() * 10 ** (rel_db / 20))
    first = int(hit[0]) * k
    seg = np.abs(audio[first : first + k])
    above = np.flatnonzero(seg >= seg.max() * 10 ** (rel_db / 20)) if len(seg) else np.zeros(0, np.int64)
    return first + (int(above[0]) if len(above) else 0)


__all__ = ["LABELS", "Decoded", "LibrarySound", "load", "onset", "read_manifest"]
