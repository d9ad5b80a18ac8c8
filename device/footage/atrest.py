"""Footage encrypted at rest: the age v1 file format (X25519 recipient), streaming, per segment.

Each segment on the card is one age file (``segment-00000.mp4.age``) encrypted to **base's**
X25519 public key (an age recipient, ``age1...``); the camera never holds the private key, so a
lost card reveals no footage. The format is age v1 (the C2SP age specification; byte layout in
``docs/encryption-at-rest.md``), written here with ``cryptography`` (X25519, HKDF-SHA-256,
HMAC-SHA-256, ChaCha20-Poly1305) and checked against the ``pyrage`` implementation in the tests,
so ``age -d -i base.key segment-00000.mp4.age`` (the standard tool) decrypts it too:

* header: ``age-encryption.org/v1``, one ``X25519`` stanza (the ephemeral share, and the
  16-byte file key wrapped to the recipient), ``---`` and an HMAC over the header;
* payload: a 16-byte nonce, then the STREAM construction: 64 KiB plaintext chunks, each sealed
  with ChaCha20-Poly1305 under a key derived from the file key and that nonce, the chunk's
  nonce being its index (11 bytes, big-endian) and a final flag (1 byte: 1 on the last chunk).
  A changed, truncated, reordered, dropped or appended chunk does not authenticate.

:class:`EncryptingWriter` is a write-only file object PyAV muxes into (no seeking: fragmented MP4
needs none), hashing the plaintext as it goes (the manifest signs both hashes).
:func:`decrypt_stream` / :func:`decrypt_file` / :func:`iter_plaintext` are base's side: errors
name the segment and the chunk. Pure functions of bytes and keys: no config, no I/O but the
streams given.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

import bech32
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from bodycam.device.errors import BodycamError, ConfigError
from bodycam.device.settings import require

SUFFIX = ".age"
SCHEME = "age-v1-x25519"
CHUNK = 64 * 1024
TAG = 16
VERSION_LINE = b"age-encryption.org/v1"
X25519_INFO = b"age-encryption.org/v1/X25519"
MAX_HEADER = 64 * 1024
RECIPIENT_HRP = "age"
IDENTITY_HRP = "age-secret-key-"


class DecryptError(BodycamError):
    """An encrypted segment does not decrypt: wrong key, not age, changed, truncated or reordered."""


class KeyFileError(ConfigError):
    """Base's public key (on the camera) or private key (at base) is missing or malformed."""


@dataclass(frozen=True)
class AtRestConfig:
    """``[atrest]``: footage encrypted on the card to base's key (on by default).

    ``base_key_file``: base's public key, one line ``age1...`` ("" =
    ``<data_dir>/identity/base.age.pub``, where ``bodycam provision --base-key`` installs it).
    """

    encrypt: bool = True
    base_key_file: str = ""

    def __post_init__(self) -> None:
        require(isinstance(self.encrypt, bool), "atrest.encrypt", "must be true or false")
        require(isinstance(self.base_key_file, str), "atrest.base_key_file", "must be a path")


def base_key_path(cfg: AtRestConfig, data_dir: Path) -> Path:
    return Path(cfg.base_key_file) if cfg.base_key_file else data_dir / "identity" / "base.age.pub"


def encryption_from_config(cfg: AtRestConfig, data_dir: Path) -> SegmentEncryption | None:
    """None when ``encrypt`` is off; else base's key loaded (missing/malformed: :class:`KeyFileError`,
    one line naming the file and ``bodycam provision --base-key``)."""
    if not cfg.encrypt:
        return None
    return SegmentEncryption(load_recipient(base_key_path(cfg, data_dir)))


# -- keys (age's Bech32 text forms) ------------------------------------------------------------------
def _raw(key: X25519PublicKey | X25519PrivateKey) -> bytes:
    if isinstance(key, X25519PublicKey):
        return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                             serialization.NoEncryption())


def _bech32_encode(hrp: str, data: bytes) -> str:
    words = bech32.convertbits(list(data), 8, 5, True)
    out = bech32.bech32_encode(hrp, words) if words is not None else None
    if out is None:
        raise ValueError("cannot encode")
    return out


def _bech32_decode(text: str, hrp: str) -> bytes | None:
    got_hrp, words = bech32.bech32_decode(text)
    if got_hrp != hrp or words is None:
        return None
    data = bech32.convertbits(words, 5, 8, False)
    return bytes(data) if data is not None and len(data) == 32 else None


def format_recipient(public: X25519PublicKey) -> str:
    """``age1...``: what the camera is given."""
    return _bech32_encode(RECIPIENT_HRP, _raw(public))


def format_identity(private: X25519PrivateKey) -> str:
    """``AGE-SECRET-KEY-1...``: what base keeps (the same text as ``age-keygen`` writes)."""
    return _bech32_encode(IDENTITY_HRP, _raw(private)).upper()


def parse_recipient(text: str) -> X25519PublicKey:
    raw = _bech32_decode(text.strip().lower(), RECIPIENT_HRP) if text.strip().startswith("age1") else None
    if raw is None:
        raise ValueError("not an age X25519 recipient (age1...)")
    return X25519PublicKey.from_public_bytes(raw)


def parse_identity(text: str) -> X25519PrivateKey:
    """The first ``AGE-SECRET-KEY-1...`` line (``#`` comment lines, as ``age-keygen`` writes, are skipped)."""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        raw = _bech32_decode(line.lower(), IDENTITY_HRP) if line.upper().startswith("AGE-SECRET-KEY-1") else None
        if raw is None:
            break
        return X25519PrivateKey.from_private_bytes(raw)
    raise ValueError("not an age X25519 identity (AGE-SECRET-KEY-1...)")


def identity_file_text(private: X25519PrivateKey) -> str:
    """An identity file as ``age-keygen`` writes it (comment with the public key, then the key)."""
    return f"# public key: {format_recipient(private.public_key())}\n{format_identity(private)}\n"


def load_recipient(path: Path) -> X25519PublicKey:
    """Base's public key on the camera (a file holding ``age1...``); one-line errors naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KeyFileError(f"{path}: base's public key is missing (footage is encrypted at rest): install it with "
                           "'bodycam provision --base-key age1...', or set atrest.encrypt = false") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"{path}: cannot read base's public key ({exc})") from exc
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    try:
        if len(lines) != 1:
            raise ValueError(f"{len(lines)} key lines, expected 1")
        return parse_recipient(lines[0])
    except ValueError as exc:
        raise KeyFileError(f"{path}: base's public key is malformed ({exc}); expected one line age1... "
                           "(bodycam provision --base-key)") from exc


def load_identity(path: Path) -> X25519PrivateKey:
    """Base's private key (an ``age-keygen`` identity file)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"{path}: cannot read base's private key ({exc})") from exc
    try:
        return parse_identity(text)
    except ValueError as exc:
        raise KeyFileError(f"{path}: {exc}") from exc


def _write_private(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def install_recipient(path: Path, key: str) -> str:
    """Install base's public key on the camera: ``key`` is ``age1...`` or a file holding it (or an
    identity file's ``# public key:`` comment line). Returns the recipient installed."""
    text = key.strip()
    if not text.startswith("age1"):
        try:
            lines = Path(key).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyFileError(f"--base-key {key}: neither age1... nor a readable file ({exc})") from exc
        found = [ln.strip().removeprefix("# public key:").strip() for ln in lines
                 if ln.strip().startswith(("age1", "# public key: age1"))]
        if len(found) != 1:
            raise KeyFileError(f"--base-key {key}: expected one age1... public key in the file, found {len(found)}")
        text = found[0]
    try:
        recipient = format_recipient(parse_recipient(text))
    except ValueError as exc:
        raise KeyFileError(f"--base-key: {exc}") from exc
    try:
        _write_private(path, (recipient + "\n").encode("ascii"), 0o644)
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot install base's public key ({exc.strerror or exc})") from exc
    return recipient


def generate_identity_file(path: Path) -> str:
    """Base's key pair: an ``age-keygen``-style identity file at ``path`` (mode 0600, never
    overwritten); returns the recipient (``age1...``) to install on the cameras."""
    if path.exists():
        raise KeyFileError(f"{path}: exists already (base's private key: replacing it would make footage "
                           "encrypted to it unreadable)")
    private = X25519PrivateKey.generate()
    try:
        _write_private(path, identity_file_text(private).encode("ascii"), 0o600)
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot write base's private key ({exc.strerror or exc})") from exc
    return format_recipient(private.public_key())


# -- age primitives --------------------------------------------------------------------------------
def _b64(data: bytes) -> bytes:
    return base64.b64encode(data).rstrip(b"=")


def _unb64(text: bytes) -> bytes:
    if b"=" in text or b"\r" in text:
        raise ValueError("not canonical unpadded base64")
    data = base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)
    if _b64(data) != text:
        raise ValueError("not canonical base64")
    return data


def _hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt or None, info=info).derive(ikm)


def _chunk_nonce(index: int, last: bool) -> bytes:
    return index.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


def _header(file_key: bytes, recipient: X25519PublicKey) -> bytes:
    ephemeral = X25519PrivateKey.generate()
    share = _raw(ephemeral.public_key())
    shared = ephemeral.exchange(recipient)
    wrap_key = _hkdf(shared, share + _raw(recipient), X25519_INFO)
    body = ChaCha20Poly1305(wrap_key).encrypt(b"\x00" * 12, file_key, None)
    head = VERSION_LINE + b"\n-> X25519 " + _b64(share) + b"\n" + _b64(body) + b"\n---"
    mac = hmac.new(_hkdf(file_key, b"", b"header"), head, hashlib.sha256).digest()
    return head + b" " + _b64(mac) + b"\n"


class SegmentFile(Protocol):
    """A segment file object a muxer writes into (what :meth:`SegmentEncryption.open` returns)."""

    def write(self, data: bytes) -> int: ...

    def close(self) -> None: ...


# -- the camera's side -----------------------------------------------------------------------------
class EncryptingWriter:
    """A write-only binary file object: plaintext in, an age file out to ``sink`` (see the module doc).

    Plaintext waits in RAM until a 64 KiB chunk is full, so at most one chunk (plus what the
    muxer buffers) is lost by a power cut; ``close()`` seals the final chunk and closes ``sink``.
    ``plain_sha256`` / ``plain_bytes`` are the plaintext's, known after ``close()``.
    """

    def __init__(self, sink: BinaryIO, recipient: X25519PublicKey,
                 on_close: Callable[[str, int], None] | None = None) -> None:
        self._sink = sink
        self._on_close = on_close
        file_key = os.urandom(16)
        nonce = os.urandom(16)
        self._aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
        self._buf = bytearray()
        self._index = 0
        self._hash = hashlib.sha256()
        self.plain_bytes = 0
        self.plain_sha256: str | None = None
        self.closed = False
        sink.write(_header(file_key, recipient) + nonce)

    @classmethod
    def create(cls, path: Path, recipient: X25519PublicKey,
               on_close: Callable[[str, int], None] | None = None) -> EncryptingWriter:
        return cls(path.open("xb"), recipient, on_close)

    @property
    def name(self) -> str:
        return str(getattr(self._sink, "name", "<stream>"))

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self.closed:
            raise ValueError("write to a closed EncryptingWriter")
        view = memoryview(data).cast("B")
        n = len(view)
        self._hash.update(view)
        self.plain_bytes += n
        self._buf += view
        # a full chunk is sealed only once more data follows: the last chunk may be full-size
        while len(self._buf) > CHUNK:
            self._seal(bytes(self._buf[:CHUNK]), last=False)
            del self._buf[:CHUNK]
        return n

    def flush(self) -> None:
        if not self.closed:
            self._sink.flush()

    def fileno(self) -> int:
        return self._sink.fileno()

    def _seal(self, chunk: bytes, last: bool) -> None:
        self._sink.write(self._aead.encrypt(_chunk_nonce(self._index, last), chunk, None))
        self._index += 1

    def close(self) -> None:
        if self.closed:
            return
        try:
            self._seal(bytes(self._buf), last=True)
            self._buf.clear()
            self._sink.flush()
            self.plain_sha256 = self._hash.hexdigest()
        finally:
            self.closed = True
            self._sink.close()
        if self._on_close is not None:
            self._on_close(self.plain_sha256, self.plain_bytes)

    def __enter__(self) -> EncryptingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SegmentEncryption:
    """The camera's side, as the recorder uses it: opens each segment file as an age file to base's
    key (:meth:`open`, ``segment-00000.mp4.age``) and keeps its plaintext SHA-256 and size from
    when the writer closes until the recording takes them for the manifest (:meth:`take`).

    Threads: the file is written and closed on the footage path's thread (the loop, or the
    camera's encoder thread) and taken on the recorder's hasher thread; ``_lock`` guards ``_plain``.
    """

    def __init__(self, recipient: X25519PublicKey) -> None:
        self.recipient = recipient
        self.recipient_text = format_recipient(recipient)
        self._lock = threading.Lock()
        self._plain: dict[str, tuple[str, int]] = {}

    def file_name(self, plain_name: str) -> str:
        return plain_name + SUFFIX

    def open(self, path: Path) -> EncryptingWriter:
        key = str(path)

        def closed(sha256: str, size: int) -> None:
            with self._lock:
                self._plain[key] = (sha256, size)

        return EncryptingWriter.create(path, self.recipient, closed)

    def take(self, path: Path) -> tuple[str, int] | None:
        """(plaintext SHA-256, bytes) of a segment whose writer closed; None if it never closed
        (a crash, a failed write: the plaintext hash is unknown, the ciphertext hash still signed)."""
        with self._lock:
            return self._plain.pop(str(path), None)

    def manifest_entry(self) -> dict[str, str]:
        return {"scheme": SCHEME, "recipient": self.recipient_text}


def encrypt_stream(src: BinaryIO, dst: BinaryIO, recipient: X25519PublicKey) -> tuple[str, int]:
    """Encrypt all of ``src`` to ``dst`` (closed at the end); returns (plaintext SHA-256, bytes)."""
    w = EncryptingWriter(dst, recipient)
    with w:
        for block in iter(lambda: src.read(CHUNK), b""):
            w.write(block)
    assert w.plain_sha256 is not None
    return w.plain_sha256, w.plain_bytes


# -- base's side -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Decrypted:
    plain_sha256: str
    plain_bytes: int
    chunks: int


def _read_header(src: BinaryIO, name: str) -> tuple[list[tuple[list[bytes], bytes]], bytes, bytes]:
    """(stanzas as (args, body), the header bytes the MAC covers, the MAC)."""
    def line() -> bytes:
        text = src.readline(MAX_HEADER)
        if not text.endswith(b"\n"):
            raise DecryptError(f"{name}: not an age file (header truncated or too long)")
        return text[:-1]

    first = line()
    if first != VERSION_LINE:
        raise DecryptError(f"{name}: not an age v1 file (starts {first[:24]!r})")
    covered = first + b"\n"
    stanzas: list[tuple[list[bytes], bytes]] = []
    while True:
        text = line()
        if text.startswith(b"--- "):
            covered += b"---"
            try:
                mac = _unb64(text[4:])
            except ValueError as exc:
                raise DecryptError(f"{name}: malformed header MAC ({exc})") from exc
            return stanzas, covered, mac
        if not text.startswith(b"-> "):
            raise DecryptError(f"{name}: malformed age header line {text[:24]!r}")
        covered += text + b"\n"
        args = text[3:].split(b" ")
        body = b""
        while True:
            part = line()
            covered += part + b"\n"
            try:
                body += _unb64(part)
            except ValueError as exc:
                raise DecryptError(f"{name}: malformed stanza body ({exc})") from exc
            if len(part) < 64:
                break
            if len(covered) > MAX_HEADER:
                raise DecryptError(f"{name}: age header too long")
        stanzas.append((args, body))


def _file_key(stanzas: list[tuple[list[bytes], bytes]], identity: X25519PrivateKey, name: str) -> bytes:
    ours = _raw(identity.public_key())
    for args, body in stanzas:
        if args[:1] != [b"X25519"] or len(args) != 2 or len(body) != 32:
            continue
        try:
            share = _unb64(args[1])
            peer = X25519PublicKey.from_public_bytes(share)
            shared = identity.exchange(peer)
        except ValueError:
            continue  # malformed share, or the all-zero shared secret age forbids
        try:
            return ChaCha20Poly1305(_hkdf(shared, share + ours, X25519_INFO)).decrypt(b"\x00" * 12, body, None)
        except InvalidTag:
            continue
    raise DecryptError(f"{name}: not encrypted to this key (no X25519 stanza opens with base's key "
                       f"{format_recipient(identity.public_key())})")


def iter_plaintext(src: BinaryIO, identity: X25519PrivateKey, name: str = "segment") -> Iterator[bytes]:
    """The plaintext of the age stream ``src``, chunk by chunk, each authenticated before it is
    yielded. Raises :class:`DecryptError` naming ``name`` and the chunk (0-based) that fails; a
    consumer must discard what it got when that happens (the file was changed or cut short)."""
    stanzas, covered, mac = _read_header(src, name)
    file_key = _file_key(stanzas, identity, name)
    if not hmac.compare_digest(hmac.new(_hkdf(file_key, b"", b"header"), covered, hashlib.sha256).digest(), mac):
        raise DecryptError(f"{name}: the age header's MAC does not verify (the header was changed)")
    nonce = src.read(16)
    if len(nonce) != 16:
        raise DecryptError(f"{name}: truncated before the payload (no payload nonce)")
    aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
    size = CHUNK + TAG
    index = 0
    cur = src.read(size)
    while True:
        nxt = src.read(size) if len(cur) == size else b""
        last = not nxt
        where = f"{name}: chunk {index}"
        if len(cur) < TAG:
            raise DecryptError(f"{where}: truncated ({len(cur)} bytes; the final chunk is missing)")
        try:
            plain = aead.decrypt(_chunk_nonce(index, last), cur, None)
        except InvalidTag:
            raise DecryptError(_chunk_problem(aead, where, index, cur, last)) from None
        if last and not plain and index > 0:
            raise DecryptError(f"{where}: an empty final chunk after data (not a valid age stream)")
        yield plain
        if last:
            return
        cur, index = nxt, index + 1


def _chunk_problem(aead: ChaCha20Poly1305, where: str, index: int, data: bytes, last: bool) -> str:
    try:
        aead.decrypt(_chunk_nonce(index, not last), data, None)
    except InvalidTag:
        return f"{where} does not authenticate (changed, or chunks reordered or replaced)"
    if last:
        return f"{where} is not the final chunk: the file was truncated (its final chunk is missing)"
    return f"{where} is the final chunk but data follows it (appended)"


def decrypt_stream(src: BinaryIO, dst: BinaryIO | None, identity: X25519PrivateKey,
                   name: str = "segment") -> Decrypted:
    """Decrypt ``src`` into ``dst`` (None: only check it); returns the plaintext's SHA-256 and size."""
    h = hashlib.sha256()
    n = chunks = 0
    for plain in iter_plaintext(src, identity, name):
        h.update(plain)
        n += len(plain)
        chunks += 1
        if dst is not None:
            dst.write(plain)
    return Decrypted(h.hexdigest(), n, chunks)


def plaintext_name(name: str) -> str:
    """``segment-00000.mp4.age`` -> ``segment-00000.mp4``."""
    return name[: -len(SUFFIX)] if name.endswith(SUFFIX) else name


def decrypt_file(src: Path, identity: X25519PrivateKey, dst: Path | None = None) -> Decrypted:
    """Decrypt the segment ``src`` to ``dst`` (default: beside it without ``.age``), atomically:
    written to ``dst.part`` and renamed only when every chunk authenticated; nothing is left
    behind on failure. The error names the file and the chunk."""
    dst = dst if dst is not None else src.with_name(plaintext_name(src.name))
    part = dst.with_name(dst.name + ".part")
    try:
        with src.open("rb") as fin, part.open("wb") as fout:
            result = decrypt_stream(fin, fout, identity, str(src))
            fout.flush()
            os.fsync(fout.fileno())
        os.replace(part, dst)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return result
