"""Signed, encrypted mail (POST /v1/mail): the Box's own app on Falcon's TestClient, signing on the
session's SoftHSM2 token, delivering through a real SMTP server (aiosmtpd) on 127.0.0.1.

Each received message is read by two independent clients: OpenSSL (`openssl cms -decrypt`, then
`openssl cms -verify` against the dev root) and Python's email parser with cryptography's
primitives. The recipients' keys and certificates are made here; until the box has its certificate
directory, the test hands the mail service a directory built from them.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime
import email
import email.policy
import hashlib
import ipaddress
import os
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import ClassVar

import falcon.testing
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from asn1crypto import cms, core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, keywrap, padding, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.x963kdf import X963KDF
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from firmware.box import Box
from firmware.config import BoxConfig, ConfigError
from firmware.devpki import DevPki
from firmware.mail import MailPolicy, MailService, OutboxSender, RelaySettings, SmimeSigner

from .support import free_port

FROM = "bills@box.example"
NOTICE = "Send us your S/MIME certificate to receive your bills encrypted."
# Every byte value, CRLFs, lone CRs and LFs, and a line that looks like a MIME boundary: a PDF
# attachment must arrive byte for byte.
PDF = b"%PDF-1.7\r\n" + bytes(range(256)) * 40 + b"\n--boundary\r\n\r\n.\r\n" + b"\r" * 3 + b"%%EOF\n"


# -- a relay -------------------------------------------------------------------------------------------

class Inbox:
    """The aiosmtpd handler: every message the relay accepted, as (envelope recipients, bytes)."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], bytes]] = []
        self.lock = threading.Lock()
        self.rcpt_delay = 0.0  # seconds the next RCPT waits before its 250 (then back to 0)
        self.rcpt_seen = threading.Event()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options) -> str:  # aiosmtpd's hook name
        self.rcpt_seen.set()
        delay, self.rcpt_delay = self.rcpt_delay, 0.0
        await asyncio.sleep(delay)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope) -> str:  # aiosmtpd's hook name
        with self.lock:
            self.messages.append((list(envelope.rcpt_tos), bytes(envelope.original_content)))
        return "250 OK queued"


class Relay:
    def __init__(self) -> None:
        self.inbox = Inbox()
        self.port = free_port()
        self._controller: Controller | None = None

    def start(self) -> None:
        self._controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def settings(self) -> RelaySettings:
        return RelaySettings(host="127.0.0.1", port=self.port, starttls=False, timeout_s=5.0, max_attempts=5,
                             backoff_s=0.2, max_backoff_s=1.0)


@pytest.fixture(scope="module")
def relay() -> Iterator[Relay]:
    server = Relay()
    server.start()
    yield server
    server.stop()


# -- recipients -----------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Recipient:
    address: str
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    def files(self, directory: Path) -> tuple[Path, Path]:
        cert = directory / f"{self.address}.crt.pem"
        key = directory / f"{self.address}.key.pem"
        cert.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        key.write_bytes(self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        return cert, key


def _recipient(address: str, kind: str, ca_key: ec.EllipticCurvePrivateKey, ca_name: x509.Name) -> Recipient:
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048) if kind == "rsa"
        else ec.generate_private_key(ec.SECP256R1()))
    now = datetime.datetime.now(datetime.UTC)
    usage = dict.fromkeys(("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
                           "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only"), False)
    usage["key_encipherment" if kind == "rsa" else "key_agreement"] = True
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, address)]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(address)]), critical=False)
        .add_extension(x509.KeyUsage(**usage), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return Recipient(address, key, cert)


@pytest.fixture(scope="module")
def recipients() -> dict[str, Recipient]:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test Mail CA")])
    return {kind: _recipient(f"{kind}-customer@example.org", kind, ca_key, ca_name) for kind in ("rsa", "ec")}


class CertDirectory:
    """The RecipientDirectory of these tests: the certificates made above, by exact address."""

    def __init__(self, recipients: Sequence[Recipient]) -> None:
        self._certs = {r.address: asn1_x509.Certificate.load(r.cert.public_bytes(serialization.Encoding.DER))
                       for r in recipients}

    def lookup(self, address: str) -> Sequence[asn1_x509.Certificate]:
        cert = self._certs.get(address)
        return [cert] if cert is not None else []


# -- the box ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def local_box(box_config: BoxConfig) -> Iterator[Box]:
    box = Box.open(box_config)
    yield box
    box.token.close()


@pytest.fixture(scope="module")
def mail_box(local_box: Box, recipients: dict[str, Recipient]) -> Box:
    policy = MailPolicy(FROM, "How to receive encrypted bills", NOTICE)
    service = MailService(local_box.db, local_box.outbox, SmimeSigner(local_box.signer),
                          CertDirectory(list(recipients.values())), policy)
    return dataclasses.replace(local_box, mail=service)


@pytest.fixture(scope="module")
def client(mail_box: Box) -> falcon.testing.TestClient:
    return falcon.testing.TestClient(mail_box.app())


@pytest.fixture(scope="module")
def mail_key(local_box: Box) -> str:
    return local_box.clients.add("mail-tests", scopes=("mail",))[1]


@pytest.fixture
def sender(mail_box: Box, relay: Relay) -> OutboxSender:
    sender = OutboxSender(mail_box.outbox, relay.settings())
    sender.deliver_due()  # nothing left over from another test
    return sender


@pytest.fixture(scope="module")
def dev_root(dev_pki: DevPki, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("mail") / "dev-root.pem"
    root = x509.load_der_x509_certificate(dev_pki.root_cert())
    path.write_bytes(root.public_bytes(serialization.Encoding.PEM))
    return path


def _post(client: falcon.testing.TestClient, key: str, **body) -> falcon.testing.Result:
    return client.simulate_post("/v1/mail", json=body, headers={"Authorization": f"Bearer {key}"})


def _bill(to: str) -> dict[str, object]:
    return {"to": to, "subject": "Your bill for November", "text": "Dear customer,\nyour bill is attached.\n",
            "html": "<p>Dear customer,<br>your bill is attached.</p>",
            "attachments": [{"filename": "bill-2026-11.pdf", "content_type": "application/pdf",
                             "data": base64.b64encode(PDF).decode()}]}


def _received(relay: Relay, message_id: str) -> list[bytes]:
    return [m for _, m in relay.inbox.messages if f"Message-ID: {message_id}".encode() in m]


def _message_id(mail_box: Box, mail_id: str) -> str:
    row = mail_box.db.connect().execute("SELECT message_id FROM mail_outbox WHERE id = ?", (mail_id,)).fetchone()
    return str(row[0])


def _attachment(content: bytes) -> bytes:
    parsed = email.message_from_bytes(content, policy=email.policy.default)
    parts = [p for p in parsed.walk() if p.get_filename() == "bill-2026-11.pdf"]
    assert len(parts) == 1 and parts[0].get_content_type() == "application/pdf"
    payload = parts[0].get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload


# -- (a) OpenSSL decrypts and verifies; the attachment is byte-identical ------------------------------------

@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_openssl_decrypts_verifies_and_finds_the_attachment_intact(
        client, mail_box, mail_key, relay, sender, recipients, dev_root, tmp_path, kind):
    recipient = recipients[kind]
    result = _post(client, mail_key, **_bill(recipient.address))
    assert result.status_code == 202, result.text
    assert result.json["encrypted"] is True
    assert sender.deliver_due() == 1
    received = _received(relay, _message_id(mail_box, result.json["id"]))
    assert len(received) == 1
    message = tmp_path / "received.eml"
    message.write_bytes(received[0])
    cert, key = recipient.files(tmp_path)
    decrypted, content = tmp_path / "decrypted.eml", tmp_path / "content.eml"
    subprocess.run(["openssl", "cms", "-decrypt", "-in", str(message), "-recip", str(cert), "-inkey", str(key),
                    "-out", str(decrypted)], check=True, capture_output=True)
    verified = subprocess.run(["openssl", "cms", "-verify", "-in", str(decrypted), "-CAfile", str(dev_root),
                               "-out", str(content)], capture_output=True, text=True)
    assert verified.returncode == 0 and "Verification successful" in verified.stderr, verified.stderr
    assert _attachment(content.read_bytes()) == PDF
    status = client.simulate_get(f"/v1/mail/{result.json['id']}", headers={"Authorization": f"Bearer {mail_key}"})
    assert status.status_code == 200 and status.json["status"] == "sent" and status.json["attempts"] == 1


# -- (b) Python's email parser and cryptography ------------------------------------------------------------

class EccCmsSharedInfo(core.Sequence):
    """RFC 5753 §7.2 ECC-CMS-SharedInfo, the X9.63 KDF's shared info (written here, not taken from the box's code)."""

    _fields: ClassVar = [
        ("key_info", cms.KeyEncryptionAlgorithm),
        ("entity_u_info", core.OctetString, {"explicit": 0, "optional": True}),
        ("supp_pub_info", core.OctetString, {"explicit": 2}),
    ]


def _content_key(info: cms.RecipientInfo, recipient: Recipient) -> bytes:
    """The content-encryption key, unwrapped by hand with cryptography's primitives."""
    if info.name == "ktri":
        assert isinstance(recipient.key, rsa.RSAPrivateKey)
        algorithm = info.chosen["key_encryption_algorithm"]
        assert algorithm["algorithm"].native == "rsaes_oaep"
        digest = {"sha256": hashes.SHA256(), "sha384": hashes.SHA384(), "sha512": hashes.SHA512()}[
            algorithm["parameters"]["hash_algorithm"]["algorithm"].native]
        return recipient.key.decrypt(info.chosen["encrypted_key"].native,
                                     asym_padding.OAEP(asym_padding.MGF1(digest), digest, None))
    assert info.name == "kari" and isinstance(recipient.key, ec.EllipticCurvePrivateKey)
    kari = info.chosen
    point = kari["originator"].chosen["public_key"].native  # an ephemeral key on the recipient's curve
    originator = ec.EllipticCurvePublicKey.from_encoded_point(recipient.key.curve, point)
    shared = recipient.key.exchange(ec.ECDH(), originator)
    wrap = cms.KeyEncryptionAlgorithm.load(kari["key_encryption_algorithm"]["parameters"].dump())  # the key wrap
    wrap_bits = {"aes128_wrap": 128, "aes192_wrap": 192, "aes256_wrap": 256}[wrap["algorithm"].native]
    assert kari["key_encryption_algorithm"]["algorithm"].dotted == "1.3.132.1.11.1"  # dhSinglePass-stdDH-sha256kdf
    info_der = EccCmsSharedInfo({"key_info": wrap, "entity_u_info": kari["ukm"].native,
                                 "supp_pub_info": wrap_bits.to_bytes(4, "big")}).dump()
    kek = X963KDF(hashes.SHA256(), wrap_bits // 8, info_der).derive(shared)
    return keywrap.aes_key_unwrap(kek, kari["recipient_encrypted_keys"][0]["encrypted_key"].native)


def _decrypt(p7m: bytes, recipient: Recipient) -> bytes:
    enveloped = cms.ContentInfo.load(p7m)["content"]
    [info] = enveloped["recipient_infos"]
    key = _content_key(info, recipient)
    content_info = enveloped["encrypted_content_info"]
    assert content_info["content_encryption_algorithm"]["algorithm"].native == "aes256_cbc"
    iv = content_info["content_encryption_algorithm"]["parameters"].native
    decryptor = Cipher(algorithms.AES256(key), modes.CBC(iv)).decryptor()
    padded = decryptor.update(content_info["encrypted_content"].native) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    return unpadder.update(padded) + unpadder.finalize()


def _signed_part(multipart: bytes, boundary: str) -> bytes:
    """The first part's bytes exactly as sent: between the first delimiter line and the CRLF of the next."""
    delimiter = f"--{boundary}".encode()
    start = multipart.index(delimiter + b"\r\n") + len(delimiter) + 2
    return multipart[start:multipart.index(b"\r\n" + delimiter, start)]


def _verify_signature(signed_part: bytes, p7s: bytes, box: Box) -> None:
    """What a mail client checks: messageDigest is the part's hash, the box's key signed the attributes."""
    signed_data = cms.ContentInfo.load(p7s)["content"]
    [signer_info] = signed_data["signer_infos"]
    attrs = {a["type"].native: a["values"][0] for a in signer_info["signed_attrs"]}
    assert attrs["content_type"].native == "data"
    assert attrs["message_digest"].native == hashlib.sha256(signed_part).digest()
    assert "signing_time" in attrs and "smime_capabilities" in attrs
    certificate = x509.load_der_x509_certificate(box.signer.signing_cert.dump())
    assert certificate.serial_number == signer_info["sid"].chosen["serial_number"].native
    public_key = certificate.public_key()
    # signed over as a SET OF (RFC 5652 §5.4), not with the [0] tag it carries in SignerInfo
    data, signature = b"\x31" + signer_info["signed_attrs"].dump()[1:], signer_info["signature"].native
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        public_key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    else:
        assert isinstance(public_key, rsa.RSAPublicKey)
        scheme = (asym_padding.PSS(asym_padding.MGF1(hashes.SHA256()), 32)
                  if signer_info["signature_algorithm"]["algorithm"].native == "rsassa_pss" else asym_padding.PKCS1v15())
        public_key.verify(signature, data, scheme, hashes.SHA256())


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_python_email_and_cryptography_read_the_message(client, mail_box, mail_key, relay, sender, recipients, kind):
    recipient = recipients[kind]
    result = _post(client, mail_key, **_bill(recipient.address))
    assert result.status_code == 202, result.text
    sender.deliver_due()
    [raw] = _received(relay, _message_id(mail_box, result.json["id"]))
    outer = email.message_from_bytes(raw, policy=email.policy.default)
    assert outer["To"] == recipient.address and outer["From"] == FROM
    assert outer.get_content_type() == "application/pkcs7-mime"
    assert outer.get_param("smime-type") == "enveloped-data"
    p7m = outer.get_payload(decode=True)
    assert isinstance(p7m, bytes)
    if kind == "rsa":  # cryptography's own CMS decryption does PKCS#1 v1.5 key transport only: by hand below
        with pytest.raises(UnsupportedAlgorithm, match=r"PKCS #1 v1\.5"):
            pkcs7.pkcs7_decrypt_der(p7m, recipient.cert, recipient.key, [])
    signed = _decrypt(p7m, recipient)
    inner = email.message_from_bytes(signed, policy=email.policy.default)
    assert inner.get_content_type() == "multipart/signed"
    assert inner.get_param("protocol") == "application/pkcs7-signature" and inner.get_param("micalg") == "sha-256"
    boundary = inner.get_boundary()
    assert boundary is not None
    _, signature = inner.get_payload()
    assert signature.get_content_type() == "application/pkcs7-signature"
    part = _signed_part(signed, boundary)
    _verify_signature(part, signature.get_payload(decode=True), mail_box)
    assert _attachment(part) == PDF
    body = email.message_from_bytes(part, policy=email.policy.default).get_body(("plain",))
    assert body is not None and body.get_content() == "Dear customer,\r\nyour bill is attached.\r\n"  # canonical: CRLF


# -- (c) relay down: queued, then delivered once -------------------------------------------------------------

def test_a_relay_outage_queues_the_mail_and_delivers_it_once_when_the_relay_is_back(
        client, mail_box, mail_key, relay, sender, recipients):
    relay.stop()
    try:
        result = _post(client, mail_key, **_bill(recipients["rsa"].address))
        assert result.status_code == 202, result.text
        assert sender.deliver_due() == 1  # tried, refused, put back with its backoff
        status = client.simulate_get(f"/v1/mail/{result.json['id']}", headers={"Authorization": f"Bearer {mail_key}"})
        assert status.json["status"] == "queued" and status.json["attempts"] == 1
        assert "relay unavailable" in status.json["last_error"]
        assert sender.deliver_due() == 0  # not due before its backoff
    finally:
        relay.start()
    time.sleep(0.3)
    assert sender.deliver_due() == 1
    assert sender.deliver_due() == 0
    assert len(_received(relay, _message_id(mail_box, result.json["id"]))) == 1
    status = client.simulate_get(f"/v1/mail/{result.json['id']}", headers={"Authorization": f"Bearer {mail_key}"})
    assert status.json["status"] == "sent" and status.json["attempts"] == 2


def test_the_sender_thread_delivers_what_is_queued(client, mail_box, mail_key, relay, recipients):
    sender = OutboxSender(mail_box.outbox, relay.settings(), poll_s=0.2)
    sender.start()
    try:
        result = _post(client, mail_key, **_bill(recipients["ec"].address))
        message_id = _message_id(mail_box, result.json["id"])
        deadline = time.monotonic() + 10
        while not _received(relay, message_id) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        sender.stop()
    assert len(_received(relay, message_id)) == 1


def test_a_message_whose_sender_died_is_sent_when_its_lease_runs_out(client, mail_box, mail_key, relay, sender,
                                                                     recipients):
    result = _post(client, mail_key, **_bill(recipients["rsa"].address))
    claimed = mail_box.outbox.claim(lease_s=0.2)  # a sender took it, then was killed before sending
    assert claimed is not None and claimed.id == result.json["id"]
    assert sender.deliver_due() == 0  # its lease still holds
    time.sleep(0.3)
    assert sender.deliver_due() == 1
    assert len(_received(relay, _message_id(mail_box, result.json["id"]))) == 1


_KILLED_SENDER = """
import sys
from pathlib import Path
from firmware.mail import Outbox, OutboxSender, RelaySettings
from firmware.store.db import Database
relay = RelaySettings(host="127.0.0.1", port=int(sys.argv[2]), starttls=False, timeout_s=10.0, lease_s=2.0)
OutboxSender(Outbox(Database(Path(sys.argv[1]))), relay).deliver_due()
"""


def test_kill_9_mid_queue_loses_nothing_and_sends_nothing_twice(client, mail_box, mail_key, relay, sender, recipients):
    """A sender process killed with SIGKILL in the middle of an SMTP transaction (after RCPT, before
    DATA): its message stays claimed until the lease runs out, then goes once, with the rest."""
    ids = [_post(client, mail_key, **_bill(recipients["rsa"].address)).json["id"] for _ in range(3)]
    relay.inbox.rcpt_delay, relay.inbox.rcpt_seen = 5.0, threading.Event()
    process = subprocess.Popen([sys.executable, "-c", _KILLED_SENDER, str(mail_box.db.path), str(relay.port)],
                               env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    try:
        assert relay.inbox.rcpt_seen.wait(30), "the sender never reached RCPT"
    finally:
        process.kill()  # SIGKILL: no cleanup of any kind
        process.wait()
    states = {i: client.simulate_get(f"/v1/mail/{i}", headers={"Authorization": f"Bearer {mail_key}"}).json["status"]
              for i in ids}
    assert sorted(states.values()) == ["queued", "queued", "sending"]
    assert sender.deliver_due() == 2  # the two queued; the killed one's lease still holds
    time.sleep(2.2)
    assert sender.deliver_due() == 1
    for mail_id in ids:
        assert len(_received(relay, _message_id(mail_box, mail_id))) == 1
        status = client.simulate_get(f"/v1/mail/{mail_id}", headers={"Authorization": f"Bearer {mail_key}"})
        assert status.json["status"] == "sent"


def _tls_relay_cert(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "relay.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = directory / "relay.crt", directory / "relay.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def test_starttls_and_auth_with_the_password_file(client, mail_box, mail_key, recipients, tmp_path):
    """A relay that wants STARTTLS before AUTH, and AUTH before mail: a wrong password is a retry, the
    right one delivers; the relay's certificate is checked against relay_ca_file."""
    cert_file, key_file = _tls_relay_cert(tmp_path)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert_file, key_file)
    logins: list[tuple[bytes, bytes]] = []

    def authenticate(server, session, envelope, mechanism, auth_data) -> AuthResult:
        logins.append((auth_data.login, auth_data.password))
        ok = auth_data.login == b"box" and auth_data.password == b"s3cret"
        return AuthResult(success=ok, handled=ok)  # not handled: aiosmtpd answers the failure with a 535

    inbox, port = Inbox(), free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, tls_context=tls, require_starttls=True,
                            auth_required=True, auth_require_tls=True, authenticator=authenticate)
    controller.start()
    try:
        password = tmp_path / "smtp.password"
        password.write_text("wrong\n")
        settings = RelaySettings(host="127.0.0.1", port=port, starttls=True, username="box", password_file=password,
                                 ca_file=cert_file, timeout_s=5.0, backoff_s=0.2)
        result = _post(client, mail_key, **_bill(recipients["ec"].address))
        sender = OutboxSender(mail_box.outbox, settings)
        assert sender.deliver_due() == 1
        status = client.simulate_get(f"/v1/mail/{result.json['id']}", headers={"Authorization": f"Bearer {mail_key}"})
        assert status.json["status"] == "queued" and "535" in status.json["last_error"]
        password.write_text("s3cret\n")
        time.sleep(0.3)
        assert sender.deliver_due() == 1
        assert set(logins[:-1]) == {(b"box", b"wrong")} and logins[-1] == (b"box", b"s3cret")  # smtplib tries PLAIN, LOGIN
        assert len([m for _, m in inbox.messages if _message_id(mail_box, result.json["id"]).encode() in m]) == 1
    finally:
        controller.stop()


# -- (d) no certificate: the plain notice -------------------------------------------------------------------

def test_without_a_certificate_the_plain_notice_goes_out_signed_and_the_answer_says_so(
        client, mail_box, mail_key, relay, sender, dev_root, tmp_path):
    result = _post(client, mail_key, **_bill("nocert@example.org"))
    assert result.status_code == 202 and result.json["encrypted"] is False, result.text
    sender.deliver_due()
    [raw] = _received(relay, _message_id(mail_box, result.json["id"]))
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert message.get_content_type() == "multipart/signed" and message["Subject"] == "How to receive encrypted bills"
    assert message.get_body(("plain",)).get_content().strip() == NOTICE  # readable by any client
    received, content = tmp_path / "notice.eml", tmp_path / "notice.txt"
    received.write_bytes(raw)
    verified = subprocess.run(["openssl", "cms", "-verify", "-in", str(received), "-CAfile", str(dev_root),
                               "-out", str(content)], capture_output=True, text=True)
    assert verified.returncode == 0 and "Verification successful" in verified.stderr, verified.stderr
    assert NOTICE in content.read_text()
    assert b"%PDF" not in raw and b"your bill is attached" not in raw  # the content itself is never sent plain


# -- (e) scope, metering, audit, the request's rules ------------------------------------------------------------

def test_without_the_mail_scope_it_is_403(client, local_box):
    key = local_box.clients.add("mail-no-scope", scopes=("hash", "pdf"))[1]
    result = _post(client, key, **_bill("rsa-customer@example.org"))
    assert result.status_code == 403 and result.json["error"] == "scope_denied"
    assert client.simulate_get("/v1/mail/x", headers={"Authorization": f"Bearer {key}"}).status_code == 403


def test_a_mail_is_metered_and_audited_without_the_address(client, mail_box, mail_key, local_box):
    conn = local_box.db.connect()
    caller = local_box.clients.authenticate(mail_key)
    assert caller is not None
    client_id = caller.id
    before = conn.execute("SELECT COUNT(*) FROM metered_calls WHERE client_id = ? AND kind = 'mail'",
                          (client_id,)).fetchone()[0]
    result = _post(client, mail_key, **_bill("audited@example.org"))
    assert result.status_code == 202
    after = conn.execute("SELECT COUNT(*) FROM metered_calls WHERE client_id = ? AND kind = 'mail'",
                         (client_id,)).fetchone()[0]
    assert after == before + 1
    details = conn.execute("SELECT details FROM audit_log WHERE action = 'mail' ORDER BY seq DESC LIMIT 1").fetchone()[0]
    assert "audited@example.org" not in details
    assert hashlib.sha256(b"audited@example.org").hexdigest() in details


def test_a_client_over_its_quota_queues_nothing(client, local_box):
    key = local_box.clients.add("mail-quota", scopes=("mail",), calls=0)[1]
    result = _post(client, key, **_bill("rsa-customer@example.org"))
    assert result.status_code == 402 and result.json["error"] == "quota_exhausted"


@pytest.mark.parametrize("body, reason", [
    ({"to": "a@example.org, b@example.org", "subject": "x", "text": "x"}, "one e-mail address"),
    ({"to": "a@example.org\r\nBcc: b@example.org", "subject": "x", "text": "x"}, "one e-mail address"),
    ({"to": "a@example.org", "subject": "x\r\nBcc: b@example.org", "text": "x"}, "one line"),
    ({"to": "a@example.org", "subject": "x"}, "text"),
    ({"to": "a@example.org", "subject": "x", "text": "x",
      "attachments": [{"filename": "../a.pdf", "content_type": "application/pdf", "data": ""}]}, "file name"),
    ({"to": "a@example.org", "subject": "x", "text": "x",
      "attachments": [{"filename": "a.pdf", "content_type": "pdf", "data": ""}]}, "type/subtype"),
    ({"to": "a@example.org", "subject": "x", "text": "x",
      "attachments": [{"filename": "a.pdf", "content_type": "application/pdf"}]}, "data"),
])
def test_a_bad_request_is_400_and_queues_nothing(client, mail_key, body, reason):
    result = _post(client, mail_key, **body)
    assert result.status_code == 400 and reason in result.json["message"], result.text


def test_a_box_without_a_relay_answers_503(local_box, mail_key):
    result = _post(falcon.testing.TestClient(local_box.app()), mail_key, **_bill("rsa-customer@example.org"))
    assert result.status_code == 503 and result.json["error"] == "mail_unavailable"


def test_the_mail_section_is_checked(tmp_path: Path):
    base = '[token]\nmodule = "m.so"\nlabel = "t"\n'
    with pytest.raises(ConfigError, match="from_address"):
        BoxConfig.from_text(tmp_path, base + '[mail]\nrelay_host = "smtp.example"\n')
    with pytest.raises(ConfigError, match="password_file"):
        BoxConfig.from_text(tmp_path, base + '[mail]\nusername = "box"\n')
    config = BoxConfig.from_text(tmp_path, base + '[mail]\nrelay_host = "smtp.example"\nfrom_address = "a@b.example"\n'
                                              'password_file = "smtp-password"\nusername = "box"\n')
    assert config.mail.password_file == tmp_path.resolve() / "smtp-password" and config.mail.starttls

