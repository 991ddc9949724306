"""Contract signing (issue 12) through the real HTTP API on Falcon's TestClient: the session's
SoftHSM2 token (the box's key, its signer CA key, each party's one-time key), the dev PKI served
by certomancer (TSA, OCSP, CRLs), and a real webhook receiver on 127.0.0.1.

The final PDF is judged by tools nobody here wrote: pdfsig (poppler), pyHanko's validator offline
(from the PDF's own DSS), qpdf --check; the completion certificate's text by pdftotext.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import io
import json
import secrets
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, ClassVar

import falcon.testing
import pytest
from asn1crypto import pem
from asn1crypto import x509 as asn1_x509
from pyhanko.pdf_utils.generic import TextStringObject, pdf_name
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter

from firmware.box import Box
from firmware.config import BoxConfig, ContractsSettings
from firmware.contracts import UnknownContract
from firmware.devpki import PkiServer
from firmware.signing.pdf_form_fields import FormField, add_form_fields
from firmware.webhooks import WebhookSender

from .pdfs import assert_well_formed, make_pdf, pdfsig_results, reader, validate
from .support import free_port

BASE_URL = "https://sign.example.org"


@pytest.fixture(scope="module")
def contract_box(box_config: BoxConfig, pki_server: PkiServer) -> Iterator[Box]:
    config = dataclasses.replace(box_config, contracts=ContractsSettings(
        enabled=True, public_base_url=BASE_URL, organisation="Example Ltd"))
    box = Box.open(config)
    yield box
    box.token.close()


@pytest.fixture(scope="module")
def client(contract_box: Box) -> falcon.testing.TestClient:
    return falcon.testing.TestClient(contract_box.app())


@pytest.fixture(scope="module")
def key(contract_box: Box) -> str:
    return contract_box.clients.add(f"contracts-{secrets.token_hex(4)}", scopes=("contracts",))[1]


class Receiver(BaseHTTPRequestHandler):
    """The business system's webhook endpoint: verifies each call with the README's snippet."""

    secret: bytes = b""
    events: ClassVar[list[dict[str, Any]]] = []
    refuse = False

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if Receiver.refuse:
            self.send_response(503)
            self.end_headers()
            return
        # -- the receiver's code, as the README shows it -------------------------------------------
        parts = dict(item.split("=", 1) for item in self.headers["Esignbox-Signature"].split(","))
        expected = hmac.new(Receiver.secret, parts["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
        fresh = abs(time.time() - int(parts["t"])) < 300
        ok = hmac.compare_digest(expected, parts["v1"]) and fresh
        # ----------------------------------------------------------------------------------------------
        Receiver.events.append({"ok": ok, "id": self.headers["Esignbox-Event-Id"], **json.loads(body)})
        self.send_response(204 if ok else 400)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def receiver() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", free_port()), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hooks"
    server.shutdown()


def _multipart(envelope: dict[str, Any], pdf: bytes) -> tuple[bytes, str]:
    boundary = secrets.token_hex(12)
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"envelope\"\r\n"
            "Content-Type: application/json\r\n\r\n").encode() + json.dumps(envelope).encode() + (
        f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"document\"; filename=\"c.pdf\"\r\n"
        "Content-Type: application/pdf\r\n\r\n").encode() + pdf + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def _create(client: falcon.testing.TestClient, key: str, envelope: dict[str, Any],
            pdf: bytes | None = None) -> falcon.testing.Result:
    body, content_type = _multipart(envelope, pdf if pdf is not None else make_pdf(pages=2))
    return client.simulate_post("/v1/contracts", body=body, headers={
        "Authorization": f"Bearer {key}", "Content-Type": content_type})


def _call(client: falcon.testing.TestClient, key: str, path: str, **body: Any) -> falcon.testing.Result:
    return client.simulate_post(path, json=body, headers={"Authorization": f"Bearer {key}"})


def _party(name: str, order: int, code: str, page: int = 1, x: int = 50) -> dict[str, Any]:
    return {"name": name, "email": f"{name.split()[0].lower()}@example.com", "order": order,
            "method": "access_code", "access_code": code,
            "field": {"name": name.split()[0], "page": page, "box": [x, 60, x + 200, 130]}}


def _validate_and_sign(client: falcon.testing.TestClient, key: str, contract_id: str, party_id: str,
                       code: str) -> falcon.testing.Result:
    path = f"/v1/contracts/{contract_id}/parties/{party_id}"
    started = _call(client, key, path + "/verification")
    assert started.status_code == 200 and started.json == {"method": "access_code", "sent": False}, started.text
    confirmed = _call(client, key, path + "/verification/confirm", code=code)
    assert confirmed.status_code == 200 and confirmed.json["status"] == "validated", confirmed.text
    return _call(client, key, path + "/sign")


# -- the whole process ----------------------------------------------------------------------------------

def test_three_parties_and_the_organisation_sign_one_long_term_valid_pdf(
        client, key, contract_box, receiver, tmp_path):
    envelope = {"title": "Employment agreement", "organisation_signature": "first", "webhook_url": receiver,
                "parties": [_party("Alice Example", 1, "A-7731"), _party("Bob Example", 1, "B-1187", x=300),
                            _party("Carol Manager", 2, "C-5521", page=2),
                            {"name": "Dan Copy", "email": "dan@example.com", "role": "copy"}]}
    created = _create(client, key, envelope)
    assert created.status_code == 201, created.text
    Receiver.secret = created.json["webhook_secret"].encode()
    contract_id = created.json["id"]
    parties = {p["id"]: p for p in created.json["parties"]}
    assert [parties[p]["status"] for p in ("p1", "p2", "p3", "p4")] == ["invited", "invited", "waiting", "copy"]
    assert parties["p1"]["link"].startswith(BASE_URL + "/sign/") and "link" not in parties["p3"]

    # the third party waits for the first two; nobody signs unvalidated
    assert _call(client, key, f"/v1/contracts/{contract_id}/parties/p3/verification").json["error"] == "not_your_turn"
    unvalidated = _call(client, key, f"/v1/contracts/{contract_id}/parties/p1/sign")
    assert (unvalidated.status_code, unvalidated.json["error"]) == (403, "party_unverified")
    wrong = _call(client, key, f"/v1/contracts/{contract_id}/parties/p1/verification/confirm", code="A-0000")
    assert (wrong.status_code, wrong.json["error"]) == (422, "verification_failed")

    for party_id, code in (("p1", "A-7731"), ("p2", "B-1187")):
        signed = _validate_and_sign(client, key, contract_id, party_id, code)
        assert signed.status_code == 200 and signed.json["status"] == "signed", signed.text
    status = client.simulate_get(f"/v1/contracts/{contract_id}", headers={"Authorization": f"Bearer {key}"}).json
    assert {p["id"]: p["status"] for p in status["parties"]}["p3"] == "invited"
    signed = _validate_and_sign(client, key, contract_id, "p3", "C-5521")
    assert signed.status_code == 200, signed.text

    status = client.simulate_get(f"/v1/contracts/{contract_id}", headers={"Authorization": f"Bearer {key}"}).json
    assert status["status"] == "completed", status
    final = client.simulate_get(f"/v1/contracts/{contract_id}/document", headers={"Authorization": f"Bearer {key}"})
    assert final.status_code == 200 and final.headers["content-type"] == "application/pdf"
    pdf = final.content

    # tools nobody here wrote: qpdf, pdfsig, pyHanko offline
    assert_well_formed(pdf, tmp_path)
    fields = [sig.field_name for sig in reader(pdf).embedded_regular_signatures]
    assert len(fields) == 4 and {"Alice", "Bob", "Carol"} <= set(fields)  # the organisation's + one per party
    results = pdfsig_results(pdf, tmp_path)
    assert all(results[f] == "Signature is Valid." for f in fields) and len(results) == 5, results
    statuses = validate(pdf, _roots(contract_box), offline=True)
    assert len(statuses) == 4 and all(s.intact and s.valid and s.trusted for s in statuses)
    subjects = {s.signing_cert.subject.native.get("common_name") for s in statuses}
    assert {"Alice Example", "Bob Example", "Carol Manager"} <= subjects  # a certificate per party
    assert reader(pdf).embedded_timestamp_signatures, "the final step adds a document timestamp (B-LTA)"

    # the completion certificate: signed by the box, with every party and both hashes
    certificate = client.simulate_get(f"/v1/contracts/{contract_id}/certificate",
                                      headers={"Authorization": f"Bearer {key}"})
    assert certificate.status_code == 200
    path = tmp_path / "completion.pdf"
    path.write_bytes(certificate.content)
    text = subprocess.run(["pdftotext", str(path), "-"], capture_output=True, text=True, check=True).stdout
    assert all(name in text for name in ("Alice Example", "Bob Example", "Carol Manager", "Dan Copy"))
    assert hashlib.sha256(pdf).hexdigest() in text.replace("\n", "") or hashlib.sha256(pdf).hexdigest()[:32] in text
    assert_well_formed(certificate.content, tmp_path)

    # every state change reached the webhook receiver, verified
    WebhookSender(contract_box.db, contract_box.config.webhooks).deliver_due()
    kinds = [event["type"] for event in Receiver.events if event["data"]["contract"] == contract_id]
    assert all(event["ok"] for event in Receiver.events)
    assert kinds[0] == "contract.created" and kinds[-1] == "contract.completed"
    assert kinds.count("contract.signed") == 3
    invited = {e["data"]["party"]: e["data"]["link"] for e in Receiver.events
               if e["data"]["contract"] == contract_id and e["type"] == "contract.invited"}
    assert set(invited) == {"p1", "p2", "p3"} and all(link.startswith(BASE_URL + "/sign/") for link in invited.values())
    trail = contract_box.db.connect().execute("SELECT group_concat(detail) FROM contract_events WHERE contract_id = ?",
                                              (contract_id,)).fetchone()[0]
    assert not any(link.rsplit("/", 1)[1] in trail for link in invited.values())  # links stay out of the trail


def _roots(box: Box) -> list[asn1_x509.Certificate]:
    return [asn1_x509.Certificate.load(der) for _, _, der in pem.unarmor(box.config.trust_roots_file.read_bytes(),
                                                                          multiple=True)]


# -- bad input changes nothing ---------------------------------------------------------------------------

@pytest.mark.parametrize(("change", "message"), [
    ({"parties": []}, "parties holds 1 to 10 items"),
    ({"parties": [{"name": "A", "email": "a@example.com", "role": "copy"}]}, "at least one party must sign"),
    ({"parties": [{"name": "A", "email": "not-an-address"}]}, "address"),
    ({"parties": [{"name": "A", "email": "a@example.com", "field": {"name": "Nope"}}]}, "no empty signature field"),
    ({"parties": [{"name": "A", "email": "a@example.com", "field": {"name": "X", "page": 9, "box": [1, 1, 9, 9]}}]},
     "page 9"),
    ({"parties": [{"name": "A", "email": "a@example.com", "method": "access_code",
                   "field": {"name": "X", "page": 1, "box": [1, 1, 9, 9]}}]}, "access_code"),
    ({"parties": [{**_party("Alice Example", 1, "x"), "fields": [{"kind": "text", "name": "Alice"}]}]},
     "field names must differ"),
    ({"parties": [{**_party("Alice Example", 1, "x"), "fields": [{"kind": "text", "name": "T", "page": 3,
                                                                  "box": [1, 1, 9, 9]}]}]}, "page 3"),
    ({"parties": [{**_party("Alice Example", 1, "x"), "fields": [{"kind": "text", "name": "Missing"}]}]},
     "no form field 'Missing'"),
    ({"parties": [{**_party("Alice Example", 1, "x"), "fields": [{"kind": "text", "name": "T", "page": 1}]}]},
     "both page and box"),
    ({"parties": [{**_party("Alice Example", 1, "x"), "fields": [{"kind": "radio", "name": "T"}]}]}, "unknown"),
    ({"parties": [{**_party("Alice Example", 1, "x"), "fields": [
        {"kind": "text", "name": f"T{i}", "page": 1, "box": [1, i, 9, i + 5]} for i in range(21)]}]}, "0 to 20"),
    ({"parties": [_party("Alice Example", 1, "x"), {"name": "C", "email": "c@example.com", "role": "copy", "fields": [
        {"kind": "text", "name": "T", "page": 1, "box": [1, 1, 9, 9]}]}]}, "copy-only party has no field"),
    ({"organisation_signature": "sometimes"}, "organisation_signature"),
    ({"expires_in_days": 1000}, "expires_in_days"),
    ({"webhook_url": "http://169.254.169.254/latest/meta-data/"}, "link-local"),
])
def test_a_bad_envelope_is_refused_with_its_reason_and_nothing_is_kept(client, key, contract_box, change, message):
    envelope = {"title": "Bad", "parties": [_party("Alice Example", 1, "x")], **change}
    before = contract_box.db.connect().execute("SELECT COUNT(*) FROM contracts").fetchone()[0]
    result = _create(client, key, envelope)
    assert result.status_code in (400, 422), result.text
    assert message in result.json["message"], result.json
    assert contract_box.db.connect().execute("SELECT COUNT(*) FROM contracts").fetchone()[0] == before


def test_a_damaged_pdf_and_a_missing_part_are_refused(client, key):
    result = _create(client, key, {"title": "x", "parties": [_party("Alice Example", 1, "x")]}, pdf=b"%PDF-1.7 junk")
    assert result.status_code == 422 and result.json["error"] == "invalid_pdf"
    missing = client.simulate_post("/v1/contracts", json={"title": "x"}, headers={"Authorization": f"Bearer {key}"})
    assert missing.status_code == 400 and "multipart/form-data" in missing.json["message"]


def test_without_the_contracts_scope_it_is_403_and_another_clients_envelope_is_unknown(client, key, contract_box):
    other = contract_box.clients.add(f"other-{secrets.token_hex(4)}", scopes=("hash",))[1]
    result = _create(client, other, {"title": "x", "parties": [_party("Alice Example", 1, "x")]})
    assert (result.status_code, result.json["error"]) == (403, "scope_denied")
    created = _create(client, key, {"title": "Mine", "parties": [_party("Alice Example", 1, "x")]})
    third = contract_box.clients.add(f"third-{secrets.token_hex(4)}", scopes=("contracts",))[1]
    peek = client.simulate_get(f"/v1/contracts/{created.json['id']}", headers={"Authorization": f"Bearer {third}"})
    assert (peek.status_code, peek.json["error"]) == (404, "unknown_contract")


# -- decline, cancel, expiry, attempts, reassign -------------------------------------------------------------

def test_a_declined_envelope_says_why_and_takes_no_more_signatures(client, key):
    created = _create(client, key, {"title": "Declined", "parties": [
        _party("Alice Example", 1, "A-1"), _party("Bob Example", 1, "B-1", x=300)]}).json
    declined = _call(client, key, f"/v1/contracts/{created['id']}/parties/p2/decline", reason="Salary is wrong")
    assert declined.status_code == 200 and declined.json["status"] == "declined"
    assert "Salary is wrong" in declined.json["end_reason"]
    late = _call(client, key, f"/v1/contracts/{created['id']}/parties/p1/verification")
    assert (late.status_code, late.json["error"]) == (409, "contract_closed") and "declined" in late.json["message"]


def test_a_cancelled_envelope_and_its_links_stop(client, key, contract_box):
    created = _create(client, key, {"title": "Cancelled", "parties": [_party("Alice Example", 1, "A-1")]}).json
    cancelled = _call(client, key, f"/v1/contracts/{created['id']}/cancel", reason="sent by mistake")
    assert cancelled.json["status"] == "cancelled"
    token = created["parties"][0]["link"].rsplit("/", 1)[1]
    page = client.simulate_get(f"/sign/{token}")
    assert page.status_code == 410 and "sent by mistake" in page.text  # the link says why, and does nothing more
    assert client.simulate_get(f"/sign/{token}/document").status_code in (403, 410)
    again = _call(client, key, f"/v1/contracts/{created['id']}/cancel")
    assert again.json["error"] == "contract_closed"


def test_wrong_access_codes_are_limited(client, key):
    created = _create(client, key, {"title": "Attempts", "parties": [_party("Alice Example", 1, "A-42")]}).json
    path = f"/v1/contracts/{created['id']}/parties/p1/verification/confirm"
    reasons = [_call(client, key, path, code=f"guess-{i}").json["message"] for i in range(6)]
    assert "wrong code" in reasons[0] and "too many attempts" in reasons[-1]
    right = _call(client, key, path, code="A-42")
    assert right.status_code == 422 and "too many attempts" in right.json["message"]  # locked, even for the right code


def test_an_expired_envelope_says_so(client, key, contract_box):
    created = _create(client, key, {"title": "Expires", "expires_in_days": 1,
                                    "parties": [_party("Alice Example", 1, "A-1")]}).json
    conn = contract_box.db.connect()
    with conn:
        conn.execute("UPDATE contracts SET expires_at = '2000-01-01T00:00:00+00:00' WHERE id = ?", (created["id"],))
    result = _call(client, key, f"/v1/contracts/{created['id']}/parties/p1/verification")
    assert result.json["error"] == "contract_closed" and "expired" in result.json["message"]


def test_a_reassigned_party_is_replaced_by_a_delegate_who_validates_in_turn(client, key):
    created = _create(client, key, {"title": "Delegate", "parties": [_party("Alice Example", 1, "A-1")]}).json
    moved = _call(client, key, f"/v1/contracts/{created['id']}/parties/p1/reassign", name="Erin Deputy",
                  email="erin@example.com", method="access_code", access_code="E-9")
    assert moved.status_code == 200, moved.text
    parties = {p["id"]: p for p in moved.json["parties"]}
    assert parties["p1"]["status"] == "replaced" and parties["p2"]["status"] == "invited"
    assert parties["p2"]["replaces"] == "p1"
    old = _call(client, key, f"/v1/contracts/{created['id']}/parties/p1/verification")
    assert old.json["error"] == "not_your_turn"
    signed = _validate_and_sign(client, key, created["id"], "p2", "E-9")
    assert signed.status_code == 200 and signed.json["status"] == "signed", signed.text


def test_the_envelope_is_one_metered_call_and_the_quota_holds(client, contract_box):
    limited, limited_key = contract_box.clients.add(f"one-call-{secrets.token_hex(4)}", scopes=("contracts",), calls=1)
    first = _create(client, limited_key, {"title": "One", "parties": [_party("Alice Example", 1, "A-1")]})
    assert first.status_code == 201, first.text
    second = _create(client, limited_key, {"title": "Two", "parties": [_party("Alice Example", 1, "A-1")]})
    assert (second.status_code, second.json["error"]) == (402, "quota_exhausted")
    conn = contract_box.db.connect()
    calls = conn.execute("SELECT COUNT(*) FROM metered_calls WHERE client_id = ? AND kind = 'contract'",
                         (limited.id,)).fetchone()[0]
    assert calls == 1
    assert conn.execute("SELECT COUNT(*) FROM contracts WHERE client_id = ?", (limited.id,)).fetchone()[0] == 1


def test_the_signing_page_shows_nothing_without_a_valid_link(client):
    result = client.simulate_get("/sign/not-a-real-token")
    assert result.status_code == 404 and "Link not valid" in result.text
    assert "default-src 'none'" in result.headers["content-security-policy"]


def test_parties_who_do_not_act_are_reminded_with_a_new_link(client, key, contract_box):
    created = _create(client, key, {"title": "Reminded", "reminder_days": 2,
                                    "parties": [_party("Alice Example", 1, "A-1")]}).json
    assert created["reminder_days"] == 2
    service = contract_box.contracts
    assert service is not None
    first = created["parties"][0]["link"].rsplit("/", 1)[1]
    now = datetime.now(UTC)
    service.remind_due(now + timedelta(days=1))  # not due yet
    assert service.party_by_invitation(first).id == "p1"
    assert service.remind_due(now + timedelta(days=2, minutes=1)) >= 1
    with pytest.raises(UnknownContract):  # only the newest mail's link works
        service.party_by_invitation(first)
    assert service.remind_due(now + timedelta(days=3)) == 0  # the next one is two days after this one
    events = [e.action for e in service.events(created["id"])]
    assert events.count("reminded") == 1


def _app_code(secret_base32: str, at: float) -> str:
    """What the person's authenticator app shows (RFC 6238, written here from the RFC)."""
    secret = base64.b32decode(secret_base32 + "=" * (-len(secret_base32) % 8))
    digest = hmac.new(secret, struct.pack(">Q", int(at) // 30), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    return f"{(struct.unpack('>I', digest[offset:offset + 4])[0] & 0x7FFFFFFF) % 1_000_000:06d}"


def test_a_repeat_signer_validates_with_an_authenticator_app(client, key, contract_box):
    party = {**_party("Tom Repeat", 1, "unused"), "method": "totp"}
    del party["access_code"]
    refused = _create(client, key, {"title": "Not enrolled", "parties": [party]})
    assert refused.status_code == 400 and "enrolled first" in refused.json["message"]

    enrolled = _call(client, key, "/v1/signers/totp", email="Tom@Example.com")
    assert enrolled.status_code == 201 and enrolled.json["otpauth_uri"].startswith("otpauth://totp/")
    secret = enrolled.json["secret"]
    created = _create(client, key, {"title": "Repeat", "parties": [party]})
    assert created.status_code == 201, created.text
    confirm = f"/v1/contracts/{created.json['id']}/parties/p1/verification/confirm"
    assert _call(client, key, f"/v1/contracts/{created.json['id']}/parties/p1/verification").json == \
        {"method": "totp", "sent": False}
    wrong = _call(client, key, confirm, code="000000" if _app_code(secret, time.time()) != "000000" else "111111")
    assert wrong.status_code == 422
    code = _app_code(secret, time.time())
    assert _call(client, key, confirm, code=code).json["status"] == "validated"

    other = _create(client, key, {"title": "Replay", "parties": [party]}).json
    replay = _call(client, key, f"/v1/contracts/{other['id']}/parties/p1/verification/confirm", code=code)
    assert replay.status_code == 422 and "wrong code" in replay.json["message"]  # a used step never again

    stranger = contract_box.clients.add(f"stranger-{secrets.token_hex(4)}", scopes=("contracts",))[1]
    theirs = _create(client, stranger, {"title": "Not theirs", "parties": [party]})
    assert theirs.status_code == 400  # enrolment belongs to the client that made it
    row = contract_box.db.connect().execute("SELECT secret_enc FROM contract_totp").fetchone()
    assert base64.b32decode(secret + "=" * (-len(secret) % 8)) not in bytes(row[0])  # kept encrypted


# -- form fields: filled in the party's signature revision, locked by it ------------------------------------

_FORM = [{"kind": "text", "name": "Employee number", "page": 1, "box": [50, 300, 250, 325], "label": "Your number"},
         {"kind": "checkbox", "name": "Agree", "page": 1, "box": [50, 350, 66, 366], "label": "I agree"},
         {"kind": "date", "name": "Signed on", "page": 1, "box": [300, 300, 420, 325]},
         {"kind": "initials", "name": "Initials", "page": 2, "box": [500, 40, 560, 60], "required": False}]


def _form_values(pdf: bytes) -> dict[str, Any]:
    return {str(ref.get_object()["/T"]): ref.get_object().get("/V") for ref in reader(pdf).root["/AcroForm"]["/Fields"]}


def _tampered(pdf: bytes, name: str, value: str) -> bytes:
    """A later incremental update that changes a filled value, as an editing tool would."""
    writer = IncrementalPdfFileWriter(io.BytesIO(pdf))
    [field] = [r.get_object() for r in writer.root["/AcroForm"]["/Fields"] if r.get_object()["/T"] == name]
    field[pdf_name("/V")] = TextStringObject(value)
    writer.update_container(field)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def test_a_partys_form_fields_are_filled_in_its_signature_and_locked_by_it(client, key, contract_box, tmp_path):
    party = {**_party("Alice Example", 1, "A-7731"), "fields": _FORM}
    created = _create(client, key, {"title": "With form", "organisation_signature": "first", "parties": [
        party, _party("Bob Example", 2, "B-1187", x=300)]})
    assert created.status_code == 201, created.text
    contract_id = created.json["id"]
    fields = {f["name"]: f for f in created.json["fields"]}
    assert fields["Agree"] == {"party": "p1", "name": "Agree", "kind": "checkbox", "page": 1,
                               "box": [50.0, 350.0, 66.0, 366.0], "required": True, "label": "I agree", "value": None}
    assert fields["Alice"]["kind"] == "signature"

    path = f"/v1/contracts/{contract_id}/parties/p1"
    assert _call(client, key, path + "/verification").status_code == 200
    assert _call(client, key, path + "/verification/confirm", code="A-7731").status_code == 200
    revision = client.simulate_get(f"/v1/contracts/{contract_id}", headers={"Authorization": f"Bearer {key}"}).json
    for values, message in [
        ({"Employee number": "E-4711"}, "tick 'I agree'"),
        ({"Agree": True}, "fill in 'Your number'"),
        ({"Employee number": "E-4711", "Agree": "yes"}, "true or false"),
        ({"Employee number": "E-4711", "Agree": True, "Signed on": "1999-01-01"}, "date of signing"),
        ({"Employee number": "E-4711", "Agree": True, "Bob": "x"}, "another party's"),
        ({"Employee number": "E-4711", "Agree": True, "Nope": "x"}, "no field 'Nope'"),
        ({"Employee number": "Ωmega", "Agree": True}, "Latin-1"),
    ]:
        refused = _call(client, key, path + "/sign", values=values)
        assert refused.status_code == 400 and message in refused.json["message"], (values, refused.text)
    unchanged = client.simulate_get(f"/v1/contracts/{contract_id}", headers={"Authorization": f"Bearer {key}"}).json
    assert unchanged["revision"] == revision["revision"] and unchanged["parties"][0]["status"] == "validated"

    signed = _call(client, key, path + "/sign", values={"Employee number": "E-4711", "Agree": True, "Initials": "AE"})
    assert signed.status_code == 200 and signed.json["status"] == "signed", signed.text
    shown = {f["name"]: f.get("value") for f in client.simulate_get(
        f"/v1/contracts/{contract_id}", headers={"Authorization": f"Bearer {key}"}).json["fields"]}
    today = datetime.now(UTC).date().isoformat()
    assert shown == {"Alice": None, "Bob": None, "Employee number": "E-4711", "Agree": "on", "Signed on": today,
                     "Initials": "AE"}
    event = next(e for e in contract_box.contracts.events(contract_id) if e.action == "signed")
    assert event.detail["filled"] == ["Agree", "Employee number", "Initials", "Signed on"]
    assert _validate_and_sign(client, key, contract_id, "p2", "B-1187").status_code == 200

    final = client.simulate_get(f"/v1/contracts/{contract_id}/document", headers={"Authorization": f"Bearer {key}"})
    pdf = final.content
    values = _form_values(pdf)
    assert (str(values["Employee number"]), values["Agree"], str(values["Signed on"]), str(values["Initials"])) == \
        ("E-4711", "/Yes", today, "AE")
    assert_well_formed(pdf, tmp_path)
    results = pdfsig_results(pdf, tmp_path)
    assert all(results[f] == "Signature is Valid." for f in ("Organisation", "Alice", "Bob")), results
    statuses = {s.signing_cert.subject.native.get("common_name"): s
                for s in validate(pdf, _roots(contract_box), offline=True)}
    assert all(s.intact and s.valid and s.trusted and s.docmdp_ok for s in statuses.values())
    alice = statuses["Alice Example"]
    assert alice.modification_level is not None and alice.modification_level.name == "FORM_FILLING"
    lock = [ref.get_object() for ref in reader(pdf).root["/AcroForm"]["/Fields"] if ref.get_object()["/T"] == "Alice"]
    assert sorted(lock[0]["/Lock"]["/Fields"]) == sorted(f["name"] for f in _FORM)

    # a signed value changed afterwards: Alice's signature (its field lock) no longer holds
    tampered = _tampered(pdf, "Employee number", "E-0001")
    after = {s.signing_cert.subject.native.get("common_name"): s for s in validate(tampered, _roots(contract_box),
                                                                                    offline=True)}
    assert after["Alice Example"].intact and not after["Alice Example"].docmdp_ok
    assert after["Alice Example"].modification_level.name == "OTHER"
    # the change is plain form filling to signatures that lock nothing: the lock is what catches it
    assert after["Bob Example"].docmdp_ok and after["Bob Example"].modification_level.name == "FORM_FILLING"


def test_a_form_field_the_pdf_has_is_filled_and_one_it_cannot_fill_is_refused(client, key, tmp_path):
    writer = IncrementalPdfFileWriter(io.BytesIO(make_pdf(pages=2)))
    add_form_fields(writer, [FormField("Address", "text", 2, (60, 500, 300, 520)),
                             FormField("Consent", "checkbox", 2, (60, 450, 76, 466))])
    out = io.BytesIO()
    writer.write(out)
    form_pdf = out.getvalue()
    wrong = _create(client, key, {"title": "Wrong kind", "parties": [
        {**_party("Alice Example", 1, "A-1"), "fields": [{"kind": "checkbox", "name": "Address"}]}]}, pdf=form_pdf)
    assert wrong.status_code == 400 and "is a text field, not one for checkbox" in wrong.json["message"]

    created = _create(client, key, {"title": "PDF form", "parties": [
        {**_party("Alice Example", 1, "A-1"), "fields": [{"kind": "text", "name": "Address"},
                                                         {"kind": "checkbox", "name": "Consent", "required": False}]}]},
        pdf=form_pdf)
    assert created.status_code == 201, created.text
    signed = _validate_and_sign(client, key, created.json["id"], "p1", "A-1")
    assert signed.status_code == 400 and "fill in 'Address'" in signed.json["message"]
    path = f"/v1/contracts/{created.json['id']}/parties/p1/sign"
    signed = _call(client, key, path, values={"Address": "1 Main Street"})
    assert signed.status_code == 200, signed.text
    pdf = client.simulate_get(f"/v1/contracts/{created.json['id']}/document",
                              headers={"Authorization": f"Bearer {key}"}).content
    values = _form_values(pdf)
    assert str(values["Address"]) == "1 Main Street" and values["Consent"] == "/Off"  # unticked, and optional
    assert_well_formed(pdf, tmp_path)
