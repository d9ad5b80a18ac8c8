"""Base's own signing keys (Ed25519, PKCS#8 PEM, mode 0600), one per job:

* the **model-signing key** (``bodycam-base model keygen``): signs approved model packages
  (``device/model_package.py``); it may be kept offline, used only when an admin approves a model;
* the **custody key** (``bodycam-base custody keygen``; ``serve --custody-key``): signs every offload
  confirmation (``device/uplink/offload_wire.py``), the answer that lets a camera's retention delete
  footage; it is online in every ``serve`` instance that takes uploads.

Two keys, not one: the custody key must be on the server, the model-signing key need not be, and a
stolen custody key must not let anyone ship a model (nor a stolen model key confirm footage). The
cameras trust each in its own folder (``[models] trusted_keys_dir``, ``[offload] trusted_keys_dir``),
and each signed document names its schema, so a signature of one kind is never taken for the other
even if an operator puts the same key in both.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bodycam.device.errors import UsageError
from bodycam.device.identity import IdentityError, Signer, load_signer, public_pem


def keygen(path: Path) -> Signer:
    """A new signing key: ``path`` (private, mode 0600) and ``path.with_suffix('.pub')``."""
    if path.exists():
        raise UsageError(f"{path}: exists; a new signing key needs a new file (cameras trust keys by id)")
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    signer = Signer(private)
    path.with_suffix(".pub").write_bytes(public_pem(signer.public))
    return signer


def load_base_signer(path: Path, what: str, keygen_command: str) -> Signer:
    """One of base's signing keys (PEM, mode 0600, Ed25519); a one-line UsageError naming ``keygen_command``
    when it is missing, unreadable, readable by others or of another type."""
    if not path.exists():
        raise UsageError(f"{path}: no {what}: run '{keygen_command} {path}'")
    try:
        return load_signer(path)
    except IdentityError as exc:
        text = str(exc).replace("run 'bodycam provision'", f"run '{keygen_command}'").replace("device key", what)
        raise UsageError(text) from exc


def load_custody_signer(path: Path) -> Signer:
    """Base's custody key (``serve --custody-key``)."""
    return load_base_signer(path, "custody key", "bodycam-base custody keygen")


__all__ = ["keygen", "load_base_signer", "load_custody_signer"]
