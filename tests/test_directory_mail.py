"""The certificate directory and encrypted delivery together, as a person and a business system meet them.

Alice sends the box's directory address a signed e-mail (signed by `openssl smime`, sent over real
SMTP to the inbound listener); the box checks her certificate against the dev PKI (real OCSP/CRL
servers), mails the proof of mailbox control encrypted to that certificate through a real SMTP
relay (the dev mailbox, which keeps messages as files); she reads it with `openssl cms -decrypt`
and her key, types the code, and her certificate is published: found by the API, by `ldapsearch`
over slapd, and used by POST /v1/mail and POST /v1/otp. No part of the box is replaced here.
"""

from __future__ import annotations

import base64
import dataclasses
import email
import email.policy
import json
import re
import smtplib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import falcon.testing
import pytest
from asn1crypto import pem

from firmware.box import Box
from firmware.config import (
    BoxConfig,
    ContractsSettings,
    DirectorySettings,
    InboundSettings,
    LdapSettings,
    MailSettings,
)
from firmware.devmail import DevMailbox
from firmware.devpki import DevPki
from firmware.inbound import InboundListener
from firmware.ldap import LdapServer
from firmware.operations.directory_links import InboundSubmissions, LdapDirectory

from .pdfs import make_pdf
from .support import free_port

DIRECTORY = "certificates@box.example"
ALICE = "alice@example.com"


@dataclasses.dataclass
class World:
    box: Box
    client: falcon.testing.TestClient
    mailbox: DevMailbox
    inbound_port: int
    ldap_port: int
    files: dict[str, Path]  # alice's certificate, key, chain; the dev root


@pytest.fixture(scope="module")
def world(box_config: BoxConfig, dev_pki: DevPki, pki_server, tmp_path_factory) -> Iterator[World]:
    where = tmp_path_factory.mktemp("directory-mail")
    alice = dev_pki.mail_user("alice")
    files = {"root": where / "root.pem", "cert": where / "alice.pem", "key": alice.key_path,
             "chain": where / "chain.pem"}
    files["root"].write_bytes(pem.armor("CERTIFICATE", dev_pki.root_cert()))
    files["cert"].write_bytes(pem.armor("CERTIFICATE", alice.cert))
    files["chain"].write_bytes(pem.armor("CERTIFICATE", dev_pki.intermediate_cert()))
    mailbox = DevMailbox(where, free_port())
    mailbox.start()
    inbound_port, ldap_port = free_port(), free_port()
    config = dataclasses.replace(
        box_config,
        directory=DirectorySettings(enabled=True, trust_roots_file=files["root"]),
        mail=MailSettings(relay_host="127.0.0.1", relay_port=mailbox.port, starttls=False,
                          from_address="esignbox@box.example", retry_seconds=0.2),
        ldap=LdapSettings(enabled=True, port=ldap_port, ldaps_port=0, listen=("127.0.0.1",)),
        inbound=InboundSettings(enabled=True, host="127.0.0.1", port=inbound_port, address=DIRECTORY),
        contracts=ContractsSettings(enabled=True, public_base_url="https://sign.box.example"),
    )
    box = Box.open(config)
    assert box.directory is not None
    sender = box.mail_sender()
    assert sender is not None
    sender.start()
    listener = InboundListener(config.inbound, None, InboundSubmissions(box.directory))
    listener.start()
    ldap = LdapServer(config, LdapDirectory(box.directory, box.db, config.ldap.lookups_per_minute))
    ldap.start()
    yield World(box, falcon.testing.TestClient(box.app()), mailbox, inbound_port, ldap_port, files)
    ldap.stop()
    listener.stop()
    sender.stop()
    mailbox.stop()
    box.token.close()


def _key(world: World, *scopes: str) -> dict[str, str]:
    key = world.box.clients.add(f"dm-{'-'.join(scopes)}-{time.monotonic_ns()}", scopes=scopes)[1]
    return {"Authorization": f"Bearer {key}"}


def _next_mail(world: World, seen: set[Path], timeout: float = 15.0, to: str | None = None) -> Path:
    """The next message the relay received (for ``to`` only, if given: an earlier test's mail may
    still be on its way)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for new in sorted(set(world.mailbox.directory.glob("*.eml")) - seen):
            seen.add(new)
            if to is None or f"To: {to}\r\n".encode() in new.read_bytes():
                return new
        time.sleep(0.05)
    raise AssertionError("no mail reached the relay")


def _read_as_alice(world: World, message: Path) -> str:
    """What Alice's mail client shows: decrypted with her key, the box's signature verified."""
    decrypted = subprocess.run(["openssl", "cms", "-decrypt", "-in", str(message), "-recip", str(world.files["cert"]),
                                "-inkey", str(world.files["key"])], capture_output=True, check=True).stdout
    verified = subprocess.run(["openssl", "cms", "-verify", "-CAfile", str(world.files["root"])],
                              input=decrypted, capture_output=True)
    assert verified.returncode == 0 and b"Verification successful" in verified.stderr, verified.stderr
    return verified.stdout.decode()


def _signed_by_alice(world: World) -> bytes:
    signed = subprocess.run(
        ["openssl", "smime", "-sign", "-signer", str(world.files["cert"]), "-inkey", str(world.files["key"]),
         "-certfile", str(world.files["chain"]), "-from", ALICE, "-to", DIRECTORY, "-subject", "my certificate"],
        input=b"Please publish my certificate.\n", capture_output=True, check=True).stdout
    return signed.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _ldap(world: World, address: str) -> str:
    return subprocess.run(["ldapsearch", "-x", "-LLL", "-H", f"ldap://127.0.0.1:{world.ldap_port}", "-b", "dc=esignbox",
                           f"(mail={address})", "mail"], capture_output=True, text=True, check=True).stdout


def test_a_signed_mail_a_mailed_proof_and_the_certificate_is_everywhere(world: World):
    seen = set(world.mailbox.directory.glob("*.eml"))
    directory_key = _key(world, "directory")
    assert world.client.simulate_get("/v1/directory/exists", params={"email": ALICE},
                                     headers=directory_key).json == {"exists": False}

    with smtplib.SMTP("127.0.0.1", world.inbound_port, timeout=10) as smtp:
        smtp.sendmail(ALICE, [DIRECTORY], _signed_by_alice(world))

    proof = _read_as_alice(world, _next_mail(world, seen))
    code = re.search(r"enter this code with your address: (\d+)", proof)
    assert code, proof
    # pending: not found anywhere yet
    assert world.client.simulate_get("/v1/directory/exists", params={"email": ALICE},
                                     headers=directory_key).json == {"exists": False}
    assert _ldap(world, ALICE).strip() == ""

    confirmed = world.client.simulate_post("/v1/directory/proofs", json={"email": ALICE, "code": code[1]})
    assert confirmed.status_code == 200, confirmed.text

    found = world.client.simulate_get("/v1/directory/certificates", params={"email": "Alice@Example.com"},
                                      headers=directory_key)
    assert found.status_code == 200, found.text
    assert f"mail: {ALICE}" in _ldap(world, ALICE)
    assert _ldap(world, "ali*").strip() == ""

    mail_key = _key(world, "mail")
    sent = world.client.simulate_post("/v1/mail", headers=mail_key, json={
        "to": ALICE, "subject": "Your bill", "text": "Your bill for November is 42.00 EUR.\n"})
    assert sent.status_code == 202 and sent.json["encrypted"] is True, sent.text
    assert "42.00 EUR" in _read_as_alice(world, _next_mail(world, seen))

    issued = world.client.simulate_post("/v1/otp", headers=mail_key, json={"to": ALICE})
    assert issued.status_code == 201 and issued.json["encrypted"] is True, issued.text
    otp = re.search(r"Your one-time code: (\d+)", _read_as_alice(world, _next_mail(world, seen)))
    assert otp
    check = {"id": issued.json["id"], "code": otp[1]}
    assert world.client.simulate_post("/v1/otp/verify", headers=mail_key, json=check).json == \
        {"valid": True, "reason": "ok"}
    assert world.client.simulate_post("/v1/otp/verify", headers=mail_key, json=check).json == \
        {"valid": False, "reason": "used"}


def test_a_one_time_code_for_someone_without_a_certificate_needs_allow_plain(world: World):
    mail_key = _key(world, "mail")
    refused = world.client.simulate_post("/v1/otp", headers=mail_key, json={"to": "nobody@example.com"})
    assert refused.status_code == 409 and refused.json["error"] == "no_encryption_certificate", refused.text
    plain = world.client.simulate_post("/v1/otp", headers=mail_key,
                                       json={"to": "nobody@example.com", "allow_plain": True})
    assert plain.status_code == 201 and plain.json["encrypted"] is False, plain.text


# -- contract signing: the invitation, the identity code and the signed copy, encrypted to Alice -------------

def _published_alice(world: World, seen: set[Path]) -> None:
    """Alice's certificate in the directory (submitted and proven here unless an earlier test did)."""
    key = _key(world, "directory")
    if world.client.simulate_get("/v1/directory/exists", params={"email": ALICE}, headers=key).json["exists"]:
        return
    body = {"email": ALICE, "certificate": base64.b64encode(pem.unarmor(world.files["cert"].read_bytes())[2]).decode(),
            "chain": [base64.b64encode(pem.unarmor(world.files["chain"].read_bytes())[2]).decode()]}
    assert world.client.simulate_post("/v1/directory/certificates", json=body, headers=key).status_code == 202
    code = re.search(r"enter this code with your address: (\d+)",
                     _read_as_alice(world, _next_mail(world, seen, to=ALICE)))
    assert code
    assert world.client.simulate_post("/v1/directory/proofs", json={"email": ALICE, "code": code[1]}).status_code == 200


def _envelope(world: World, key: dict[str, str]) -> dict[str, object]:
    boundary = "b0undary"
    envelope = {"title": "Tenancy agreement", "parties": [
        {"name": "Alice Example", "email": ALICE, "method": "email",
         "field": {"name": "Alice", "page": 1, "box": [50, 60, 250, 130]}},
        {"name": "Nora Nocert", "email": "nora@example.com", "role": "copy"}]}
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"envelope\"\r\n\r\n{json.dumps(envelope)}\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"document\"\r\n"
            "Content-Type: application/pdf\r\n\r\n").encode() + make_pdf() + f"\r\n--{boundary}--\r\n".encode()
    created = world.client.simulate_post("/v1/contracts", body=body, headers={
        **key, "Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert created.status_code == 201, created.text
    result: dict[str, object] = created.json
    return result


def test_a_contract_invites_validates_and_delivers_encrypted_to_a_directory_certificate(world: World):
    seen = set(world.mailbox.directory.glob("*.eml"))
    _published_alice(world, seen)
    key = _key(world, "contracts")
    created = _envelope(world, key)
    contract = created["id"]
    invitation = _read_as_alice(world, _next_mail(world, seen, to=ALICE))  # encrypted: she has a certificate
    link = next(p["link"] for p in created["parties"] if p["id"] == "p1")  # type: ignore[union-attr, index]
    assert link in invitation and "Tenancy agreement" in invitation

    started = world.client.simulate_post(f"/v1/contracts/{contract}/parties/p1/verification", headers=key)
    assert started.status_code == 200 and started.json["encrypted"] is True, started.text
    code = re.search(r"Your one-time code: (\d+)", _read_as_alice(world, _next_mail(world, seen, to=ALICE)))
    assert code
    confirmed = world.client.simulate_post(f"/v1/contracts/{contract}/parties/p1/verification/confirm", headers=key,
                                           json={"code": code[1]})
    assert confirmed.status_code == 200 and confirmed.json["status"] == "validated", confirmed.text
    signed = world.client.simulate_post(f"/v1/contracts/{contract}/parties/p1/sign", headers=key)
    assert signed.status_code == 200, signed.text

    final = world.client.simulate_get(f"/v1/contracts/{contract}/document", headers=key).content
    copies = {_next_mail(world, seen, to=ALICE), _next_mail(world, seen, to="nora@example.com")}
    for message in copies:
        raw = message.read_bytes()
        if b"application/pkcs7-mime" in raw:  # Alice's: the signed PDF, encrypted to her, byte for byte
            content = _read_as_alice(world, message)
            attachment = email.message_from_string(content, policy=email.policy.default)
            [part] = [p for p in attachment.iter_attachments() if p.get_content_type() == "application/pdf"]
            assert part.get_content() == final
        else:  # Nora has no certificate: a signed notice, never the document
            assert b"multipart/signed" in raw and b"%PDF" not in raw and b"not attached" in raw.replace(b"=\r\n", b"")
