"""Test helper: a camera with base's public key installed (footage is encrypted at rest by default)."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from bodycam.device.footage.atrest import format_recipient, install_recipient


def install_base_key(data_dir: Path) -> X25519PrivateKey:
    """Install a fresh base public key where the firmware looks by default; returns base's private key."""
    private = X25519PrivateKey.generate()
    install_recipient(data_dir / "identity" / "base.age.pub", format_recipient(private.public_key()))
    return private
