"""A certificate authority made at test time (TLS tests: Mosquitto mutual TLS, base's HTTPS)."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = dt.datetime.now(dt.UTC)


def name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def cert(subject: str, public: Any, ca_key: Any, issuer: str, *, ca: bool = False, server: bool = False,
         days: float = 1.0) -> bytes:
    """A PEM certificate for ``subject`` signed by ``ca_key``; ``days`` < 0 makes it expired."""
    start = NOW - dt.timedelta(minutes=5) if days > 0 else NOW - dt.timedelta(days=2)
    b = (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(name(issuer)).public_key(public)
         .serial_number(x509.random_serial_number()).not_valid_before(start)
         .not_valid_after(NOW + dt.timedelta(days=days))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if server:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                         x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
    elif not ca:
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
    return b.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def ec_key(path: Path) -> Any:
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o644)  # a broker reads it as its own user
    return key


def make_ca(d: Path, cn: str = "bodycam test CA") -> Any:
    """``d/ca.crt`` + ``d/ca.key``; returns the CA's private key."""
    d.mkdir(parents=True, exist_ok=True)
    ca_key = ec_key(d / "ca.key")
    (d / "ca.crt").write_bytes(cert(cn, ca_key.public_key(), ca_key, cn, ca=True))
    return ca_key


def make_server(d: Path, ca_key: Any, stem: str = "server", *, days: float = 1.0,
                issuer: str = "bodycam test CA") -> tuple[Path, Path]:
    """``d/<stem>.crt`` (CN localhost, SAN localhost + 127.0.0.1) and its key."""
    key = ec_key(d / f"{stem}.key")
    (d / f"{stem}.crt").write_bytes(cert("localhost", key.public_key(), ca_key, issuer, server=True, days=days))
    return d / f"{stem}.crt", d / f"{stem}.key"
