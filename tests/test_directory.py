"""The certificate directory (issue 11), against a real dev PKI served by certomancer (OCSP, CRLs)
and the box's own app on Falcon's TestClient, with the session's token and database.

The proof mail is not sent: the S/MIME mailer does not exist yet. A recording ProofSender stands in
for it (the one test double here): it keeps what the mailer would have encrypted to the
certificate, so a test can play the owner who follows the link or types the code.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import falcon.testing
import pytest
from asn1crypto import pem
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs7

from firmware.box import Box
from firmware.certificates import load_certificates
from firmware.config import BoxConfig, DirectorySettings
from firmware.devpki import DevPki, PkiServer
from firmware.directory import (
    CHECKS,
    CertificateRefused,
    DirectoryService,
    ProofInvalid,
    ProofSecret,
    normalise,
)
from firmware.directory.addresses import AddressInvalid
from firmware.directory.store import DirectoryStore
from firmware.signing.revocation import RevocationService
from firmware.store.metering import RateLimited

from .support import free_port

PER_CLIENT = 5
PER_ADDRESS = 8


class RecordingSender:
    """Stands in for the S/MIME mailer: keeps each proof it would have mailed."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, ProofSecret]] = []

    def send_proof(self, address: str, certificate: bytes, link_or_code: ProofSecret) -> None:
        self.sent.append((address, certificate, link_or_code))

    def last(self, address: str) -> ProofSecret:
        return next(secret for to, _, secret in reversed(self.sent) if to == address)


@pytest.fixture(scope="module")
def mail_pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DevPki, PkiServer]]:
    """A dev PKI of the module's own: the re-check test revokes judy in it and restarts its server."""
    port = free_port()
    pki = DevPki(tmp_path_factory.mktemp("mail-pki"), f"http://127.0.0.1:{port}")
    box_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    pki.ensure(box_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))
    server = PkiServer(pki, port)
    server.start()
    yield pki, server
    server.stop()


@pytest.fixture(scope="module")
def sender() -> RecordingSender:
    return RecordingSender()


@pytest.fixture(scope="module")
def settings(mail_pki: tuple[DevPki, PkiServer], tmp_path_factory: pytest.TempPathFactory) -> DirectorySettings:
    pki, _ = mail_pki
    roots = tmp_path_factory.mktemp("directory") / "directory-roots.pem"
    roots.write_bytes(pem.armor("CERTIFICATE", pki.root_cert()))
    return DirectorySettings(enabled=True, trust_roots_file=roots, lookups_per_minute_per_client=PER_CLIENT,
                             lookups_per_minute_per_address=PER_ADDRESS, public_base_url="https://certs.example.org/",
                             proofs_per_hour_per_address=100)  # the tests reuse addresses; the limit has its own test


@pytest.fixture(scope="module")
def local_box(box_config: BoxConfig, settings: DirectorySettings, sender: RecordingSender) -> Iterator[Box]:
    box = Box.open(dataclasses.replace(box_config, directory=settings), proof_sender=sender)
    yield box
    box.token.close()


@pytest.fixture(scope="module")
def directory(local_box: Box) -> DirectoryService:
    assert local_box.directory is not None
    return local_box.directory


@pytest.fixture(scope="module")
def client(local_box: Box) -> falcon.testing.TestClient:
    return falcon.testing.TestClient(local_box.app())


_clients = iter(range(10**6))


def _key(local_box: Box, scopes: tuple[str, ...] = ("directory",)) -> dict[str, str]:
    key = local_box.clients.add(f"directory-{next(_clients)}-{datetime.now(UTC).timestamp()}", scopes=scopes)[1]
    return {"Authorization": f"Bearer {key}"}


def _client_id(local_box: Box) -> str:
    return local_box.clients.add(f"directory-svc-{next(_clients)}-{datetime.now(UTC).timestamp()}",
                                 scopes=("directory",))[0].id


# Service-level tests read what is published through `published` (what an LDAP front will serve),
# not `lookup`: a lookup is metered and counted against the address's rate.


def _token(secret: ProofSecret) -> str:
    assert secret.link is not None
    return secret.link.rsplit("/", 1)[1]


# -- addresses ---------------------------------------------------------------------------------------

def test_addresses_are_normalised_or_refused_with_a_reason():
    assert normalise("  Alice@Example.COM \n") == "alice@example.com"
    assert normalise("info@Bücher.example") == "info@xn--bcher-kva.example"
    for bad, reason in [("", "empty"), ("alice", "not an e-mail address"), ("a@b", "two labels"),
                        ("jörg@example.com", "ASCII"), ("a..b@example.com", "plain mailbox"),
                        ("a@-bad-.example", "not a valid host name")]:
        with pytest.raises(AddressInvalid, match=reason):
            normalise(bad)


# -- every check refuses with its name ------------------------------------------------------------------

@pytest.mark.parametrize(("user", "address", "check"), [
    ("erin", "erin@example.com", "email_protection"),
    ("frank", "frank@example.com", "encryption_key_usage"),
    ("grace", "grace@example.com", "address"),
    ("heidi", "heidi@example.com", "validity"),
    ("carol", "carol@example.com", "revocation"),
])
def test_each_refusal_names_its_check(directory, mail_pki, local_box, sender, user, address, check):
    pki, _ = mail_pki
    sent = len(sender.sent)
    with pytest.raises(CertificateRefused) as refused:
        directory.submit(address, pki.mail_user(user).cert, [pki.intermediate_cert()], source="console",
                         actor="admin:tests")
    assert refused.value.check == check and check in CHECKS
    assert f"refused by check {check!r}" in str(refused.value)
    assert len(sender.sent) == sent  # nothing mailed
    row = local_box.db.connect().execute(
        "SELECT details FROM audit_log WHERE action = 'directory.refuse' ORDER BY seq DESC LIMIT 1").fetchone()
    details = json.loads(row[0])
    assert details["check"] == check and "example.com" not in row[0]


def test_a_certificate_of_another_ca_fails_the_chain_check(directory, dev_pki):
    """The session's dev PKI is another CA: its alice does not chain to the directory's roots."""
    with pytest.raises(CertificateRefused) as refused:
        directory.submit("alice@example.com", dev_pki.mail_user("alice").cert, [dev_pki.intermediate_cert()],
                         source="console", actor="admin:tests")
    assert refused.value.check == "chain"


def test_the_refusal_over_http_is_422_naming_the_check(client, local_box, mail_pki):
    pki, _ = mail_pki
    body = {"email": "Erin@Example.com", "certificate": base64.b64encode(pki.mail_user("erin").cert).decode()}
    result = client.simulate_post("/v1/directory/certificates", json=body, headers=_key(local_box))
    assert (result.status_code, result.json["error"]) == (422, "certificate_refused"), result.text
    assert "'email_protection'" in result.json["message"]


# -- submit → pending, invisible → proof → published -------------------------------------------------------

def test_submit_prove_publish_look_up(client, local_box, mail_pki, sender):
    pki, _ = mail_pki
    alice = pki.mail_user("alice").cert
    headers = _key(local_box)
    body = {"email": " ALICE@example.com", "certificate": pem.armor("CERTIFICATE", alice).decode(),
            "chain": [base64.b64encode(pki.intermediate_cert()).decode()]}
    submitted = client.simulate_post("/v1/directory/certificates", json=body, headers=headers)
    assert submitted.status_code == 202, submitted.text
    assert submitted.json["status"] == "pending" and submitted.json["email"] == "alice@example.com"
    assert "token" not in submitted.text and "code" not in submitted.json  # the secret goes to the mailbox only
    address, mailed_to_cert, secret = sender.sent[-1]
    assert (address, mailed_to_cert) == ("alice@example.com", alice)
    assert secret.link and secret.link.startswith("https://certs.example.org/directory/confirm/")

    # not proven yet: exactly what an unknown address gets
    pending = client.simulate_get("/v1/directory/certificates", params={"email": "alice@example.com"},
                                  headers=headers)
    unknown = client.simulate_get("/v1/directory/certificates", params={"email": "nobody@example.com"},
                                  headers=headers)
    assert (pending.status_code, pending.json) == (unknown.status_code, unknown.json) == (
        404, {"error": "no_certificate", "message": "no certificate for this address"})
    assert client.simulate_get("/v1/directory/exists", params={"email": "alice@example.com"},
                               headers=headers).json == {"exists": False}

    proven = client.simulate_post(f"/v1/directory/proofs/{_token(secret)}")  # no API key: the owner
    assert proven.status_code == 200, proven.text
    assert proven.json == {"email": "alice@example.com", "fingerprint": submitted.json["fingerprint"],
                           "status": "published"}
    again = client.simulate_post(f"/v1/directory/proofs/{_token(secret)}")
    assert (again.status_code, again.json["error"]) == (404, "proof_invalid")

    headers = _key(local_box)  # a fresh client: the first has spent its lookups per minute
    found = client.simulate_get("/v1/directory/certificates", params={"email": "Alice@EXAMPLE.com "},
                                headers=headers)
    assert found.status_code == 200, found.text
    (entry,) = found.json["certificates"]
    assert base64.b64decode(entry["certificate"]) == alice
    assert [base64.b64decode(c) for c in entry["chain"]] == [pki.intermediate_cert(), pki.root_cert()]
    assert client.simulate_get("/v1/directory/exists", params={"email": "alice@example.com"},
                               headers=headers).json == {"exists": True}

    as_pem = client.simulate_get("/v1/directory/certificates",
                                 params={"email": "alice@example.com", "format": "pem"}, headers=headers)
    assert as_pem.headers["content-type"] == "application/pem-certificate-chain"
    assert [der for _, _, der in pem.unarmor(as_pem.content, multiple=True)] == \
        [alice, pki.intermediate_cert(), pki.root_cert()]
    as_der = client.simulate_get("/v1/directory/certificates", params={"email": "alice@example.com"},
                                 headers={**headers, "Accept": "application/pkcs7-mime"})
    assert as_der.headers["content-type"].startswith("application/pkcs7-mime")
    certs = pkcs7.load_der_pkcs7_certificates(as_der.content)
    # a PKCS #7 certificate set is a DER SET OF: sorted by encoding, not in chain order
    assert sorted(c.public_bytes(serialization.Encoding.DER) for c in certs) == \
        sorted([alice, pki.intermediate_cert(), pki.root_cert()])


def test_a_newer_certificate_supersedes_the_older(directory, local_box, mail_pki, sender):
    pki, _ = mail_pki
    first, renewed = pki.mail_user("alice").cert, pki.mail_user("alice-renewed").cert
    chain = [pki.intermediate_cert()]
    if not directory.published(local_box.db.connect(), "alice@example.com"):  # run alone: publish the first
        directory.submit("alice@example.com", first, chain, source="api", actor="admin:tests")
        directory.confirm(_token(sender.last("alice@example.com")))
    directory.submit("alice@example.com", renewed, chain, source="mail", actor="mail")
    still = directory.published(local_box.db.connect(), "alice@example.com")
    assert [row.certificate for row in still] == [first]  # the renewed one waits for its proof
    assert directory.confirm(_token(sender.last("alice@example.com"))).status == "published"
    now = directory.published(local_box.db.connect(), "alice@example.com")
    assert [row.certificate for row in now] == [renewed]
    statuses = dict(local_box.db.connect().execute(
        "SELECT fingerprint, status FROM directory_certificates WHERE address = 'alice@example.com'").fetchall())
    assert sorted(statuses.values()) == ["published", "superseded"]


def test_the_typed_code_proves_control_and_wrong_codes_are_limited(directory, local_box, mail_pki, sender, settings):
    pki, _ = mail_pki
    dave = pki.mail_user("dave").cert  # EC P-256: keyAgreement
    directory.submit("dave@example.com", dave, [pki.intermediate_cert()], source="api", actor="admin:tests")
    code = sender.last("dave@example.com").code
    wrong = "00000000" if code != "00000000" else "11111111"
    for _ in range(settings.proof_max_attempts):
        with pytest.raises(ProofInvalid):
            directory.confirm_code("dave@example.com", wrong)
    with pytest.raises(ProofInvalid):  # the attempts are spent: the right code no longer works
        directory.confirm_code("dave@example.com", code)
    directory.submit("dave@example.com", dave, [pki.intermediate_cert()], source="api", actor="admin:tests")
    assert directory.confirm_code(" Dave@Example.com", sender.last("dave@example.com").code).status == "published"
    assert directory.published(local_box.db.connect(), "dave@example.com")


def test_the_owner_unpublishes_through_a_proof_and_an_admin_directly(directory, local_box, mail_pki, sender):
    pki, _ = mail_pki
    dave = pki.mail_user("dave").cert
    if not directory.published(local_box.db.connect(), "dave@example.com"):
        directory.submit("dave@example.com", dave, [pki.intermediate_cert()], source="api", actor="admin:tests")
        directory.confirm(_token(sender.last("dave@example.com")))
    (row,) = directory.published(local_box.db.connect(), "dave@example.com")
    directory.request_unpublish("dave@example.com", row.fingerprint, actor="owner")
    proof = sender.last("dave@example.com")
    assert proof.purpose == "unpublish"
    assert directory.published(local_box.db.connect(), "dave@example.com")  # nothing changes before the proof
    assert directory.confirm(_token(proof)).status == "unpublished"
    assert not directory.published(local_box.db.connect(), "dave@example.com")

    directory.submit("dave@example.com", dave, [pki.intermediate_cert()], source="console", actor="admin:tests")
    directory.confirm(_token(sender.last("dave@example.com")))
    directory.unpublish("dave@example.com", row.fingerprint, actor="admin:tests")
    assert not directory.published(local_box.db.connect(), "dave@example.com")
    entry = local_box.db.connect().execute(
        "SELECT actor, details FROM audit_log WHERE action = 'directory.unpublish' ORDER BY seq DESC LIMIT 1").fetchone()
    assert entry[0] == "admin:tests" and json.loads(entry[1])["reason"] == "admin"


def test_concurrent_lookups_stay_within_the_rate(directory, local_box):
    """Each worker thread has its own SQLite connection, as worker processes would: the count and the
    charge share one write transaction, so no interleaving lets a sixth lookup through."""
    client_id = _client_id(local_box)
    outcomes: list[str] = []
    lock = threading.Lock()

    def look(i: int) -> None:
        try:
            directory.lookup(f"parallel{i}@example.com", client_id)
            outcome = "ok"
        except RateLimited:
            outcome = "429"
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=look, args=(i,)) for i in range(3 * PER_CLIENT)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["429"] * (2 * PER_CLIENT) + ["ok"] * PER_CLIENT


# -- re-check: a certificate revoked after publishing is unpublished -----------------------------------------

def test_recheck_unpublishes_a_certificate_revoked_later_and_an_expired_one(
        directory, local_box, mail_pki, sender, settings):
    pki, server = mail_pki
    judy = pki.mail_user("judy").cert
    directory.submit("judy@example.com", judy, [pki.intermediate_cert()], source="api", actor="admin:tests")
    directory.confirm(_token(sender.last("judy@example.com")))
    assert directory.published(local_box.db.connect(), "judy@example.com")
    assert all(change.address != "judy@example.com" for change in directory.recheck())

    pki.revoke("judy")  # the CA revokes it: its CRL and OCSP responder say so once restarted
    server.stop()
    server.start()
    # The next night's re-check, in a process of its own: a fresh revocation cache (the box's
    # keeps the "good" answer it fetched at publication until its nextUpdate or five minutes).
    nightly = DirectoryService(local_box.db, RevocationService(load_certificates(settings.trust_roots_file)), settings,
                               RecordingSender())
    changes = nightly.recheck()
    assert ("judy@example.com", "revoked") in {(c.address, c.reason) for c in changes}
    assert not directory.published(local_box.db.connect(), "judy@example.com")

    # dave's certificate expires in two years: a re-check then unpublishes it without asking anyone
    later = datetime.now(UTC) + timedelta(days=800)
    if not directory.published(local_box.db.connect(), "dave@example.com"):
        directory.submit("dave@example.com", pki.mail_user("dave").cert, [pki.intermediate_cert()],
                         source="api", actor="admin:tests")
        directory.confirm(_token(sender.last("dave@example.com")))
    expired = nightly.recheck(later)
    assert ("dave@example.com", "expired") in {(c.address, c.reason) for c in expired}
    entry = local_box.db.connect().execute(
        "SELECT actor, details FROM audit_log WHERE action = 'directory.unpublish' ORDER BY seq DESC LIMIT 1").fetchone()
    assert entry[0] == "box" and json.loads(entry[1])["reason"] == "expired"


def _withdrawn(directory: DirectoryService, address: str) -> str:
    """``address`` with none of its certificates published or pending (earlier tests may have left one)."""
    for row in directory.certificates(address, actor="admin:tests"):
        if row.status in ("published", "pending"):
            directory.unpublish(address, row.fingerprint, actor="admin:tests")
    return address


def test_recheck_drops_a_pending_certificate_whose_proof_expired_unanswered(directory, local_box, mail_pki, settings):
    pki, _ = mail_pki
    submitted = datetime.now(UTC) + timedelta(days=60)  # a clock of its own: its window holds only this test's mails
    sender = RecordingSender()
    box = DirectoryService(local_box.db, RevocationService(load_certificates(settings.trust_roots_file)), settings,
                           sender, clock=lambda: submitted)
    row = box.submit(_withdrawn(directory, "dave@example.com"), pki.mail_user("dave").cert, [pki.intermediate_cert()], source="api",
                     actor="admin:tests")
    assert row.status == "pending"
    assert "dave@example.com" not in {c.address for c in box.recheck(submitted + timedelta(minutes=5))}  # still open
    changes = box.recheck(submitted + timedelta(seconds=settings.proof_lifetime_s + 1))
    assert ("dave@example.com", "unproven") in {(c.address, c.reason) for c in changes}
    [ended] = [r for r in directory.certificates("dave@example.com", actor="admin:tests") if r.id == row.id]
    assert ended.status == "unpublished"
    with pytest.raises(ProofInvalid):  # the old link is dead
        box.confirm(_token(sender.last("dave@example.com")))


def test_confirmation_mails_to_one_address_are_limited_per_hour(directory, local_box, mail_pki, settings):
    """A valid certificate must not become a way to flood its owner's mailbox with proof mails."""
    pki, _ = mail_pki
    address = _withdrawn(directory, "dave@example.com")
    hour_ago, address_hash = datetime.now(UTC) - timedelta(hours=1), DirectoryStore(local_box.db).address_hash(address)
    earlier = sum(DirectoryStore.events_since(local_box.db.connect(), action, hour_ago, address_hash=address_hash)
                  for action in ("directory.submit", "directory.unpublish_requested"))  # other tests' mails to dave
    clock = [datetime.now(UTC)]
    sender = RecordingSender()
    limited = DirectoryService(local_box.db, RevocationService(load_certificates(settings.trust_roots_file)),
                               dataclasses.replace(settings, proofs_per_hour_per_address=earlier + 2), sender,
                               clock=lambda: clock[0])
    client_id = _client_id(local_box)
    dave = pki.mail_user("dave").cert, [pki.intermediate_cert()]
    for _ in range(2):
        limited.submit(address, *dave, source="api", actor="tests", client_id=client_id)
    with pytest.raises(RateLimited, match="confirmation mails"):
        limited.submit(address, *dave, source="api", actor="tests", client_id=client_id)
    assert len(sender.sent) == 2
    calls = local_box.db.connect().execute(
        "SELECT COUNT(*) FROM metered_calls WHERE client_id = ? AND kind = 'directory.submit'", (client_id,)).fetchone()[0]
    assert calls == 2  # the refused one is not charged
    clock[0] += timedelta(minutes=61)  # an hour later the address may get mail again
    limited.submit(address, *dave, source="api", actor="tests", client_id=client_id)
    assert len(sender.sent) == 3


# -- lookups: scope, metering, rate limits ---------------------------------------------------------------------

def test_lookups_without_the_directory_scope_are_403(client, local_box):
    result = client.simulate_get("/v1/directory/certificates", params={"email": "alice@example.com"},
                                 headers=_key(local_box, ("hash", "pdf")))
    assert (result.status_code, result.json["error"]) == (403, "scope_denied")
    assert "certificate directory" in result.json["message"]


def test_unknown_address_lookups_hit_429_at_the_client_rate(client, local_box):
    headers = _key(local_box)
    statuses = [client.simulate_get("/v1/directory/exists", params={"email": f"guess{i}@example.com"},
                                    headers=headers).status_code for i in range(PER_CLIENT + 1)]
    assert statuses == [200] * PER_CLIENT + [429]
    refused = client.simulate_get("/v1/directory/certificates", params={"email": "guess@example.com"},
                                  headers=headers)
    assert (refused.status_code, refused.json["error"]) == (429, "rate_limited")
    usage = client.simulate_get("/v1/usage", headers=headers).json
    assert usage["client"]["calls_used"] == PER_CLIENT  # each lookup was a metered call; refusals were not
    assert usage["usage"][0]["endpoint"] == "directory"


def test_one_address_is_limited_across_clients(client, local_box):
    target = {"email": f"target-{datetime.now(UTC).timestamp()}@example.com"}
    first, second = _key(local_box), _key(local_box)
    statuses = [client.simulate_get("/v1/directory/exists", params=target, headers=first).status_code
                for _ in range(PER_CLIENT)]
    statuses += [client.simulate_get("/v1/directory/exists", params=target, headers=second).status_code
                 for _ in range(PER_ADDRESS - PER_CLIENT + 1)]
    assert statuses == [200] * PER_ADDRESS + [429]


def test_lookups_are_exact_and_bounded(client, local_box):
    headers = _key(local_box)
    for params in ({}, {"email": "alice"}, {"email": "alice@example.com", "limit": "10"}):
        result = client.simulate_get("/v1/directory/certificates", params=params, headers=headers)
        assert result.status_code == 400 and result.json["error"] in ("invalid_address", "invalid_request"), \
            (params, result.text)
    # '*' and '%' are letters of a mailbox name, not patterns: nothing of alice's comes back
    for pattern in ("*@example.com", "%@example.com", "a*@example.com"):
        result = client.simulate_get("/v1/directory/certificates", params={"email": pattern}, headers=headers)
        assert (result.status_code, result.json["error"]) == (404, "no_certificate"), (pattern, result.text)


def test_the_audit_log_names_addresses_only_by_their_hash(local_box):
    rows = local_box.db.connect().execute("SELECT details FROM audit_log WHERE action LIKE 'directory.%'").fetchall()
    assert rows and not [row[0] for row in rows if "example.com" in row[0]]


def test_openapi_documents_the_directory_where_it_is_served(client):
    paths = client.simulate_get("/openapi.json").json["paths"]
    assert {"/v1/directory/certificates", "/v1/directory/exists", "/v1/directory/proofs/{token}"} <= set(paths)


def test_the_mailed_link_opens_a_page_that_asks_and_only_its_button_publishes(client, local_box, mail_pki, sender):
    """A mail scanner or link preview GETs the link: that must publish nothing."""
    pki, _ = mail_pki
    dave = pki.mail_user("dave").cert
    submitted = client.simulate_post("/v1/directory/certificates", headers=_key(local_box), json={
        "email": "dave@example.com", "certificate": base64.b64encode(dave).decode()})
    assert submitted.status_code == 202, submitted.text
    page = f"/directory/confirm/{_token(sender.last('dave@example.com'))}"
    for _ in range(2):
        asked = client.simulate_get(page)
        assert asked.status_code == 200 and "dave@example.com" in asked.text and "<form method=post>" in asked.text
        assert asked.headers["referrer-policy"] == "no-referrer" and asked.headers["cache-control"] == "no-store"
        assert "default-src 'none'" in asked.headers["content-security-policy"]
    assert not client.simulate_get("/v1/directory/exists", params={"email": "dave@example.com"},
                                   headers=_key(local_box)).json["exists"]
    done = client.simulate_post(page)
    assert done.status_code == 200 and "is published" in done.text, done.text
    assert client.simulate_get("/v1/directory/exists", params={"email": "dave@example.com"},
                               headers=_key(local_box)).json["exists"]
    spent = client.simulate_get(page)
    assert spent.status_code == 404 and "Link not valid" in spent.text
    assert "<script" not in asked.text
