"""The console's TLS material: a box-local CA made on first start, or the organisation's own.

On first start the box makes a CA (EC P-256, 10 years) in <state>/console/tls/ and with it a
server certificate for every name and address the console answers on (renewed at start when a
name or address changed or fewer than 30 days are left). The CA's SHA-256 fingerprint is printed
at start and shown in the console, so an administrator can check the certificate the browser is
shown, or install the CA once. Private keys are files of mode 0600 and never leave the box.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from firmware.certificates import CertificateError, as_pyca, read_certificates
from firmware.config import BoxConfig
from firmware.durable import write_durable
from firmware.lan_tls import BOX_TLS_DIR, BOX_TLS_FILES

CA_CERT, CA_KEY = "ca.pem", "ca.key"
SERVER_CERT, SERVER_KEY = BOX_TLS_FILES
ORG_CERT, ORG_KEY = "org.pem", "org.key"
SERVER_DAYS = 397
RENEW_DAYS = 30


class TlsError(ValueError):
    """An uploaded certificate or key cannot be used."""


def fingerprint(cert: x509.Certificate) -> str:
    return ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write_key(path: Path, key: PrivateKeyTypes) -> None:
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    write_durable(path, data, mode=0o600)


def _chain(data: bytes) -> list[x509.Certificate]:
    """PEM certificates through the box's one loader (firmware.certificates), as ``cryptography`` objects."""
    return [as_pyca(cert) for cert in read_certificates(data, pem_only=True)]


def _load_key(path: Path) -> PrivateKeyTypes:
    return serialization.load_pem_private_key(path.read_bytes(), password=None)


@dataclass(frozen=True)
class ConsoleTls:
    cert_file: Path  # the chain nginx presents (leaf first)
    key_file: Path
    leaf: x509.Certificate
    ca: x509.Certificate | None  # the box-local CA, or None with the organisation's certificate
    organisation: bool

    @property
    def ca_fingerprint(self) -> str | None:
        return fingerprint(self.ca) if self.ca is not None else None

    @property
    def leaf_fingerprint(self) -> str:
        return fingerprint(self.leaf)

    @property
    def names(self) -> list[str]:
        try:
            san = self.leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return []
        return [str(v) for v in san.get_values_for_type(x509.DNSName)] + \
               [str(v) for v in san.get_values_for_type(x509.IPAddress)]


def ensure_ca(directory: Path, box_name: str) -> tuple[x509.Certificate, PrivateKeyTypes]:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    cert_path, key_path = directory / CA_CERT, directory / CA_KEY
    if cert_path.exists() and key_path.exists():
        return _chain(cert_path.read_bytes())[0], _load_key(key_path)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "E-signature Box"),
        x509.NameAttribute(NameOID.COMMON_NAME, f"E-signature Box local CA ({box_name})"[:64]),
    ])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_key(key_path, key)
    write_durable(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def _san_entries(names: list[str], addresses: list[str]) -> list[x509.GeneralName]:
    entries: list[x509.GeneralName] = []
    for name in dict.fromkeys(n.lower() for n in names if n):
        entries.append(x509.DNSName(name))
    for address in dict.fromkeys(addresses):
        entries.append(x509.IPAddress(ipaddress.ip_address(address)))
    return entries


def _wanted(entries: list[x509.GeneralName]) -> set[str]:
    return {f"{type(e).__name__}:{e.value}" for e in entries}


def ensure_server_cert(directory: Path, names: list[str], addresses: list[str]) -> ConsoleTls:
    """The box-local CA's server certificate for these names and addresses (made or renewed)."""
    ca_cert, ca_key = ensure_ca(directory, names[0] if names else "box")
    cert_path, key_path = directory / SERVER_CERT, directory / SERVER_KEY
    entries = _san_entries(names, addresses)
    if cert_path.exists() and key_path.exists():
        leaf = _chain(cert_path.read_bytes())[0]
        try:
            current = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            same = _wanted(list(current)) == _wanted(entries)
        except x509.ExtensionNotFound:
            same = False
        fresh = leaf.not_valid_after_utc - _now() > dt.timedelta(days=RENEW_DAYS)
        if same and fresh and leaf.issuer == ca_cert.subject:
            return ConsoleTls(cert_path, key_path, leaf, ca_cert, False)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):  # ensure_ca makes EC P-256 keys, nothing else
        raise TlsError(f"{directory / CA_KEY} is not the EC key of the box-local CA")
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, (names[0] if names else "box")[:64])]))
        .issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=SERVER_DAYS))
        .add_extension(x509.SubjectAlternativeName(entries), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(key_path, key)
    write_durable(cert_path, leaf.public_bytes(serialization.Encoding.PEM) + ca_cert.public_bytes(serialization.Encoding.PEM))
    return ConsoleTls(cert_path, key_path, leaf, ca_cert, False)


def load_organisation(cert_file: Path, key_file: Path) -> ConsoleTls:
    chain = _chain(cert_file.read_bytes())
    return ConsoleTls(cert_file, key_file, chain[0], None, True)


def check_organisation(cert_pem: bytes, key_pem: bytes) -> tuple[list[x509.Certificate], PrivateKeyTypes]:
    """Refuse an uploaded certificate that cannot serve: unreadable, expired, or not for the key."""
    try:
        chain = _chain(cert_pem)
    except CertificateError as exc:
        raise TlsError("the certificate file is not PEM (-----BEGIN CERTIFICATE-----)") from exc
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise TlsError("the key file is not an unencrypted PEM private key") from exc
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if chain[0].public_key().public_bytes(serialization.Encoding.DER, public) != \
            key.public_key().public_bytes(serialization.Encoding.DER, public):
        raise TlsError("the private key does not belong to the first certificate")
    if chain[0].not_valid_after_utc <= _now():
        raise TlsError("the certificate has expired")
    return chain, key


def install_organisation(directory: Path, cert_pem: bytes, key_pem: bytes) -> tuple[Path, Path, x509.Certificate]:
    chain, key = check_organisation(cert_pem, key_pem)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    cert_path, key_path = directory / ORG_CERT, directory / ORG_KEY
    _write_key(key_path, key)
    write_durable(cert_path, b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain))
    return cert_path, key_path, chain[0]


def remove_organisation(directory: Path) -> None:
    for name in (ORG_CERT, ORG_KEY):
        try:
            os.unlink(directory / name)
        except FileNotFoundError:
            pass


def box_names(config: BoxConfig) -> list[str]:
    """The names the console answers to: the host name, with .local, localhost, and [console] names."""
    hostname = socket.gethostname().lower()
    return list(dict.fromkeys([hostname, f"{hostname}.local", "localhost", *(n.lower() for n in config.console.names)]))


def for_console(config: BoxConfig, addresses: list[str]) -> ConsoleTls:
    """The organisation's certificate if box.toml names one that is there, else the box-local CA's."""
    settings = config.console
    if settings.tls_cert_file and settings.tls_key_file and settings.tls_cert_file.exists() \
            and settings.tls_key_file.exists():
        return load_organisation(settings.tls_cert_file, settings.tls_key_file)
    return ensure_server_cert(config.state_dir / BOX_TLS_DIR, box_names(config), addresses)
