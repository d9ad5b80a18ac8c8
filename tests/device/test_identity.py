"""Device identity: provisioning, loading the key (file or systemd credential), CSR, `bodycam provision`."""

from __future__ import annotations

import json
import os
import pwd
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.x509.oid import NameOID

from bodycam.device.errors import UsageError
from bodycam.device.identity import (
    CREDENTIAL_NAME,
    IdentityConfig,
    IdentityError,
    Signer,
    key_id,
    key_path,
    load_public,
    load_signer,
    provision,
    verify,
)


def test_provision_writes_a_0600_key_its_public_key_and_a_csr(tmp_path: Path) -> None:
    made = provision(tmp_path / "id" / "device.key", "cam-07")
    assert stat.S_IMODE(made.key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(made.key_file.parent.stat().st_mode) == 0o700
    signer = load_signer(made.key_file)
    assert signer.key_id == made.key_id == key_id(load_public(made.public_file))
    assert len(made.key_id) == 16 and int(made.key_id, 16) >= 0
    sig = signer.sign(b"hello")
    assert verify(load_public(made.public_file), b"hello", sig)
    assert not verify(load_public(made.public_file), b"hellO", sig)
    csr = x509.load_pem_x509_csr(made.csr_file.read_bytes())
    assert csr.is_signature_valid
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "cam-07"
    pub = csr.public_key()
    assert isinstance(pub, Ed25519PublicKey) and key_id(pub) == made.key_id


def test_an_existing_key_is_never_replaced_without_force(tmp_path: Path) -> None:
    first = provision(tmp_path / "device.key", "cam-07")
    with pytest.raises(UsageError, match=f"exists already \\(key id {first.key_id}\\)"):
        provision(tmp_path / "device.key", "cam-07")
    assert load_signer(first.key_file).key_id == first.key_id
    second = provision(tmp_path / "device.key", "cam-07", force=True)
    assert second.key_id != first.key_id


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_the_key_is_owned_by_the_service_user(tmp_path: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    made = provision(tmp_path / "id" / "device.key", "cam-07", owner="nobody")
    assert made.key_file.stat().st_uid == nobody.pw_uid
    assert made.key_file.parent.stat().st_uid == nobody.pw_uid
    with pytest.raises(UsageError, match="no user named"):
        provision(tmp_path / "x" / "device.key", "cam-07", owner="no-such-user-here")


def test_loading_refuses_a_missing_open_or_foreign_key(tmp_path: Path) -> None:
    with pytest.raises(IdentityError, match="no device key: run 'bodycam provision'"):
        load_signer(tmp_path / "absent.key")
    made = provision(tmp_path / "device.key", "cam-07")
    made.key_file.chmod(0o640)
    with pytest.raises(IdentityError, match=r"may be read by others .*chmod 600"):
        load_signer(made.key_file)
    made.key_file.chmod(0o600)
    made.key_file.write_bytes(b"not a key")
    with pytest.raises(IdentityError, match="not a PEM private key"):
        load_signer(made.key_file)
    with pytest.raises(IdentityError, match="not a PEM public key"):
        load_public(made.key_file)


def test_the_systemd_credential_comes_first(tmp_path: Path) -> None:
    cfg = IdentityConfig()
    assert key_path(cfg, tmp_path, {}) == tmp_path / "identity" / "device.key"
    assert key_path(IdentityConfig(key_file="/etc/k"), tmp_path, {}) == Path("/etc/k")
    creds = tmp_path / "creds"
    creds.mkdir()
    assert key_path(cfg, tmp_path, {"CREDENTIALS_DIRECTORY": str(creds)}) == tmp_path / "identity" / "device.key"
    made = provision(creds / CREDENTIAL_NAME, "cam-07")
    path = key_path(IdentityConfig(key_file="/etc/k"), tmp_path, {"CREDENTIALS_DIRECTORY": str(creds)})
    assert path == made.key_file and load_signer(path).key_id == made.key_id


def test_signatures_of_one_key_do_not_verify_with_another() -> None:
    a, b = Signer.generate(), Signer.generate()
    assert a.key_id != b.key_id
    assert not verify(b.public, b"x", a.sign(b"x"))
    assert not verify(a.public, b"x", "not base64!")
    assert not verify(a.public, b"x", "c2ln")  # base64, but not 64 bytes


def test_bodycam_provision_prints_the_key_id_and_public_key(tmp_path: Path) -> None:
    key = tmp_path / "id" / "device.key"
    res = subprocess.run([sys.executable, "-m", "bodycam.device.cli", "provision", "--key-file", str(key),
                          "--device", "cam-09", "--json"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["key_id"] == load_signer(key).key_id and out["device"] == "cam-09"
    assert out["public_key_pem"].startswith("-----BEGIN PUBLIC KEY-----")
    again = subprocess.run([sys.executable, "-m", "bodycam.device.cli", "provision", "--key-file", str(key),
                            "--device", "cam-09"], capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and "exists already" in again.stderr
    bad = subprocess.run([sys.executable, "-m", "bodycam.device.cli", "provision", "--key-file",
                          str(tmp_path / "k2"), "--device", "no/slash"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--device" in bad.stderr and "Traceback" not in bad.stderr
