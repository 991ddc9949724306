"""Console details a person notices: counted nouns, fingerprints that wrap between bytes, chart
scales that fit the data, quota badges, a favicon; and the Directory page in process (a real
directory service on the session's dev PKI, the mailer replaced by a recorder of proofs)."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

from firmware.operations.reports import UsageRow
from webui.charts import usage_chart
from webui.templating import counted, environment, fingerprint


def test_nouns_are_counted_in_english():
    assert [counted(n, "call") for n in (0, 1, 2)] == ["0 calls", "1 call", "2 calls"]


def test_fingerprints_break_between_bytes_only():
    html = str(fingerprint("AB:CD:EF"))
    assert html == "AB:<wbr>CD:<wbr>EF"
    assert str(fingerprint("<b>:x")) == "&lt;b&gt;:<wbr>x"  # still escaped


def _top_label(svg: str) -> int:
    return max(int(v) for v in re.findall(r'text-anchor="end" font-size="11" fill="#555">(\d+)<', svg))


def test_chart_scale_fits_the_busiest_day():
    for busiest, top in ((0, 1), (3, 5), (7, 10), (60, 100), (150, 200), (4200, 5000)):
        rows = [UsageRow("c1", "one", "hash", "2026-12-01", busiest)] if busiest else []
        import datetime as dt

        svg = str(usage_chart(rows, {"c1": "one"}, today=dt.date(2026, 12, 4)))
        assert _top_label(svg) == top, (busiest, svg[:300])


def test_client_list_marks_an_exhausted_client():
    template = environment().get_template("clients.html")
    client = SimpleNamespace(id="abc", name="billing", active=True, calls_left=0, calls_used=5, calls_purchased=5,
                             scopes=("hash",), rate_per_minute=None, rate_per_day=None, created_at="2026-12-01",
                             disabled_at=None)
    page = template.render(clients=[client], csrf="x", scopes=("hash", "pdf"), default_scopes=("hash",),
                           free_calls=100, nav="clients", month={}, today={}, console=None, flash=[], version="t", admin="a")
    row = page[page.index("billing"):]
    assert "quota exhausted" in row[:800] and ">active<" not in row[:800]


def test_pages_name_the_favicon():
    assert '<link rel="icon" href="/static/favicon.svg"' in environment().get_template("base.html").render(
        console=None, flash=[], version="t")


def test_audit_page_names_clients_and_says_why_a_call_was_refused(box_config, clients, box):
    import base64
    import hashlib

    import requests

    from firmware.operations.reports import AuditQuery, search_audit
    from firmware.store.db import Database

    client, key = clients.add("audit-names", scopes=("pdf",))
    refused = requests.post(f"{box.url}/v1/signatures", headers={"Authorization": f"Bearer {key}"}, timeout=30,
                            json={"hash_algorithm": "sha256", "hash": base64.b64encode(hashlib.sha256(b"x").digest()).decode()})
    assert refused.status_code == 403
    lines = search_audit(Database(box_config.database), AuditQuery(action="refusal", client=client.id)).lines
    assert lines and lines[0].client_name == "audit-names"
    assert "message=this client may not use hash signing" in lines[0].details


# -- the Directory page, in process: a real DirectoryService on the session's dev PKI ----------------------

class _Proofs:
    """Stands in for the mailer: keeps the proofs the box would have mailed (the owner's side)."""

    def __init__(self) -> None:
        self.sent: list = []

    def send_proof(self, address, certificate, link_or_code) -> None:
        self.sent.append((address, certificate, link_or_code))


class _Page:
    """The console app on Falcon's test client, signed in as administrator "root"."""

    def __init__(self, tmp_path, directory_on: bool, dev_pki=None) -> None:
        from falcon.testing import TestClient

        from firmware.config import DirectorySettings
        from firmware.directory import DirectoryService
        from firmware.signing.revocation import RevocationService
        from webui.app import create_app
        from webui.sessions import COOKIE

        from .test_webui_units import make_console

        self.console = make_console(tmp_path)
        self.proofs = _Proofs()
        self.directory = None
        if directory_on:
            from asn1crypto import x509 as asn1_x509
            from asn1crypto.pem import armor

            roots = tmp_path / "directory-roots.pem"
            roots.write_bytes(armor("CERTIFICATE", dev_pki.root_cert()))
            settings = DirectorySettings(enabled=True, trust_roots_file=roots)
            self.directory = DirectoryService(self.console.db, RevocationService(
                [asn1_x509.Certificate.load(dev_pki.root_cert())]), settings, self.proofs)
        box = SimpleNamespace(directory=self.directory)
        self.console.signing = SimpleNamespace(box=box, current=lambda: box)  # a SigningService's face
        self.client = TestClient(create_app(self.console))
        session = self.console.sessions.create("192.168.1.77", admin="root")
        self.cookies, self.csrf = {COOKIE: session.cookie}, session.csrf

    def get(self, path: str):
        return self.client.simulate_get(path, remote_addr="192.168.1.77", host="box.lan", port=8443,
                                        protocol="https", cookies=self.cookies)

    def post(self, path: str, **fields: str):
        import urllib.parse

        return self.client.simulate_post(
            path, remote_addr="192.168.1.77", host="box.lan", port=8443, protocol="https", cookies=self.cookies,
            headers={"Content-Type": "application/x-www-form-urlencoded", "Origin": "null"},
            body=urllib.parse.urlencode({"csrf": self.csrf, **fields}))

    def follow(self, result):
        """A post's redirect, followed: the page with its message."""
        assert result.status_code == 303, result.text
        return self.get(result.headers["Location"].split("8443", 1)[-1] or "/")


def _pem(*ders: bytes) -> str:
    from asn1crypto.pem import armor

    return b"".join(armor("CERTIFICATE", der) for der in ders).decode()


def test_directory_page_says_when_the_directory_is_off(tmp_path):
    page = _Page(tmp_path, directory_on=False)
    shown = page.get("/directory")
    assert shown.status_code == 200 and 'id="directory-off"' in shown.text
    assert "[directory]" in shown.text and "enabled = true" in shown.text and "trust_roots_file" in shown.text
    assert 'href="/directory"' in shown.text  # in the navigation
    imported = page.follow(page.post("/directory/import", address="alice@example.com", certificate_pem="x"))
    assert "is off on this box" in imported.text


def test_directory_import_refused_names_its_check(tmp_path, dev_pki, pki_server):
    page = _Page(tmp_path, True, dev_pki)
    grace = dev_pki.mail_user("grace").cert  # names mallory@example.com
    shown = page.follow(page.post("/directory/import", address="grace@example.com",
                                  certificate_pem=_pem(grace, dev_pki.intermediate_cert())))
    assert "Refused by the check &#39;address&#39;" in shown.text and "Nothing was kept" in shown.text
    assert not page.proofs.sent
    refusals = shown.text[shown.text.index('id="directory-refusals"'):]
    from firmware.directory import fingerprint as sha256_of

    assert "<strong>address</strong>" in refusals and sha256_of(grace) in refusals and "admin:root" in refusals
    assert "grace@example.com" not in refusals  # the log keeps only the address's keyed hash
    assert re.search(r'id="count-refused">1<', shown.text)
    junk = page.follow(page.post("/directory/import", address="grace@example.com", certificate_pem="not PEM"))
    assert "not a certificate in PEM or DER" in junk.text


def test_directory_import_search_and_unpublish(tmp_path, dev_pki, pki_server):
    from firmware.directory import fingerprint as sha256_of

    page = _Page(tmp_path, True, dev_pki)
    alice = dev_pki.mail_user("alice").cert
    shown = page.follow(page.post("/directory/import", address=" Alice@Example.com",
                                  certificate_pem=_pem(alice, dev_pki.intermediate_cert())))
    assert "passed the checks and is pending" in shown.text, shown.text
    assert re.search(r'id="count-pending">1<', shown.text) and re.search(r'id="count-published">0<', shown.text)
    (to, mailed_to, secret), = page.proofs.sent
    assert (to, mailed_to) == ("alice@example.com", alice)  # the proof goes encrypted to the certificate

    found = page.post("/directory/search", address="ALICE@example.com")
    assert found.status_code == 200 and "Certificates of alice@example.com" in found.text
    table = found.text[found.text.index('id="directory-found"'):]
    assert ">pending<" in table and sha256_of(alice) in table and ">console<" in table and ">Withdraw<" in table
    assert "No certificate for this address" in page.post("/directory/search", address="bob@example.com").text
    assert "Not an address the directory keeps" in page.post("/directory/search", address="alice").text
    searches = page.console.db.connect().execute(
        "SELECT actor, details FROM audit_log WHERE action = 'directory.search' ORDER BY seq").fetchall()
    assert [(actor, json.loads(details)["found"]) for actor, details in searches] == [("admin:root", 1), ("admin:root", 0)]
    assert all("@" not in details for _, details in searches)  # who was looked up: only the address's keyed hash

    page.directory.confirm_code("alice@example.com", secret.code)  # the owner proves the mailbox is theirs
    table = page.post("/directory/search", address="alice@example.com").text
    assert ">published<" in table and ">Unpublish<" in table
    shown = page.follow(page.post("/directory/unpublish", address="alice@example.com", fingerprint=sha256_of(alice)))
    assert "is unpublished" in shown.text and re.search(r'id="count-unpublished">1<', shown.text)
    assert page.directory.published(page.console.db.connect(), "alice@example.com") == []
    actor, details = page.console.db.connect().execute(
        "SELECT actor, details FROM audit_log WHERE action = 'directory.unpublish'").fetchone()
    assert actor == "admin:root" and json.loads(details)["reason"] == "admin" and "alice@" not in details
    again = page.follow(page.post("/directory/unpublish", address="alice@example.com", fingerprint=sha256_of(alice)))
    assert "Nothing unpublished" in again.text
