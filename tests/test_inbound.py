"""The inbound SMTP listener: a signed e-mail hands the directory the sender's certificates.

Messages are signed by `openssl smime` (a mail client's view of S/MIME nobody here wrote) and
sent with smtplib to the real aiosmtpd listener on 127.0.0.1. The directory behind the
listener's seam is a recording stand-in here (the directory's own checks are tested with the
directory); it refuses what it is told to, as the real one refuses a failed check.
"""

from __future__ import annotations

import smtplib
import ssl
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from asn1crypto import x509
from cryptography import x509 as cx509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from firmware.config import InboundSettings
from firmware.inbound import InboundListener

from .support import free_port

DIRECTORY = "certificates@box.test"
SENDER = "alice@example.com"


class RecordingDirectory:
    def __init__(self) -> None:
        self.received: list[tuple[str, x509.Certificate, list[x509.Certificate]]] = []
        self.refuse_with: str | None = None

    def submit_received(self, address: str, certificate: x509.Certificate, chain: list[x509.Certificate]) -> None:
        if self.refuse_with:
            raise ValueError(self.refuse_with)
        self.received.append((address, certificate, chain))


def _name(common_name: str) -> cx509.Name:
    return cx509.Name([cx509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@pytest.fixture(scope="module")
def person(tmp_path_factory) -> dict[str, Path]:
    """A test CA and alice's e-mail certificate and key, as PEM files."""
    where = tmp_path_factory.mktemp("person")
    now = datetime.now(UTC)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca = (cx509.CertificateBuilder().subject_name(_name("Inbound Test CA")).issuer_name(_name("Inbound Test CA"))
          .public_key(ca_key.public_key()).serial_number(cx509.random_serial_number())
          .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=2))
          .add_extension(cx509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (cx509.CertificateBuilder().subject_name(_name("Alice")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(cx509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
            .add_extension(cx509.SubjectAlternativeName([cx509.RFC822Name(SENDER)]), critical=False)
            .add_extension(cx509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .add_extension(cx509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True)
            .sign(ca_key, hashes.SHA256()))
    files = {"ca": where / "ca.pem", "cert": where / "alice.pem", "key": where / "alice.key"}
    files["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files["key"].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    tls_key = where / "tls.key"
    tls_key.write_bytes(files["key"].read_bytes())
    tls_cert = where / "tls.pem"
    tls_cert.write_bytes(
        cx509.CertificateBuilder().subject_name(_name("127.0.0.1")).issuer_name(_name("127.0.0.1"))
        .public_key(key.public_key()).serial_number(1).not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1)).sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    return {**files, "tls_cert": tls_cert, "tls_key": tls_key}


def _signed(person: dict[str, Path], body: str = "Please publish my certificate.\n", *opaque: str) -> bytes:
    """A message signed by openssl smime as a mail client would send it (detached unless ``-nodetach``),
    with CRLF line ends as SMTP carries them."""
    signed = subprocess.run(
        ["openssl", "smime", "-sign", "-signer", str(person["cert"]), "-inkey", str(person["key"]),
         "-certfile", str(person["ca"]), "-from", SENDER, "-to", DIRECTORY, "-subject", "my certificate", *opaque],
        input=body.encode(), capture_output=True, check=True,
    ).stdout
    return signed.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _settings(port: int, **changes: object) -> InboundSettings:
    return InboundSettings(**{"enabled": True, "host": "127.0.0.1", "port": port, "address": DIRECTORY, **changes})


@pytest.fixture
def listener(person) -> Iterator[tuple[InboundListener, RecordingDirectory, int]]:
    directory = RecordingDirectory()
    port = free_port()
    server = InboundListener(_settings(port, max_message_kb=256), (person["tls_cert"], person["tls_key"]), directory)
    server.start()
    yield server, directory, port
    server.stop()


def _send(port: int, message: bytes, to: str = DIRECTORY, starttls: bool = True) -> tuple[int, str]:
    """The server's answer to DATA (or to RCPT, if that is refused)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo()
        if starttls:
            context = ssl.create_default_context()
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # a self-made test certificate
            client.starttls(context=context)
            client.ehlo()
        client.mail(SENDER)
        code, reply = client.rcpt(to)
        if code >= 400:
            return code, reply.decode()
        code, reply = client.data(message)
        return code, reply.decode()


def test_a_signed_mail_hands_over_the_senders_certificate(listener, person):
    _, directory, port = listener
    code, reply = _send(port, _signed(person))
    assert code == 250 and "confirmation was sent to alice@example.com" in reply, reply
    [(address, certificate, chain)] = directory.received
    expected = cx509.load_pem_x509_certificate(person["cert"].read_bytes())
    assert address == SENDER and certificate.dump() == expected.public_bytes(serialization.Encoding.DER)
    assert [c.subject.human_friendly for c in chain] == ["Common Name: Inbound Test CA"]


def test_opaque_signed_data_works_too(listener, person):
    _, directory, port = listener
    code, reply = _send(port, _signed(person, "opaque\n", "-nodetach"))
    assert code == 250, reply
    assert len(directory.received) == 1


def test_a_message_changed_after_signing_is_refused(listener, person):
    _, directory, port = listener
    tampered = _signed(person).replace(b"Please publish", b"Please PUBLISH")
    code, reply = _send(port, tampered)
    assert code == 550 and "changed after it was signed" in reply, reply
    assert directory.received == []


def test_an_unsigned_mail_is_refused_with_the_reason(listener):
    _, directory, port = listener
    plain = f"From: {SENDER}\r\nTo: {DIRECTORY}\r\nSubject: hi\r\n\r\nno signature here\r\n".encode()
    code, reply = _send(port, plain)
    assert code == 550 and "not signed S/MIME" in reply, reply
    assert directory.received == []


def test_only_the_directory_address_is_a_recipient(listener, person):
    _, _, port = listener
    code, reply = _send(port, _signed(person), to="postmaster@box.test")
    assert code == 550 and DIRECTORY in reply, reply


def test_the_directorys_refusal_is_the_smtp_answer(listener, person):
    _, directory, port = listener
    directory.refuse_with = "chain: the certificate does not chain to a trusted root"
    code, reply = _send(port, _signed(person))
    assert code == 550 and "does not chain to a trusted root" in reply, reply


def test_an_oversized_message_is_refused_by_the_server(listener, person):
    _, directory, port = listener
    code, reply = _send(port, _signed(person, ("x" * 99 + "\n") * 3000))  # 300 KB for a 256 KB limit
    assert code == 552, reply
    assert directory.received == []


def test_starttls_can_be_required(person):
    port = free_port()
    server = InboundListener(_settings(port, require_starttls=True), (person["tls_cert"], person["tls_key"]),
                             RecordingDirectory())
    server.start()
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.ehlo()
            code, reply = client.mail(SENDER)
        assert code == 530 and b"STARTTLS" in reply, reply
        assert _send(port, _signed(person))[0] == 250
    finally:
        server.stop()
