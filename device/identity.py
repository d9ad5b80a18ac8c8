"""The camera's identity: one Ed25519 key pair that signs every marker and every manifest.

* ``bodycam provision`` (:func:`provision`) generates the key pair once: the private key is
  written as PKCS#8 PEM with mode 0600 (owned by the service user when ``--owner`` is given),
  the public key beside it (``device.pub``, PEM), and a certificate signing request for the MQTT
  client certificate (``device.csr``, CN = the device id) that the fleet's CA signs.
* The service finds the key (:func:`key_path`) in the systemd credential ``bodycam-device-key``
  (``LoadCredential=`` / ``LoadCredentialEncrypted=``, read from ``$CREDENTIALS_DIRECTORY``)
  when there is one, else at ``identity.key_file`` (default ``<data_dir>/identity/device.key``).
  A missing key is a one-line start-up error naming ``bodycam provision``; a key file that group
  or others may read is refused (like ssh).
* The **key id** is the first 16 hex digits of the SHA-256 of the raw 32-byte public key: a
  marker's ``key`` and a manifest's ``key`` name the key that signed them (rotation: a new key
  gives a new id; base keeps every registered key with its validity).
* Signatures are standard base64 (RFC 4648, padded) of the 64-byte Ed25519 signature.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import pwd
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import NameOID

from bodycam.device.errors import ConfigError, UsageError
from bodycam.device.settings import require

CREDENTIAL_NAME = "bodycam-device-key"
KEY_NAME = "device.key"
#: at most this many keys are read from a folder of trusted keys
MAX_TRUSTED = 16
#: public keys the camera trusts, by key id (base's model-signing keys, base's custody keys)
TrustedKeys = Mapping[str, Ed25519PublicKey]


class IdentityError(ConfigError):
    """The device key is missing, unreadable, too open or not an Ed25519 key."""


@dataclass(frozen=True)
class IdentityConfig:
    """``[identity]``: where the device's private key is ("" = ``<data_dir>/identity/device.key``)."""

    key_file: str = ""

    def __post_init__(self) -> None:
        require(isinstance(self.key_file, str), "identity.key_file", "must be a path")


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


class Signer:
    """Signs bytes with the device's private key; ``key_id`` names the key."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.public = private.public_key()
        self.key_id = key_id(self.public)

    def sign(self, data: bytes) -> str:
        return base64.b64encode(self._private.sign(data)).decode("ascii")

    def public_pem(self) -> bytes:
        return public_pem(self.public)

    @classmethod
    def generate(cls) -> Signer:
        return cls(Ed25519PrivateKey.generate())


def public_pem(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def verify(public: Ed25519PublicKey, data: bytes, sig: str) -> bool:
    """True when ``sig`` (base64) is ``public``'s signature over ``data``."""
    try:
        raw = base64.b64decode(sig.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return False
    if len(raw) != 64:
        return False
    try:
        public.verify(raw, data)
    except InvalidSignature:
        return False
    return True


def load_public(path: Path) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM file (``device.pub``); IdentityError names the file."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise IdentityError(f"{path}: cannot read the public key ({exc.strerror or exc})") from exc
    return parse_public(data, str(path))


def parse_public(data: bytes, where: str) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise IdentityError(f"{where}: not a PEM public key ({exc})") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise IdentityError(f"{where}: not an Ed25519 public key ({type(key).__name__})")
    return key


def trusted_keys(folder: Path, setting: str) -> dict[str, Ed25519PublicKey]:
    """Every ``*.pem`` in ``folder`` by key id; a bad file, or more than :data:`MAX_TRUSTED` of them (a key
    silently left out would be a key not trusted), is a ConfigError naming ``setting``; no folder: none."""
    if not folder.is_dir():
        return {}
    keys: dict[str, Ed25519PublicKey] = {}
    pems = sorted(folder.glob("*.pem"))
    if len(pems) > MAX_TRUSTED:
        raise ConfigError(f"{setting}: {folder} holds {len(pems)} key files, at most {MAX_TRUSTED} are read: remove "
                          "the keys no longer in use")
    for pem in pems:
        try:
            public = load_public(pem)
        except IdentityError as exc:
            raise ConfigError(f"{setting}: {exc}") from exc
        keys[key_id(public)] = public
    return keys


def trust_key(src: Path, folder: Path) -> tuple[str, Path]:
    """Copy the public key ``src`` (PEM, Ed25519) into ``folder`` as ``<key id>.pem``; its id and the copy."""
    public = load_public(src)
    kid = key_id(public)
    dest = folder / f"{kid}.pem"
    if not dest.exists() and folder.is_dir() and len(list(folder.glob("*.pem"))) >= MAX_TRUSTED:
        raise IdentityError(f"{folder}: already {MAX_TRUSTED} trusted keys, the most that are read: remove the keys "
                            "no longer in use first")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(public_pem(public))
    except OSError as exc:
        raise IdentityError(f"{folder}: cannot write the trusted key ({exc.strerror or exc})") from exc
    return kid, dest


def key_path(cfg: IdentityConfig, data_dir: Path, environ: dict[str, str] | None = None) -> Path:
    """Where the service reads its key: the systemd credential first, then ``identity.key_file``."""
    env = os.environ if environ is None else environ
    creds = env.get("CREDENTIALS_DIRECTORY")
    if creds:
        cred = Path(creds) / CREDENTIAL_NAME
        if cred.exists():
            return cred
    return Path(cfg.key_file) if cfg.key_file else data_dir / "identity" / KEY_NAME


def load_signer(path: Path) -> Signer:
    """The device's signer from its PEM private key; a one-line IdentityError otherwise."""
    try:
        st = path.stat()
    except FileNotFoundError as exc:
        raise IdentityError(
            f"{path}: no device key: run 'bodycam provision' (markers and footage are signed with it)"
        ) from exc
    except OSError as exc:
        raise IdentityError(f"{path}: cannot read the device key ({exc.strerror or exc})") from exc
    if st.st_mode & 0o077:
        raise IdentityError(
            f"{path}: the device key may be read by others (mode {stat.S_IMODE(st.st_mode):04o}): "
            f"chmod 600 {path}"
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise IdentityError(f"{path}: cannot read the device key ({exc.strerror or exc})") from exc
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise IdentityError(f"{path}: not a PEM private key without a password ({exc})") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise IdentityError(f"{path}: not an Ed25519 private key ({type(key).__name__})")
    return Signer(key)


def csr_pem(signer_key: Ed25519PrivateKey, device_id: str) -> bytes:
    """A PKCS#10 request for the MQTT client certificate: CN = the device id (the MQTT identity)."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)])
    req = x509.CertificateSigningRequestBuilder().subject_name(name).sign(signer_key, None)
    return req.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class Provisioned:
    key_file: Path
    public_file: Path
    csr_file: Path
    key_id: str
    public_pem: bytes


def provision(path: Path, device_id: str, *, owner: str | None = None, force: bool = False,
              private: Ed25519PrivateKey | None = None) -> Provisioned:
    """Generate the key pair at ``path`` (0600), ``device.pub`` and ``device.csr`` beside it.

    An existing key is never overwritten unless ``force`` (a new key is a new identity: base
    must register it; ``bodycam provision --force`` first writes the key hand-over,
    ``footage/handover.py``, which is why the new ``private`` key may be given). ``owner`` (a user
    name) becomes the owner of the key and its folder.
    """
    uid = gid = -1
    if owner is not None:
        try:
            pw = pwd.getpwnam(owner)
        except KeyError as exc:
            raise UsageError(f"--owner: no user named {owner!r}") from exc
        uid, gid = pw.pw_uid, pw.pw_gid
    if path.exists() and not force:
        raise UsageError(f"{path}: a device key exists already (key id {load_signer(path).key_id}); "
                         "--force makes a new identity that base must register again")
    if private is None:
        private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(path.name + ".tmp")
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, pem)
            os.fsync(fd)
            if owner is not None:
                os.fchown(fd, uid, gid)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        if owner is not None:
            os.chown(path.parent, uid, gid)
        signer = Signer(private)
        pub = path.with_suffix(".pub")
        pub.write_bytes(signer.public_pem())
        csr = path.with_suffix(".csr")
        csr.write_bytes(csr_pem(private, device_id))
    except OSError as exc:
        raise IdentityError(f"{path}: cannot write the device key ({exc.strerror or exc})") from exc
    return Provisioned(path, pub, csr, signer.key_id, signer.public_pem())


def ensure_key(path: Path, device_id: str) -> Signer:
    """The key at ``path``, provisioned first when there is none (the simulator's throwaway key)."""
    if not path.exists():
        provision(path, device_id)
    return load_signer(path)
