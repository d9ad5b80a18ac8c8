"""Footage encrypted at rest (device/footage/atrest.py): the age v1 format checked against rage
(pyrage) both ways, keys, every tamper named with its chunk, and the firmware's recordings: nothing
plaintext on the card, `bodycam verify` on the encrypted and on the decrypted form."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import av
import pyrage
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from bodycam.device.config import AppConfig
from bodycam.device.errors import ConfigError
from bodycam.device.footage import atrest
from bodycam.device.footage.atrest import (
    CHUNK,
    TAG,
    DecryptError,
    EncryptingWriter,
    KeyFileError,
    decrypt_file,
    decrypt_stream,
    format_identity,
    format_recipient,
    load_identity,
    load_recipient,
)
from bodycam.device.footage.recording_state import RecordingConfig
from bodycam.device.footage.segment_writer import sha256_of
from bodycam.device.identity import load_public
from bodycam.device.verify import Report, verify_path
from bodycam.hw_sim.sim_run import SimOptions, run_clip

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "range_demo.mp4"
SIZES = (0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 12345)


class _Keep(io.BytesIO):
    def close(self) -> None:  # keep the bytes readable after the writer closes its sink
        pass


def encrypt(data: bytes, key: X25519PrivateKey, step: int = 7777) -> bytes:
    sink = _Keep()
    w = EncryptingWriter(sink, key.public_key())
    for i in range(0, len(data), step):
        w.write(data[i:i + step])
    w.close()
    return sink.getvalue()


def header_len(blob: bytes) -> int:
    """Bytes before the first payload chunk: the header, then the 16-byte payload nonce."""
    return blob.index(b"\n---") + blob[blob.index(b"\n---"):].index(b"\n", 1) + 1 + 16


@pytest.mark.parametrize("size", SIZES)
def test_our_age_files_open_with_rage_and_rage_files_open_with_ours(size: int) -> None:
    key = X25519PrivateKey.generate()
    identity = pyrage.x25519.Identity.from_str(format_identity(key))
    assert str(identity.to_public()) == format_recipient(key.public_key())
    data = os.urandom(size)
    blob = encrypt(data, key)
    assert blob.startswith(b"age-encryption.org/v1\n-> X25519 ")
    assert pyrage.decrypt(blob, [identity]) == data
    theirs = pyrage.encrypt(data, [identity.to_public()])
    out = io.BytesIO()
    got = decrypt_stream(io.BytesIO(theirs), out, key)
    assert out.getvalue() == data and got.plain_bytes == size
    assert got.chunks == max(1, -(-size // CHUNK))


def test_the_writer_reports_the_plaintext_hash_and_seals_a_full_last_chunk_as_final() -> None:
    key = X25519PrivateKey.generate()
    sink = _Keep()
    seen: list[tuple[str, int]] = []
    w = EncryptingWriter(sink, key.public_key(), on_close=lambda h, n: seen.append((h, n)))
    data = os.urandom(2 * CHUNK)
    w.write(data)
    w.close()
    import hashlib

    assert seen == [(hashlib.sha256(data).hexdigest(), 2 * CHUNK)] and w.plain_sha256 == seen[0][0]
    blob = sink.getvalue()
    assert len(blob) == header_len(blob) + 2 * (CHUNK + TAG)  # two chunks, no empty third one
    with pytest.raises(ValueError):
        w.write(b"x")


def three_chunks() -> tuple[X25519PrivateKey, bytes, int]:
    key = X25519PrivateKey.generate()
    blob = encrypt(os.urandom(2 * CHUNK + 5000), key)
    return key, blob, header_len(blob)


def fails(blob: bytes, key: X25519PrivateKey) -> str:
    with pytest.raises(DecryptError) as err:
        decrypt_stream(io.BytesIO(blob), None, key, "segment-00003.mp4.age")
    return str(err.value)


def test_a_flipped_byte_is_named_with_its_chunk() -> None:
    key, blob, h = three_chunks()
    bad = bytearray(blob)
    bad[h + CHUNK + TAG + 100] ^= 1
    assert fails(bytes(bad), key) == ("segment-00003.mp4.age: chunk 1 does not authenticate "
                                      "(changed, or chunks reordered or replaced)")


def test_reordered_chunks_fail_at_the_first_one_out_of_place() -> None:
    key, blob, h = three_chunks()
    c0, c1 = blob[h:h + CHUNK + TAG], blob[h + CHUNK + TAG:h + 2 * (CHUNK + TAG)]
    swapped = blob[:h] + c1 + c0 + blob[h + 2 * (CHUNK + TAG):]
    assert "chunk 0 does not authenticate" in fails(swapped, key)


def test_a_dropped_final_chunk_is_called_a_truncation() -> None:
    key, blob, h = three_chunks()
    message = fails(blob[:h + 2 * (CHUNK + TAG)], key)
    assert "chunk 1 is not the final chunk: the file was truncated" in message


def test_a_file_cut_mid_chunk_or_before_the_payload_fails() -> None:
    key, blob, h = three_chunks()
    assert "chunk 2 does not authenticate" in fails(blob[:-1], key)
    assert "chunk 2: truncated" in fails(blob[:h + 2 * (CHUNK + TAG) + 3], key)
    assert "no payload nonce" in fails(blob[:h - 3], key)
    assert "not an age" in fails(blob[:10], key)


def test_data_appended_after_the_final_chunk_is_named() -> None:
    key = X25519PrivateKey.generate()
    full = encrypt(os.urandom(CHUNK), key)  # one full-size final chunk: appended data is a whole chunk more
    assert "chunk 0 is the final chunk but data follows it" in fails(full + os.urandom(100), key)
    short = encrypt(os.urandom(1000), key)  # a short final chunk: the appended bytes become part of it
    assert "chunk 0 does not authenticate" in fails(short + os.urandom(100), key)


def test_a_changed_header_or_another_key_is_refused() -> None:
    key, blob, _h = three_chunks()
    other = X25519PrivateKey.generate()
    assert "not encrypted to this key" in fails(blob, other)
    forged = blob.replace(b"age-encryption.org/v1\n-> X25519 ", b"age-encryption.org/v1\n-> x-grease a\nAA\n-> X25519 ", 1)
    assert "header's MAC does not verify" in fails(forged, key)


def test_decrypt_file_is_atomic_and_names_the_file(tmp_path: Path) -> None:
    key, blob, _h = three_chunks()
    src = tmp_path / "segment-00000.mp4.age"
    src.write_bytes(blob[:-40])
    with pytest.raises(DecryptError, match=r"segment-00000\.mp4\.age: chunk 2"):
        decrypt_file(src, key)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["segment-00000.mp4.age"], "nothing half-decrypted left"
    src.write_bytes(blob)
    got = decrypt_file(src, key)
    assert (tmp_path / "segment-00000.mp4").stat().st_size == got.plain_bytes == 2 * CHUNK + 5000


def test_keys_load_with_one_line_errors_naming_the_file_and_bodycam_provision(tmp_path: Path) -> None:
    key = X25519PrivateKey.generate()
    missing = tmp_path / "identity" / "base.age.pub"
    with pytest.raises(ConfigError) as err:
        load_recipient(missing)
    assert str(missing) in str(err.value) and "bodycam provision --base-key" in str(err.value)
    assert "\n" not in str(err.value)
    for bad in ("age1qqqq\n", "AGE-SECRET-KEY-1" + "Q" * 58 + "\n", "", "age1 age1\n",
                format_recipient(key.public_key())[:-1] + "x\n"):
        missing.parent.mkdir(exist_ok=True)
        missing.write_text(bad)
        with pytest.raises(KeyFileError, match="malformed"):
            load_recipient(missing)
    atrest.install_recipient(missing, format_recipient(key.public_key()))
    assert format_recipient(load_recipient(missing)) == format_recipient(key.public_key())
    ident = tmp_path / "base.age.key"
    recipient = atrest.generate_identity_file(ident)
    assert ident.stat().st_mode & 0o777 == 0o600
    assert format_recipient(load_identity(ident).public_key()) == recipient
    pyrage.x25519.Identity.from_str(ident.read_text().splitlines()[-1])  # the text age-keygen writes
    with pytest.raises(KeyFileError, match="exists already"):
        atrest.generate_identity_file(ident)
    atrest.install_recipient(missing, str(ident))  # the identity file's "# public key:" line
    assert missing.read_text() == recipient + "\n"


def test_provision_installs_base_key_without_touching_an_existing_device_key(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[device]\nid = "cam-9"\ndata_dir = "{tmp_path / "data"}"\n')
    key = X25519PrivateKey.generate()
    cmd = [sys.executable, "-m", "bodycam.device.cli", "provision", "--config", str(cfg)]
    first = subprocess.run([*cmd, "--base-key", format_recipient(key.public_key())], capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    device_key = (tmp_path / "data" / "identity" / "device.key").read_bytes()
    other = X25519PrivateKey.generate()
    again = subprocess.run([*cmd, "--base-key", format_recipient(other.public_key())], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "data" / "identity" / "device.key").read_bytes() == device_key
    installed = load_recipient(tmp_path / "data" / "identity" / "base.age.pub")
    assert format_recipient(installed) == format_recipient(other.public_key())
    bad = subprocess.run([*cmd, "--base-key", "age1nope"], capture_output=True, text=True)
    assert bad.returncode != 0 and "--base-key" in bad.stderr and "Traceback" not in bad.stderr


# -- the firmware's recordings ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("atrest") / "data"
    cfg = AppConfig(recording=RecordingConfig(segment_s=2.0, pre_event_s=5.0))
    cfg = replace(cfg, device=replace(cfg.device, id="cam-a1"))
    run_clip(SimOptions(clip=EXAMPLE, out=out, config=cfg, broker=None, gnss=False, encrypt=True,
                        start_time="2026-03-01T10:00:00.000Z"))
    return out


@pytest.fixture
def data(made: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "data"
    shutil.copytree(made, copy)
    return copy


def base_key(data: Path) -> X25519PrivateKey:
    return load_identity(data / "state" / "identity" / "base.age.key")


def check(data: Path, decrypt: bool = False) -> Report:
    return verify_path(data, load_public(data / "state" / "identity" / "device.pub"), "test",
                       base_key(data) if decrypt else None)


def codes(report: Report) -> set[tuple[str, str]]:
    return {(f.code, f.where) for r in report.recordings for f in r.findings if f.level == "fail"}


def the_recording(data: Path) -> Path:
    (rec,) = sorted(p for p in (data / "recordings").iterdir() if p.is_dir())
    return rec


@pytest.mark.integration
def test_nothing_plaintext_reaches_the_card(made: Path) -> None:
    rec = the_recording(made)
    segments = sorted(rec.glob("segment-*"))
    assert len(segments) >= 3 and all(p.name.endswith(".mp4.age") for p in segments)
    # what any MP4/H.264 from this firmware holds in clear: box names, the muxer's and encoder's tags
    markers = (b"ftyp", b"moof", b"mdat", b"isom", b"Lavf", b"x264", b"avc1")
    for path in (made / "recordings").rglob("*"):
        if path.is_file():
            blob = path.read_bytes()
            assert not [m for m in markers if m in blob], path
    # ... and the same footage decrypted holds them: the test would see plaintext
    key = base_key(made)
    with segments[0].open("rb") as fh:
        plain = b"".join(atrest.iter_plaintext(fh, key))
    assert b"ftyp" in plain and b"moof" in plain


@pytest.mark.integration
def test_manifest_signs_both_hashes_and_base_decrypts_playable_footage(data: Path, tmp_path: Path) -> None:
    rec = the_recording(data)
    manifest = json.loads((rec / "manifest.json").read_text())
    key = base_key(data)
    assert manifest["encryption"] == {"scheme": "age-v1-x25519", "recipient": format_recipient(key.public_key())}
    frames = 0
    for seg in manifest["segments"]:
        enc = rec / seg["file"]
        assert seg["sha256"] == sha256_of(enc) and seg["bytes"] == enc.stat().st_size
        got = decrypt_file(enc, key, tmp_path / "plain.mp4")
        assert (got.plain_sha256, got.plain_bytes) == (seg["plain_sha256"], seg["plain_bytes"])
        with av.open(str(tmp_path / "plain.mp4")) as c:
            frames += sum(1 for _ in c.demux(video=0) if _.size)
        assert pyrage.decrypt(enc.read_bytes(), [pyrage.x25519.Identity.from_str(format_identity(key))]) == \
            (tmp_path / "plain.mp4").read_bytes()
    assert frames == sum(s["frames"] for s in manifest["segments"])
    assert check(data).ok and check(data, decrypt=True).ok


@pytest.mark.integration
def test_verify_on_the_encrypted_form_names_a_changed_chunk(data: Path) -> None:
    rec = the_recording(data)
    seg = rec / "segment-00001.mp4.age"
    blob = bytearray(seg.read_bytes())
    blob[header_len(bytes(blob)) + 10] ^= 0x40
    seg.write_bytes(bytes(blob))
    assert ("segment_hash", seg.name) in codes(check(data))
    report = check(data, decrypt=True)
    found = [f.message for r in report.recordings for f in r.findings if f.code == "segment_decrypt"]
    assert found == ["segment-00001.mp4.age: chunk 0 does not authenticate (changed, or chunks reordered or replaced)"]


@pytest.mark.integration
def test_verify_with_the_key_catches_footage_re_encrypted_by_someone_else(data: Path) -> None:
    """The ciphertext hash alone cannot tell who encrypted: the signed plaintext hash can."""
    rec = the_recording(data)
    seg = rec / "segment-00000.mp4.age"
    key = base_key(data)
    with seg.open("rb") as fh:
        plain = b"".join(atrest.iter_plaintext(fh, key))
    forged = bytearray(plain)
    forged[-1] ^= 1
    seg.write_bytes(encrypt(bytes(forged), key))
    assert {"segment_hash", "segment_plaintext_hash"} <= {c for c, w in codes(check(data, decrypt=True))
                                                          if w == seg.name}


@pytest.mark.integration
def test_verify_on_the_decrypted_form(data: Path) -> None:
    rec = the_recording(data)
    key = base_key(data)
    for enc in sorted(rec.glob("*.age")):
        decrypt_file(enc, key)
    assert check(data).ok, "ciphertext and plaintext side by side (base keeps both)"
    for enc in sorted(rec.glob("*.age")):
        enc.unlink()
    report = check(data)
    assert report.ok, codes(report)
    plain = rec / "segment-00002.mp4"
    with plain.open("r+b") as fh:
        fh.seek(500)
        b = fh.read(1)
        fh.seek(500)
        fh.write(bytes([b[0] ^ 1]))
    assert ("segment_hash", "segment-00002.mp4") in codes(check(data))
    (rec / "segment-00003.mp4").unlink()
    assert ("segment_missing", "segment-00003.mp4.age") in codes(check(data))
