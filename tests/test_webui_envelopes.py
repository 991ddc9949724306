"""The console's Envelopes page in process: the console app on Falcon's test client, signed in as
administrator "root", over a real box (the session's SoftHSM2 token, the dev PKI served by
certomancer) whose envelope service makes, cancels and reminds real envelopes in box.db."""

from __future__ import annotations

import re
import secrets
import urllib.parse
from types import SimpleNamespace
from typing import Any

import pytest
from falcon.testing import Result, TestClient

from firmware.box import Box
from firmware.contracts import ContractClosed, ContractsService, Created, Field, PartyRequest, UnknownContract
from firmware.operations.reports import contract_counts
from webui.app import create_app
from webui.sessions import COOKIE

from .pdfs import make_pdf
from .test_contracts import BASE_URL, contract_box  # noqa: F401  (a fixture)
from .test_webui_units import make_console


@pytest.fixture(scope="module")
def client_id(contract_box: Box) -> str:
    return contract_box.clients.add(f"envelopes-{secrets.token_hex(4)}", scopes=("contracts",))[0].id


class _Page:
    """The console app, its pages answering for ``box`` (or a box whose contract signing is off)."""

    def __init__(self, tmp_path, box: Any) -> None:
        self.console = make_console(tmp_path)
        if isinstance(box, Box):
            self.console.db = box.db  # the console reports from the box's own database, as when it runs
        self.console.signing = SimpleNamespace(box=box, current=lambda: box)  # a SigningService's face
        self.client = TestClient(create_app(self.console))
        session = self.console.sessions.create("192.168.1.77", admin="root")
        self.cookies, self.csrf = {COOKIE: session.cookie}, session.csrf

    def get(self, path: str) -> Result:
        return self.client.simulate_get(path, remote_addr="192.168.1.77", host="box.lan", port=8443,
                                        protocol="https", cookies=self.cookies)

    def post(self, path: str, **fields: str) -> Result:
        return self.client.simulate_post(
            path, remote_addr="192.168.1.77", host="box.lan", port=8443, protocol="https", cookies=self.cookies,
            headers={"Content-Type": "application/x-www-form-urlencoded", "Origin": "null"},
            body=urllib.parse.urlencode({"csrf": self.csrf, **fields}))

    def follow(self, result: Result) -> Result:
        assert result.status_code == 303, result.text
        return self.get(result.headers["Location"].split("8443", 1)[-1] or "/")


def _create(service: ContractsService, client_id: str, title: str, parties: int = 2) -> Created:
    requests = [PartyRequest(f"Person {n}", f"person{n}@example.com", "signer", n, "access_code", f"CODE-{n}",
                             Field("", f"Sig{n}", 1, (50.0, 60.0 + 80 * n, 250.0, 130.0 + 80 * n)))
                for n in range(1, parties + 1)]
    return service.create(client_id, title, make_pdf(pages=1), requests, "none", None, None, "198.51.100.9")


def _token(link: str) -> str:
    return link.rsplit("/", 1)[-1]


def _count(html: str, status: str) -> int:
    found = re.search(rf'id="count-{status}">(\d+)<', html)
    assert found, status
    return int(found[1])


def _audit(box: Box, action: str, contract_id: str) -> list[Any]:
    return box.db.connect().execute(
        "SELECT actor, client_id, details FROM audit_log WHERE action = ? AND details LIKE ? ORDER BY seq",
        (action, f'%"{contract_id}"%')).fetchall()


def test_envelopes_page_says_when_contract_signing_is_off(tmp_path):
    page = _Page(tmp_path, SimpleNamespace(contracts=None, directory=None))
    shown = page.get("/envelopes")
    assert shown.status_code == 200 and 'id="envelopes-off"' in shown.text
    assert "[contracts]" in shown.text and "enabled = true" in shown.text
    assert 'href="/envelopes"' in shown.text  # in the navigation
    refused = page.follow(page.post("/envelopes/ct_x/cancel", reason="no"))
    assert 'id="envelopes-off"' in refused.text and "Contract signing is off" in refused.text


def test_list_is_newest_first_filters_by_status_and_counts(tmp_path, contract_box, client_id):
    page = _Page(tmp_path, contract_box)
    service = contract_box.contracts
    before = page.get("/envelopes").text
    first = _create(service, client_id, "Lease <first>").contract
    second = _create(service, client_id, "Lease second").contract
    service.cancel(second.id, client_id, "wrong tenant", None)

    shown = page.get("/envelopes")
    assert shown.status_code == 200
    text = shown.text
    assert text.index(f"/envelopes/{second.id}") < text.index(f"/envelopes/{first.id}")  # newest first
    assert "Lease &lt;first&gt;" in text  # escaped
    assert _count(text, "in_progress") == _count(before, "in_progress") + 1
    assert _count(text, "cancelled") == _count(before, "cancelled") + 1
    assert _count(text, "cancelled") == contract_counts(contract_box.db)["cancelled"]

    cancelled = page.get("/envelopes?status=cancelled").text
    assert second.id in cancelled and first.id not in cancelled
    assert '<option value="cancelled" selected>' in cancelled
    in_progress = page.get("/envelopes?status=in_progress").text
    assert first.id in in_progress and second.id not in in_progress
    assert second.id in page.get("/envelopes?status=nonsense").text  # an unknown status lists all


def test_one_envelope_shows_its_parties_trail_and_document(tmp_path, contract_box, client_id):
    page = _Page(tmp_path, contract_box)
    contract = _create(contract_box.contracts, client_id, "Supply agreement").contract
    shown = page.get(f"/envelopes/{contract.id}")
    assert shown.status_code == 200
    parties = shown.text[shown.text.index('id="envelope-parties"'):shown.text.index('id="envelope-actions"')]
    assert "Person 1" in parties and "person2@example.com" in parties
    assert re.search(r'id="party-p1">.*?>invited<', parties, re.S) and re.search(r'id="party-p2">.*?>waiting<', parties, re.S)
    trail = shown.text[shown.text.index('id="envelope-trail"'):]
    assert "client:" + client_id in trail and ">created<" in trail and ">invited<" in trail
    assert "198.51.100.9" in trail and "parties=2" in trail
    assert f'href="/envelopes/{contract.id}/certificate"' not in shown.text  # not completed yet

    document = page.get(f"/envelopes/{contract.id}/document")
    assert document.status_code == 200 and document.headers["content-type"] == "application/pdf"
    assert document.content == contract_box.contracts.document(contract.id)[1] and document.content[:5] == b"%PDF-"
    [(actor, client, _)] = _audit(contract_box, "contract.download", contract.id)
    assert (actor, client) == ("admin:root", client_id)
    assert "No completion certificate" in page.follow(page.get(f"/envelopes/{contract.id}/certificate")).text
    assert page.get("/envelopes/ct_unknown").status_code == 404


def test_cancel_needs_a_reason_and_is_audited_as_the_administrator(tmp_path, contract_box, client_id):
    page = _Page(tmp_path, contract_box)
    service = contract_box.contracts
    created = _create(service, client_id, "Service contract")
    contract_id = created.contract.id

    refused = page.follow(page.post(f"/envelopes/{contract_id}/cancel", reason="   "))
    assert "Not cancelled: say why" in refused.text and service.contract(contract_id, None).status == "in_progress"

    shown = page.follow(page.post(f"/envelopes/{contract_id}/cancel", reason="sent  to the wrong person"))
    assert "is cancelled" in shown.text and 'id="envelope-status">cancelled<' in shown.text
    assert 'id="envelope-actions"' not in shown.text  # no more controls
    assert service.contract(contract_id, None).status == "cancelled"
    [(actor, client, details)] = _audit(contract_box, "contract.cancelled", contract_id)
    assert (actor, client) == ("admin:root", client_id) and "sent to the wrong person" in details
    trail = shown.text[shown.text.index('id="envelope-trail"'):]
    assert "admin:root" in trail and "192.168.1.77" in trail
    with pytest.raises(ContractClosed):  # its links only say why now: nothing can be done through them
        service.start_verification(contract_id, service.party_by_invitation(_token(created.links["p1"])).id, None)

    again = page.follow(page.post(f"/envelopes/{contract_id}/cancel", reason="twice"))
    assert "Not cancelled: the envelope is already cancelled" in again.text


def test_remind_replaces_the_invitation_links(tmp_path, contract_box, client_id):
    page = _Page(tmp_path, contract_box)
    service = contract_box.contracts
    created = _create(service, client_id, "Remind me")
    contract_id, old = created.contract.id, _token(created.links["p1"])
    assert service.party_by_invitation(old).id == "p1"

    shown = page.post(f"/envelopes/{contract_id}/remind")
    assert shown.status_code == 200  # this box sends no mail: the new links are shown, once
    assert "pass these links on" in shown.text
    [link] = re.findall(re.escape(BASE_URL) + r"/sign/[A-Za-z0-9_-]+", shown.text)
    assert service.party_by_invitation(_token(link)).id == "p1"
    with pytest.raises(UnknownContract):
        service.party_by_invitation(old)
    [(actor, client, details)] = _audit(contract_box, "contract.reminded", contract_id)
    assert (actor, client) == ("admin:root", client_id) and '"p1"' in details
    assert link not in page.get(f"/envelopes/{contract_id}").text  # not shown again


def test_dashboard_counts_envelopes(tmp_path, contract_box, client_id):
    page = _Page(tmp_path, contract_box)
    _create(contract_box.contracts, client_id, "Counted")
    shown = page.get("/")
    assert shown.status_code == 200, shown.text
    card = shown.text[shown.text.index('id="envelopes"'):]
    assert f"{contract_counts(contract_box.db)['in_progress']} in progress" in card[:400]


def test_a_completed_envelope_offers_its_signed_document_and_completion_certificate(tmp_path, contract_box, client_id):
    page = _Page(tmp_path, contract_box)
    service = contract_box.contracts
    contract_id = _create(service, client_id, "Signed by one", parties=1).contract.id
    service.confirm_verification(contract_id, "p1", "CODE-1", "203.0.113.5")
    service.sign(contract_id, "p1", None, "203.0.113.5")

    shown = page.get(f"/envelopes/{contract_id}")
    assert 'id="envelope-status">completed<' in shown.text and "Signed document" in shown.text
    assert re.search(r'id="party-p1">.*?>signed<', shown.text, re.S)
    assert "203.0.113.5" in shown.text[shown.text.index('id="envelope-trail"'):]
    certificate = page.get(f"/envelopes/{contract_id}/certificate")
    assert certificate.status_code == 200 and certificate.headers["content-type"] == "application/pdf"
    assert certificate.content == service.completion_certificate(contract_id)
    assert "completion.pdf" in certificate.headers["content-disposition"]
    signed = page.get(f"/envelopes/{contract_id}/document").content
    assert signed == service.document(contract_id)[1] and b"/ByteRange" in signed
    assert [row[0] for row in _audit(contract_box, "contract.download", contract_id)] == ["admin:root"] * 2
