"""The admin console end to end: a real `esignbox serve` with nginx in front, driven by headless
Chromium (Debian's, through Playwright), plus raw HTTPS requests for the refusals.

The console box is a copy of the session's dev box (same token objects and PKI, its own state
directory, database and ports), so that key rollover and settings changes here leave the
session box alone. It listens on 127.0.0.1 and 127.0.0.2 and allows only 127.0.0.1/32, and has
the certificate directory on (the dev PKI as its trust root).

Tests run in file order and share one administrator; the lockout test is last because it locks
sign-in from 127.0.0.1.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import html
import ipaddress
import json
import re
import shutil
import subprocess
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
import tomli_w
from asn1crypto import pem
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from requests.adapters import HTTPAdapter

from firmware.config import BoxConfig

from .pdfs import make_pdf
from .support import ESIGNBOX, free_port, spki_pin, stop_process

ARTIFACTS = Path(__file__).parent / "artifacts" / "webui"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
ADMIN, PASSWORD = "admin", "correct horse battery staple"


@dataclass
class ConsoleBox:
    state_dir: Path
    api_url: str
    url: str  # https://127.0.0.1:PORT
    port: int
    code: str
    ca_fingerprint: str
    process: subprocess.Popen
    log_path: Path

    @property
    def ca_file(self) -> str:
        return str(self.state_dir / "console" / "tls" / "ca.pem")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _copy_box(source: BoxConfig, target: Path) -> None:
    """A second box on the same dev PKI: the token files, secrets and chains, but its own database."""
    shutil.copytree(source.state_dir / "tokens", target / "tokens")
    shutil.copytree(source.state_dir / "secrets", target / "secrets")
    shutil.copytree(source.state_dir / "chains", target / "chains")  # the mail key's and the signer CA's
    for name in ("box-chain.pem", "trust-roots.pem"):
        shutil.copy2(source.state_dir / name, target / name)
    (target / "softhsm2.conf").write_text(
        f"directories.tokendir = {(target / 'tokens').resolve()}\nobjectstore.backend = file\nlog.level = ERROR\n")


@pytest.fixture(scope="module")
def console_box(box_config: BoxConfig, pki_server, tmp_path_factory) -> Iterator[ConsoleBox]:
    state_dir = tmp_path_factory.mktemp("console-box")
    _copy_box(box_config, state_dir)
    raw = tomllib.loads((box_config.state_dir / "box.toml").read_text())
    api_port, port = free_port(), free_port()
    raw["api"]["port"] = api_port
    raw["console"] = {"enabled": True, "port": port, "listen": ["127.0.0.1", "127.0.0.2"],
                      "allow": ["127.0.0.1/32"], "session_idle_minutes": 15, "max_failures": 5,
                      "lockout_minutes": 10}
    # The certificate directory on, trusting the dev PKI (its people's certificates); no mail relay,
    # so a proof of mailbox control is logged as undelivered.
    raw["directory"] = {"enabled": True, "trust_roots_file": "trust-roots.pem"}
    (state_dir / "box.toml").write_text(tomli_w.dumps(raw))
    log_path = state_dir / "serve.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([ESIGNBOX, "--state-dir", str(state_dir), "serve"], stdout=log,
                                   stderr=subprocess.STDOUT)
    deadline, text = time.monotonic() + 40, ""
    try:
        while time.monotonic() < deadline:
            text = log_path.read_text(errors="replace")
            if process.poll() is not None:
                raise RuntimeError(f"esignbox serve exited:\n{text}")
            if "ONE-TIME SET-UP CODE" in text and "Serving on" in text:
                break
            if "console NOT started" in text:
                raise RuntimeError(f"the console did not start:\n{text}")
            time.sleep(0.1)
        else:
            raise RuntimeError(f"the console did not start in time:\n{text}")
        code = re.search(r"ONE-TIME SET-UP CODE: ([A-Z0-9-]+)", text).group(1)
        fingerprint = re.search(r"CA SHA-256 fingerprint: ([0-9A-F:]+)", text).group(1)
        yield ConsoleBox(state_dir, f"http://127.0.0.1:{api_port}", f"https://127.0.0.1:{port}", port, code,
                         fingerprint, process, log_path)
    finally:
        stop_process(process, timeout=15)


def _pinned_spki(console_box: ConsoleBox) -> str:
    """Trust exactly the console's certificate, after checking it chains to the printed CA."""
    ca = x509.load_pem_x509_certificate(Path(console_box.ca_file).read_bytes())
    assert ":".join(f"{b:02X}" for b in ca.fingerprint(hashes.SHA256())) == console_box.ca_fingerprint
    leaf = x509.load_pem_x509_certificates((console_box.state_dir / "console" / "tls" / "console.pem").read_bytes())[0]
    leaf.verify_directly_issued_by(ca)
    return spki_pin(leaf)


@pytest.fixture(scope="module")
def browser(console_box: ConsoleBox):
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is not installed: run `make system-deps` (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[*CHROMIUM_ARGS, f"--ignore-certificate-errors-spki-list={_pinned_spki(console_box)}"])
        yield browser
        browser.close()


@dataclass
class Admin:
    context: object
    page: object
    steps: list = field(default_factory=list)


def shot(page, name: str, full_page: bool = True) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=full_page)


def flash(page) -> str:
    return " ".join(page.locator(".flash").all_inner_texts())


@pytest.fixture(scope="module")
def admin(browser, console_box: ConsoleBox) -> Admin:
    """First set-up through the browser: one-time code, then the forced choice of a password."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    steps = []
    page.goto(console_box.url + "/")
    steps.append(("start", page.url, page.locator("h1").inner_text()))
    page.fill("input[name=code]", "AAAA-BBBB-CCCC")
    page.click("button[type=submit]")
    steps.append(("wrong code", page.url, page.locator(".flash.error").inner_text()))
    shot(page, "first-setup")
    page.fill("input[name=code]", console_box.code.lower().replace("-", " "))  # typed loosely: still accepted
    page.click("button[type=submit]")
    steps.append(("code accepted", page.url, page.locator("h1").inner_text()))
    page.fill("input[name=name]", ADMIN)
    page.fill("input[name=password]", "short")
    page.fill("input[name=confirm]", "short")
    page.evaluate("document.querySelectorAll('input[minlength]').forEach(i => i.removeAttribute('minlength'))")
    page.click("button[type=submit]")
    steps.append(("short password", page.url, page.locator(".flash.error").inner_text()))
    shot(page, "first-setup-password")
    page.fill("input[name=name]", ADMIN)
    page.fill("input[name=password]", PASSWORD)
    page.fill("input[name=confirm]", PASSWORD)
    page.click("button[type=submit]")
    steps.append(("password set", page.url, flash(page)))
    return Admin(context, page, steps)


def https(console_box: ConsoleBox, source: str | None = None) -> requests.Session:
    """A requests session that trusts the box CA (checked above), optionally from another source address."""
    session = requests.Session()
    session.trust_env = False  # else REQUESTS_CA_BUNDLE from the environment overrides session.verify
    session.verify = console_box.ca_file
    if source:
        class Bound(HTTPAdapter):
            def init_poolmanager(self, *args, **kwargs):
                kwargs["source_address"] = (source, 0)
                super().init_poolmanager(*args, **kwargs)

        session.mount("https://", Bound())
    return session


def audit_entries(console_box: ConsoleBox, admin: Admin) -> list[dict]:
    page = admin.page
    page.goto(console_box.url + "/audit")
    with page.expect_download() as info:
        page.click("text=Export (JSON lines)")
    return [json.loads(line) for line in Path(info.value.path()).read_text().splitlines()]


# -- the tests, in the order an administrator meets the console --------------------------------------------

def test_first_setup_needs_the_one_time_code_then_a_password(admin: Admin, console_box: ConsoleBox, browser):
    (_, start_url, start_h1), (_, _, wrong), (_, code_url, code_h1), (_, _, short), (_, done_url, done) = admin.steps
    assert start_url.endswith("/setup") and start_h1 == "First set-up"
    assert "not the set-up code" in wrong
    assert code_url.endswith("/setup/password") and "password" in code_h1
    assert "at least 12 characters" in short
    assert done_url == console_box.url + "/" and "one-time code is used up" in done
    # The code is spent: a second visitor is sent to sign in, and /setup leads there too.
    other = browser.new_context()
    page = other.new_page()
    page.goto(console_box.url + "/setup")
    assert page.url.endswith("/login")
    shot(page, "login")
    other.close()
    assert console_box.code not in (console_box.state_dir / "box.db").read_bytes().decode("latin-1")


def create_client(page, console_box: ConsoleBox, name: str, calls: str = "50") -> str:
    page.goto(console_box.url + "/clients")
    page.fill("input[name=name]", name)
    page.fill("input[name=calls]", calls)
    page.fill("input[name=rate_per_day]", "1000")
    page.click("text=Create client")
    assert "only time the key is shown" in flash(page)
    return page.input_value("#api-key")


def test_api_health_reports_the_console_front(console_box: ConsoleBox):
    """The console's nginx is not on the signing path, but its state is in /v1/health for monitors."""
    health = requests.get(console_box.api_url + "/v1/health", timeout=10)
    assert health.status_code == 200
    assert health.json()["console"] == {"running": True, "restarts": 0, "last_failure": None}


def test_client_created_in_console_signs_on_the_api(admin: Admin, console_box: ConsoleBox):
    page = admin.page
    api_key = create_client(page, console_box, "billing-system")
    assert api_key.startswith("esb_")
    digest = base64.b64encode(hashlib.sha256(b"invoice 42").digest()).decode()
    response = requests.post(console_box.api_url + "/v1/signatures", timeout=30,
                             headers={"Authorization": f"Bearer {api_key}"},
                             json={"hash_algorithm": "sha256", "hash": digest, "level": "B-T"})
    assert response.status_code == 201, response.text
    page.goto(console_box.url + "/clients")
    row = page.locator("tr", has_text="billing-system")
    assert "1 / 50" in row.inner_text()
    shot(page, "clients")
    row.locator("a").click()
    assert page.locator("svg.chart rect").count() >= 1
    shot(page, "client-detail")


def test_signature_on_dashboard_and_in_audit_log(admin: Admin, console_box: ConsoleBox, browser):
    page = admin.page
    page.goto(console_box.url + "/")
    assert int(page.inner_text("#signatures-today")) >= 1
    text = page.inner_text("main")
    assert "Present" in text and "RSA 2048" in text and "days left" in text
    assert "TSA" in text and "reachable" in text and " ms" in text
    assert "free on the state partition" in page.inner_text("#storage")
    clock = page.inner_text("#clock")  # a signature with a timestamp has been made: the skew is measured
    assert " s" in clock and "vs the TSA" in clock and "Off by" not in clock, clock
    assert page.locator("svg.chart rect").count() >= 1 and "billing-system" in page.inner_text("ul.legend")
    shot(page, "dashboard")
    phone = admin.context.new_page()
    phone.set_viewport_size({"width": 390, "height": 844})
    phone.goto(console_box.url + "/")
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390 + 1  # nothing wider than the phone
    shot(phone, "dashboard-phone")
    phone.close()

    page.goto(console_box.url + "/audit?action=signature")
    assert page.locator("table.audit tbody tr", has_text="signature").count() == 1
    shot(page, "audit")
    page.goto(console_box.url + "/audit")
    page.click("text=Verify the chain")
    assert "Audit chain intact" in flash(page)
    entries = audit_entries(console_box, admin)
    actions = {(e["actor"], e["action"]) for e in entries}
    assert {("admin:admin", "admin.password_set"), ("admin:admin", "client.add"), ("admin:admin", "audit.verify"),
            ("admin:admin", "audit.export")} <= actions
    assert any(a == "signature" and actor.startswith("client:") for actor, a in actions)
    assert any(e["action"] == "admin.login_failed" and e["details"]["reason"] == "wrong set-up code" for e in entries)


def _issue(csr_pem: bytes, ca_key, ca_cert: x509.Certificate, subject: x509.Name | None = None,
           public_key=None) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    csr = x509.load_pem_x509_csr(csr_pem) if csr_pem else None
    return (x509.CertificateBuilder()
            .subject_name(subject or csr.subject).issuer_name(ca_cert.subject)
            .public_key(public_key or csr.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))


def _pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def test_certificate_imported_on_the_directory_page_waits_for_its_owner(admin: Admin, console_box: ConsoleBox,
                                                                       dev_pki, tmp_path):
    page = admin.page
    page.goto(console_box.url + "/")
    assert "0 pending" in page.inner_text("#directory")  # the dashboard's card: the directory is on
    bundle = tmp_path / "alice.pem"
    bundle.write_bytes(pem.armor("CERTIFICATE", dev_pki.mail_user("alice").cert)
                       + pem.armor("CERTIFICATE", dev_pki.intermediate_cert()))
    page.click("nav >> text=Directory")
    form = page.locator("form[action='/directory/import']")
    form.locator("input[name=address]").fill("Alice@Example.com")
    form.locator("input[name=certificate]").set_input_files(str(bundle))
    form.locator("button").click()
    assert "is pending" in flash(page) and "once the owner confirms" in flash(page), flash(page)
    assert page.inner_text("#count-pending") == "1" and page.inner_text("#count-published") == "0"
    search = page.locator("form[action='/directory/search']")
    search.locator("input[name=address]").fill("alice@example.com")
    search.locator("button").click()
    row = page.locator("#directory-found tbody tr").inner_text()
    assert "pending" in row and "console" in row, row
    assert "alice@example.com" not in page.url  # an address never goes into a URL (nginx's access log)
    shot(page, "directory")
    submit = [e for e in audit_entries(console_box, admin) if e["action"] == "directory.submit"][-1]
    assert submit["actor"] == "admin:admin" and submit["details"]["source"] == "console"


def test_envelope_listed_opened_reminded_and_cancelled_on_the_envelopes_page(admin: Admin, console_box: ConsoleBox):
    page = admin.page
    page.goto(console_box.url + "/clients")
    page.fill("input[name=name]", "contracts-system")
    page.fill("input[name=calls]", "50")
    page.check("input[name=scopes][value=contracts]")
    page.click("text=Create client")
    headers = {"Authorization": f"Bearer {page.input_value('#api-key')}"}
    parties = [{"name": name, "email": f"{name.split()[0].lower()}@example.com", "order": order,
                "method": "access_code", "access_code": f"CODE-{order}",
                "field": {"name": name.split()[0], "page": 1, "box": [50, 60 + 90 * order, 250, 130 + 90 * order]}}
               for order, name in ((1, "Alice Example"), (2, "Bob Example"))]
    envelope = {"title": "Employment agreement", "organisation_signature": "none", "parties": parties}
    created = requests.post(console_box.api_url + "/v1/contracts", headers=headers, timeout=60, files={
        "envelope": (None, json.dumps(envelope), "application/json"),
        "document": ("contract.pdf", make_pdf(pages=1), "application/pdf")})
    assert created.status_code == 201, created.text
    contract_id = created.json()["id"]

    page.goto(console_box.url + "/")
    assert "1 in progress" in page.inner_text("#envelopes")  # the dashboard's card: contract signing is on
    page.click("nav >> text=Envelopes")
    assert page.inner_text("#count-in_progress") == "1" and page.inner_text("#count-cancelled") == "0"
    shot(page, "envelopes")
    page.click("text=Employment agreement")
    assert "invited" in page.inner_text("#party-p1") and "waiting" in page.inner_text("#party-p2")
    shot(page, "envelope")
    phone = admin.context.new_page()
    phone.set_viewport_size({"width": 390, "height": 844})
    phone.goto(page.url)
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390 + 1  # tables scroll inside their cards
    shot(phone, "envelope-phone")
    phone.close()

    page.click("#envelope-actions button:has-text('Remind')")  # the box has no mail relay: links shown once
    assert "pass these links on" in flash(page) and "/sign/" in page.inner_text("#envelope-links")
    page.fill("#envelope-actions input[name=reason]", "sent to the wrong person")
    page.click("text=Cancel the envelope")
    assert "is cancelled" in flash(page) and page.inner_text("#envelope-status") == "cancelled"
    trail = page.inner_text("#envelope-trail")
    assert "admin:admin" in trail and "reminded" in trail and "cancelled" in trail and "127.0.0.1" in trail
    shot(page, "envelope-cancelled")
    status = requests.get(f"{console_box.api_url}/v1/contracts/{contract_id}", headers=headers, timeout=30).json()
    assert status["status"] == "cancelled" and status["end_reason"] == "sent to the wrong person"


def test_key_generate_csr_chain_and_rollover(admin: Admin, console_box: ConsoleBox):
    page = admin.page
    page.goto(console_box.url + "/keys")
    page.fill("input[name=label]", "box-2027")
    page.select_option("select[name=algorithm]", "ec-p256")
    page.click("text=Generate on the token")
    assert "Key 'box-2027' (ec-p256) generated" in flash(page)

    csr_form = page.locator("form[action='/keys/csr']")
    csr_form.locator("select[name=label]").select_option("box-2027")
    csr_form.locator("input[name=subject]").fill("CN=Console Test Signer,O=Example Ltd,C=BE")
    with page.expect_download() as info:
        csr_form.locator("button").click()
    assert info.value.suggested_filename == "box-2027.csr"
    csr_pem = Path(info.value.path()).read_bytes()
    csr = x509.load_pem_x509_csr(csr_pem)
    assert csr.is_signature_valid and isinstance(csr.public_key(), ec.EllipticCurvePublicKey)

    # A test CA issues the certificate, as the organisation's CA would.
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Console Test CA")])
    now = dt.datetime.now(dt.UTC)
    ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
               .not_valid_after(now + dt.timedelta(days=3650))
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
               .sign(ca_key, hashes.SHA256()))
    leaf = _issue(csr_pem, ca_key, ca_cert)
    stranger = _issue(b"", ca_key, ca_cert, subject=csr.subject,
                      public_key=ec.generate_private_key(ec.SECP256R1()).public_key())

    chain_form = page.locator("form[action='/keys/chain']")
    chain_form.locator("select[name=label]").select_option("box-2027")
    chain_form.locator("input[name=chain]").set_input_files(
        {"name": "wrong.pem", "mimeType": "application/x-pem-file", "buffer": _pem(stranger, ca_cert)})
    chain_form.locator("button").click()
    assert "Chain refused for key 'box-2027': the leaf certificate is not for token key 'box-2027'" in flash(page)

    chain_form = page.locator("form[action='/keys/chain']")
    chain_form.locator("select[name=label]").select_option("box-2027")
    chain_form.locator("input[name=chain]").set_input_files(
        {"name": "issued.pem", "mimeType": "application/x-pem-file", "buffer": _pem(ca_cert, leaf)})  # any order
    chain_form.locator("button").click()
    assert "Chain for key 'box-2027' checked and installed" in flash(page)
    shot(page, "keys")

    page.click("text=Activate box-2027")
    assert "Key 'box-2027' is now the signing key" in flash(page)
    assert "active" in page.locator("tr", has_text="box-2027").inner_text()
    raw = tomllib.loads((console_box.state_dir / "box.toml").read_text())
    assert raw["signing"]["key_label"] == "box-2027" and raw["signing"]["chain_file"] == "chains/box-2027.pem"
    # The running signing service uses the new key at once, without a restart.
    certificate = requests.get(console_box.api_url + "/v1/certificate", timeout=10).json()
    assert "Console Test Signer" in certificate["subject"]
    api_key = create_client(page, console_box, "rollover-check")
    digest = base64.b64encode(hashlib.sha256(b"after rollover").digest()).decode()
    signed = requests.post(console_box.api_url + "/v1/signatures", timeout=30, headers={"Authorization": f"Bearer {api_key}"},
                           json={"hash_algorithm": "sha256", "hash": digest, "level": "B-B", "profile": "CAdES"})
    assert signed.status_code == 201, signed.text
    # The outgoing key keeps its chain and can be activated again (rollback).
    page.goto(console_box.url + "/keys")
    assert page.locator("button", has_text="Activate box-signing").count() == 1
    shot(page, "keys-after-rollover")


def test_settings_page_writes_box_toml(admin: Admin, console_box: ConsoleBox):
    page = admin.page
    page.goto(console_box.url + "/settings")
    text = page.inner_text("main")
    assert "127.0.0.1" in text and "lo" in text and page.inner_text("#version") not in ("", "unknown")
    old_urls = page.input_value("textarea[name=tsa_urls]")
    assert page.input_value("input[name=stamp_text]") == "" and "Signed by" in page.get_attribute(
        "input[name=stamp_text]", "placeholder")
    page.fill("input[name=stamp_text]", "Signed \u2713 by us")  # the API would refuse it in a stamp: so does the console
    page.locator("form[action='/settings/signing'] button").click()
    assert "Not saved" in flash(page) and "Latin-1" in flash(page)
    page.fill("textarea[name=tsa_urls]", old_urls + "\nhttp://127.0.0.1:9/backup-tsa")
    page.select_option("select[name=default_level]", "B-B")
    page.fill("input[name=stamp_text]", "Signed by the E-signature Box")
    page.locator("form[action='/settings/signing'] button").click()
    assert "Settings saved" in flash(page)
    raw = tomllib.loads((console_box.state_dir / "box.toml").read_text())
    assert raw["signing"]["tsa_urls"] == [old_urls, "http://127.0.0.1:9/backup-tsa"]
    assert raw["signing"]["default_level"] == "B-B" and raw["signing"]["stamp_text"] == "Signed by the E-signature Box"
    assert raw["token"]["environment_files"] == {"SOFTHSM2_CONF": "softhsm2.conf"}  # the rest is kept
    shot(page, "settings")
    entry = [e for e in audit_entries(console_box, admin) if e["action"] == "settings.change"][-1]
    assert entry["actor"] == "admin:admin" and entry["details"]["default_level"] == {"from": "B-T", "to": "B-B"}
    # The signing service was restarted on the new settings: a request naming no level gets B-B.
    api_key = create_client(page, console_box, "defaults-check")
    digest = base64.b64encode(hashlib.sha256(b"default level").digest()).decode()
    signed = requests.post(console_box.api_url + "/v1/signatures", timeout=60,
                           headers={"Authorization": f"Bearer {api_key}"},
                           json={"hash_algorithm": "sha256", "hash": digest})
    assert signed.status_code == 201 and signed.json()["level"] == "B-B", signed.text


def test_settings_page_sets_the_outbound_proxy_without_showing_its_password(admin: Admin, console_box: ConsoleBox):
    page = admin.page
    page.goto(console_box.url + "/settings")
    page.fill("input[name=proxy]", "ftp://proxy.example")
    page.click("form[action='/settings/outbound'] button")
    assert "must be an http(s)://host:port URL" in flash(page)
    page.fill("input[name=proxy]", "http://box:s3cret@127.0.0.1:3128")
    page.fill("input[name=no_proxy]", "localhost,.internal")
    page.click("form[action='/settings/outbound'] button")
    assert "Proxy saved" in flash(page)
    raw = tomllib.loads((console_box.state_dir / "box.toml").read_text())
    assert raw["outbound"] == {"proxy": "http://box:s3cret@127.0.0.1:3128", "no_proxy": "localhost,.internal"}
    page.goto(console_box.url + "/settings")
    assert page.input_value("input[name=proxy]") == "http://box:****@127.0.0.1:3128"
    assert "s3cret" not in page.content()
    page.fill("input[name=no_proxy]", "localhost")
    page.click("form[action='/settings/outbound'] button")  # the masked URL posted back keeps the password
    assert "Proxy saved" in flash(page)
    raw = tomllib.loads((console_box.state_dir / "box.toml").read_text())
    assert raw["outbound"] == {"proxy": "http://box:s3cret@127.0.0.1:3128", "no_proxy": "localhost"}
    changes = [e for e in audit_entries(console_box, admin) if e["action"] == "settings.change"]
    assert changes and not any("s3cret" in json.dumps(e) for e in changes)
    assert any("box:****@127.0.0.1:3128" in json.dumps(e) for e in changes)
    page.goto(console_box.url + "/settings")
    page.fill("input[name=proxy]", "")
    page.fill("input[name=no_proxy]", "")
    page.click("form[action='/settings/outbound'] button")
    assert "Proxy saved" in flash(page)
    assert tomllib.loads((console_box.state_dir / "box.toml").read_text()).get("outbound", {}) == {}


def test_peer_outside_the_allow_list_is_refused(console_box: ConsoleBox):
    # The console listens on 127.0.0.2 too; a request from 127.0.0.1 to it is fine...
    inside = https(console_box).get(f"https://127.0.0.2:{console_box.port}/login", timeout=10)
    assert inside.status_code == 200
    # ...but a peer whose address is 127.0.0.2 is not in the allow-list (127.0.0.1/32).
    outside = https(console_box, source="127.0.0.2").get(f"https://127.0.0.2:{console_box.port}/login", timeout=10)
    assert outside.status_code == 403
    assert "Your address 127.0.0.2 is not in that list" in outside.text
    assert outside.headers["X-Frame-Options"] == "DENY"


def test_post_without_csrf_token_is_refused(admin: Admin, console_box: ConsoleBox):
    session = https(console_box)
    session.get(console_box.url + "/login", timeout=10)
    refused = session.post(console_box.url + "/login", data={"name": ADMIN, "password": PASSWORD}, timeout=10,
                           allow_redirects=False)
    assert refused.status_code == 403 and "CSRF" in refused.text
    # Even with the administrator's own session cookie, a change without the token is refused.
    cookie = next(c for c in admin.context.cookies() if c["name"] == "__Host-esb_session")
    headers = {"Cookie": f"{cookie['name']}={cookie['value']}"}
    for data in ({"name": "csrf-victim"}, {"name": "csrf-victim", "csrf": "forged"}):
        refused = requests.post(console_box.url + "/clients", data=data, headers=headers, timeout=10,
                                verify=console_box.ca_file, allow_redirects=False)
        assert refused.status_code == 403 and "CSRF" in refused.text
    listing = requests.get(console_box.url + "/clients", headers=headers, timeout=10, verify=console_box.ca_file)
    assert listing.status_code == 200 and "billing-system" in listing.text and "csrf-victim" not in listing.text


def test_foreign_host_and_origin_are_refused(console_box: ConsoleBox):
    session = https(console_box)
    refused = session.get(console_box.url + "/login", headers={"Host": "attacker.example"}, timeout=10)
    assert refused.status_code == 403 and "does not answer to the name 'attacker.example'" in html.unescape(refused.text)
    refused = session.post(console_box.url + "/login", headers={"Origin": "https://attacker.example"}, timeout=10)
    assert refused.status_code == 403 and "Cross-site request refused" in refused.text


def test_security_headers_and_cookie_flags(console_box: ConsoleBox):
    response = https(console_box).get(console_box.url + "/login", timeout=10)
    csp = response.headers["Content-Security-Policy"]
    assert "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("__Host-esb_session=") and "HttpOnly" in cookie and "Secure" in cookie
    assert "SameSite=Strict" in cookie and "Path=/" in cookie


def test_login_locked_after_too_many_failures(admin: Admin, browser, console_box: ConsoleBox):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(console_box.url + "/login")
    messages = []
    for attempt in range(5):
        page.fill("input[name=name]", ADMIN)
        page.fill("input[name=password]", f"wrong password {attempt}")
        page.click("button[type=submit]")
        messages.append(page.locator(".flash.error").inner_text())
    assert messages[:4] == ["Wrong name or password."] * 4
    assert "Too many failed attempts" in messages[4] and "10 more minutes" in messages[4]
    page.fill("input[name=name]", ADMIN)
    page.fill("input[name=password]", PASSWORD)  # the right password no longer helps
    page.click("button[type=submit]")
    assert "locked" in page.locator(".flash.error").inner_text() and page.url.endswith("/login")
    shot(page, "login-locked")
    context.close()
    # The administrator's open session is not affected. The audit log has every password check and
    # the lockout once; an attempt refused while locked is counted, not logged one by one.
    entries = audit_entries(console_box, admin)
    failures = [e for e in entries if e["action"] == "admin.login_failed"]
    assert sum(e["details"]["reason"] == "bad credentials" for e in failures) == 5
    assert not [e for e in failures if e["details"]["reason"] == "locked"]
    lockouts = [e for e in entries if e["action"] == "admin.lockout"]
    assert len(lockouts) == 1 and f"account:{ADMIN}" in lockouts[0]["details"]["keys"]


def _presented_certificate(console_box: ConsoleBox) -> x509.Certificate:
    import socket
    import ssl

    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # only to read what is presented
    with (socket.create_connection(("127.0.0.1", console_box.port), timeout=5) as sock,
          context.wrap_socket(sock, server_hostname="127.0.0.1") as tls_sock):
        return x509.load_der_x509_certificate(tls_sock.getpeercert(binary_form=True))


def test_organisation_certificate_upload_and_back(admin: Admin, console_box: ConsoleBox, tmp_path):
    """Runs last: it changes the certificate the browser above has pinned."""
    cookie = next(c for c in admin.context.cookies() if c["name"] == "__Host-esb_session")
    session = https(console_box)
    session.cookies.set(cookie["name"], cookie["value"], domain="127.0.0.1", path="/")  # kept across redirects
    csrf = re.search(r'name="csrf" value="([^"]+)"', session.get(console_box.url + "/settings", timeout=10).text).group(1)
    # The organisation's CA and a certificate for the box's address.
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Example Ltd IT CA")])
    now = dt.datetime.now(dt.UTC)
    ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
               .not_valid_after(now + dt.timedelta(days=365))
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "esignbox.example.lan")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=90))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("esignbox.example.lan"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .sign(ca_key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    wrong_key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    refused = session.post(console_box.url + "/settings/tls", data={"csrf": csrf}, timeout=10,
                           files={"cert": ("c.pem", _pem(leaf, ca_cert)), "key": ("k.pem", wrong_key)})
    assert "Certificate refused: the private key does not belong to the first certificate" in html.unescape(refused.text)
    accepted = session.post(console_box.url + "/settings/tls", data={"csrf": csrf}, timeout=10,
                            files={"cert": ("c.pem", _pem(leaf, ca_cert)), "key": ("k.pem", key_pem)})
    assert "now presents the certificate of CN=esignbox.example.lan" in html.unescape(accepted.text)
    # nginx reloads gracefully: for a moment an old worker may still take a connection.
    deadline, streak = time.monotonic() + 10, 0
    while streak < 10 and time.monotonic() < deadline:
        streak = streak + 1 if _presented_certificate(console_box) == leaf else 0
    assert streak == 10
    ca_file = tmp_path / "org-ca.pem"
    ca_file.write_bytes(_pem(ca_cert))
    # The organisation's name is now one of the box's names (Host check), and the chain verifies.
    page = requests.get(console_box.url + "/login", headers={"Host": f"esignbox.example.lan:{console_box.port}"},
                        verify=str(ca_file), timeout=10)
    assert page.status_code == 200
    back = session.post(console_box.url + "/settings/tls", data={"csrf": csrf, "reset": "1"}, timeout=10,
                        verify=str(ca_file), allow_redirects=False)
    assert back.status_code == 303
    raw = tomllib.loads((console_box.state_dir / "box.toml").read_text())
    assert "tls_cert_file" not in raw["console"]
    deadline, streak = time.monotonic() + 10, 0
    while streak < 10 and time.monotonic() < deadline:
        streak = streak + 1 if _presented_certificate(console_box).issuer != leaf.issuer else 0
    settings = session.get(console_box.url + "/settings", timeout=10)  # verified with the box CA again
    assert "now presents the certificate of box-local CA" in html.unescape(settings.text)
