"""A box's set-up from the browser (issue 14): `esignbox serve` on a state directory with no token,
no key and no certificate runs the admin console alone (set-up mode); the console walks the
administrator from the one-time code to a signing service, which then starts in the same process.

Everything is real: `esignbox serve` with nginx in front of the console, a SoftHSM2 token the
set-up makes in the state directory, the dev PKI's TSA and OCSP responder (certomancer), a chain
issued by the dev PKI's intermediate CA from the CSR the console hands out, headless Chromium.
The HTTP test also stops the box halfway and checks that the set-up resumes at the step reached.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import re
import subprocess
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import tomli_w
from asn1crypto import pem
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from firmware.devpki import DevPki, PkiServer
from firmware.operations.setup import is_set_up

from .support import ESIGNBOX, free_port, spki_pin, stop_process

ARTIFACTS = Path(__file__).parent / "artifacts" / "webui"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
ADMIN, PASSWORD = "admin", "correct horse battery staple"
SUBJECT = "CN=Set-up Test Signer,O=Example Ltd,C=BE"
BOX_SUBJECT = "E-signature Box"  # the dev PKI's CA names its box certificates itself
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class SetupBox:
    """An `esignbox serve` in set-up mode; box.toml holds only where the console and the API listen."""

    state_dir: Path
    url: str
    api_url: str
    process: subprocess.Popen | None = None
    code: str = ""

    @property
    def log_path(self) -> Path:
        return self.state_dir / "serve.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def start(self, expect: str = "SET-UP MODE") -> SetupBox:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([ESIGNBOX, "--state-dir", str(self.state_dir), "serve"], stdout=log,
                                            stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            text = self.log()
            if self.process.poll() is not None:
                raise RuntimeError(f"esignbox serve exited:\n{text}")
            if text.count(expect) > self.starts:
                break
            time.sleep(0.1)
        else:
            raise RuntimeError(f"the console did not start in set-up mode:\n{self.log()}")
        self.starts += 1
        codes = re.findall(r"ONE-TIME SET-UP CODE: ([A-Z0-9-]+)", self.log())
        self.code = codes[-1] if codes else ""
        return self

    starts = 0

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, timeout=15)

    def screen(self) -> list[str]:
        done = subprocess.run([ESIGNBOX, "--state-dir", str(self.state_dir), "status", "--screen"],
                              capture_output=True, text=True, timeout=60, check=True)
        return done.stdout.splitlines()

    def https(self) -> requests.Session:
        session = requests.Session()
        session.trust_env = False  # else REQUESTS_CA_BUNDLE overrides verify
        session.verify = str(self.state_dir / "console" / "tls" / "ca.pem")
        return session

    def audit(self) -> list[dict]:
        done = subprocess.run([ESIGNBOX, "--state-dir", str(self.state_dir), "audit", "export"], capture_output=True,
                              text=True, check=True)
        return [json.loads(line) for line in done.stdout.splitlines()]


@pytest.fixture
def setup_box(tmp_path: Path) -> Iterator[SetupBox]:
    """A state directory as a freshly written image leaves it, plus the ports the test may use."""
    state_dir = tmp_path / "box"
    state_dir.mkdir()
    port, api_port = free_port(), free_port()
    (state_dir / "box.toml").write_text(tomli_w.dumps({
        "api": {"port": api_port, "workers": 1},
        "console": {"port": port, "listen": ["127.0.0.1"], "allow": ["127.0.0.1/32"]}}))
    box = SetupBox(state_dir, f"https://127.0.0.1:{port}", f"http://127.0.0.1:{api_port}")
    yield box
    box.stop()


@dataclass
class IssuingCa:
    """The organisation's CA for the test: a dev PKI of its own (certomancer), whose OCSP responder
    and CRLs know the certificate it issues for the CSR; served once it has issued."""

    pki: DevPki
    port: int
    server: PkiServer | None = None

    def issue(self, csr_pem: bytes) -> bytes:
        csr = x509.load_pem_x509_csr(csr_pem)
        assert csr.is_signature_valid
        self.pki.ensure(csr.public_key().public_bytes(serialization.Encoding.DER,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo))
        self.stop()
        self.server = PkiServer(self.pki, self.port)
        self.server.start()
        leaf, interm, root = self.pki.box_chain()
        return b"".join(pem.armor("CERTIFICATE", der) for der in (root, leaf, interm))  # any order

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


@pytest.fixture
def ca(tmp_path: Path) -> Iterator[IssuingCa]:
    port = free_port()
    issuing = IssuingCa(DevPki(tmp_path / "ca", f"http://127.0.0.1:{port}"), port)
    yield issuing
    issuing.stop()


def stranger_chain(csr_pem: bytes) -> bytes:
    """A certificate with the CSR's subject for some other key: what a mix-up at the CA gives."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.load_pem_x509_csr(csr_pem).subject
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=30)).sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


def sign_hash(api_url: str, api_key: str, data: bytes) -> dict:
    digest = base64.b64encode(hashlib.sha256(data).digest()).decode()
    deadline = time.monotonic() + 30
    while True:  # the workers start once the set-up finished
        try:
            response = requests.post(api_url + "/v1/signatures", timeout=30, headers={"Authorization": f"Bearer {api_key}"},
                                     json={"hash_algorithm": "sha256", "hash": digest, "level": "B-T", "profile": "CAdES"})
            break
        except requests.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    assert response.status_code == 201, response.text
    return response.json()


# -- through the console's HTTP face -------------------------------------------------------------

class Browserless:
    """A form-posting client of the console: cookies, the CSRF token of the last page, redirects."""

    def __init__(self, box: SetupBox) -> None:
        self.box, self.session, self.csrf = box, box.https(), ""

    def get(self, path: str) -> requests.Response:
        response = self.session.get(self.box.url + path, timeout=30)
        self._remember(response)
        return response

    def post(self, path: str, data: dict | None = None, files: dict | None = None) -> requests.Response:
        response = self.session.post(self.box.url + path, data={"csrf": self.csrf, **(data or {})}, files=files,
                                     timeout=60)
        self._remember(response)
        return response

    def _remember(self, response: requests.Response) -> None:
        found = CSRF.search(response.text) if "text/html" in response.headers.get("Content-Type", "") else None
        if found:
            self.csrf = found.group(1)


def test_a_box_without_a_token_is_not_set_up_and_serve_without_console_says_so(tmp_path: Path):
    assert not is_set_up(tmp_path)  # no box.toml at all: a freshly written image
    (tmp_path / "box.toml").write_text('[api]\nport = 1\n')
    assert not is_set_up(tmp_path)  # no [token]
    done = subprocess.run([ESIGNBOX, "--state-dir", str(tmp_path), "serve", "--no-console", "--port",
                           str(free_port())], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "is not set up" in done.stderr and "admin console" in done.stderr


def test_set_up_over_http_resumes_where_it_stopped_and_starts_signing(setup_box: SetupBox, ca: IssuingCa):
    box = setup_box.start()
    with pytest.raises(requests.ConnectionError):  # set-up mode: the API does not answer yet
        requests.get(box.api_url + "/v1/health", timeout=2)
    screen = box.screen()  # what the box's screen shows (the image writes it to /etc/issue)
    assert screen[0] == "E-signature Box" and "State: not set up" in screen
    assert f"Console: {box.url}/" in screen and f"Set-up code: {box.code}" in screen
    fingerprint = re.search(r"CA SHA-256 fingerprint: ([0-9A-F:]+)", box.log()).group(1)
    assert f"Console CA SHA-256: {fingerprint}" in screen
    code_file = box.state_dir / "console" / "setup-code"
    assert code_file.stat().st_mode & 0o777 == 0o600
    web = Browserless(box)
    assert web.get("/").url.endswith("/setup")
    web.post("/setup", {"code": box.code})
    answer = web.post("/setup/password", {"name": ADMIN, "password": PASSWORD, "confirm": PASSWORD})
    assert not code_file.exists() and not [line for line in box.screen() if line.startswith("Set-up code")]
    assert answer.url.endswith("/setup/token")  # the dashboard waits: the box is not set up
    assert "No PKCS#11 module" not in answer.text and "SoftHSM2" in answer.text
    assert web.get("/keys").url.endswith("/setup/token")  # every other page leads to the set-up

    answer = web.post("/setup/token", {"kind": "softhsm"})
    assert answer.url.endswith("/setup/key") and "A SoftHSM2 token was made" in answer.text, answer.text
    assert "esignbox" in answer.text  # the token's label
    answer = web.post("/setup/key", {"algorithm": "ec-p256"})
    assert answer.url.endswith("/setup/chain") and "Key &#39;box-signing&#39; (ec-p256) generated" in answer.text

    # The administrator stops here; the box restarts: the set-up goes on at the certificate.
    box.stop()
    box.start(expect="SET-UP MODE")
    assert box.code == "" or "ONE-TIME SET-UP CODE" not in box.log().split("SET-UP MODE")[-1]
    web = Browserless(box)
    web.get("/login")
    answer = web.post("/login", {"name": ADMIN, "password": PASSWORD})
    assert answer.url.endswith("/setup/chain"), answer.url

    csr = web.post("/setup/csr", {"subject": SUBJECT})
    assert csr.headers["Content-Type"] == "application/pkcs10"
    answer = web.post("/setup/chain", files={"chain": ("wrong.pem", stranger_chain(csr.content),
                                                       "application/x-pem-file")})
    assert answer.url.endswith("/setup/chain") and "not for token key" in answer.text
    answer = web.post("/setup/chain", files={"chain": ("issued.pem", ca.issue(csr.content),
                                                       "application/x-pem-file")})
    assert answer.url.endswith("/setup/services") and "Chain checked and kept" in answer.text, answer.text

    answer = web.post("/setup/services", {"tsa_urls": "http://127.0.0.1:9/nothing-here", "ocsp_urls": "",
                                          "crl_urls": ""})
    assert answer.url.endswith("/setup/services") and "NOT reachable" in answer.text  # shown, not saved
    answer = web.post("/setup/services", {"tsa_urls": ca.pki.tsa_url(), "ocsp_urls": ca.pki.ocsp_url(),
                                          "crl_urls": ""})
    assert answer.url.endswith("/setup/client"), answer.text
    assert f"TSA {ca.pki.tsa_url()}: reachable" in answer.text and f"OCSP {ca.pki.ocsp_url()}: reachable" in answer.text

    answer = web.post("/setup/client", {"name": "billing"})
    api_key = re.search(r'id="api-key" class="secret" value="([^"]+)"', answer.text).group(1)
    answer = web.get("/setup/box")
    assert answer.url.endswith("/setup/start") and "box-signing" in answer.text
    answer = web.post("/setup/start")
    assert "The box is set up" in answer.text

    signed = sign_hash(box.api_url, api_key, b"first signature")
    assert signed["level"] == "B-T"
    assert box.screen()[1] in ("State: ready", "State: clock not synchronised")  # the latter where NTP has not synced
    certificate = requests.get(box.api_url + "/v1/certificate", timeout=10).json()
    assert BOX_SUBJECT in certificate["subject"]
    assert web.get("/").url == box.url + "/"  # the dashboard now
    raw = tomllib.loads((box.state_dir / "box.toml").read_text())
    assert raw["token"]["label"] == "esignbox" and raw["console"]["enabled"] is True
    assert raw["api"]["trusted_proxies"] == ["127.0.0.1", "::1"]
    assert raw["signing"]["chain_file"] == "chains/box-signing.pem" and raw["signing"]["tsa_urls"] == [ca.pki.tsa_url()]
    assert raw["revocation"]["ocsp_urls"] == [ca.pki.ocsp_url()]
    actions = [e["action"] for e in box.audit()]
    for action in ("admin.password_set", "setup.token", "key.generate", "key.csr", "chain.import", "setup.services",
                   "client.add", "key.activate"):
        assert action in actions, action
    assert "the box is set up: starting the signing service" in box.log()


# -- the same in a browser, screenshots of each step -----------------------------------------------

def _pinned_spki(box: SetupBox) -> str:
    return spki_pin(x509.load_pem_x509_certificates((box.state_dir / "console" / "tls" / "console.pem").read_bytes())[0])


def test_set_up_in_a_browser_from_empty_box_to_first_signature(setup_box: SetupBox, ca: IssuingCa):
    from playwright.sync_api import sync_playwright

    box = setup_box.start()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def shot(name: str) -> None:
        page.screenshot(path=str(ARTIFACTS / f"setup-{name}.png"), full_page=True)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            *CHROMIUM_ARGS, f"--ignore-certificate-errors-spki-list={_pinned_spki(box)}"])
        page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        page.goto(box.url + "/")
        shot("1-code")
        page.fill("input[name=code]", box.code)
        page.click("button[type=submit]")
        page.fill("input[name=name]", ADMIN)
        page.fill("input[name=password]", PASSWORD)
        page.fill("input[name=confirm]", PASSWORD)
        shot("2-password")
        page.click("button[type=submit]")
        assert page.url.endswith("/setup/token")
        shot("3-token")
        page.click("text=Make a SoftHSM2 token on the box")
        assert page.url.endswith("/setup/key")
        shot("4-key")
        page.select_option("select[name=algorithm]", "rsa2048")
        page.click("text=Generate the key")
        assert page.url.endswith("/setup/chain")
        page.fill("input[name=subject]", SUBJECT)
        shot("5-csr")
        with page.expect_download() as info:
            page.click("text=Download CSR")
        assert info.value.suggested_filename == "box-signing.csr"
        chain = ca.issue(Path(info.value.path()).read_bytes())
        page.set_input_files("input[name=chain]", {"name": "issued.pem", "mimeType": "application/x-pem-file",
                                                   "buffer": chain})
        shot("6-chain")
        page.click("text=Check and keep")
        assert page.url.endswith("/setup/services"), page.locator(".flash").all_inner_texts()
        page.fill("textarea[name=tsa_urls]", ca.pki.tsa_url())
        page.fill("textarea[name=ocsp_urls]", ca.pki.ocsp_url())
        shot("7-services")
        page.click("text=Check and save")
        assert page.url.endswith("/setup/client"), page.content()
        assert "reachable" in page.locator(".flash.ok").inner_text()
        page.fill("input[name=name]", "billing")
        page.click("text=Create the client")
        api_key = page.input_value("#api-key")
        shot("8-client")
        page.click("text=Continue")
        assert page.url.endswith("/setup/start")
        shot("9-start")
        page.click("text=Start the signing service")
        assert page.locator("#setup-started").is_visible()
        shot("10-started")
        signed = sign_hash(box.api_url, api_key, b"signed after a set-up in the browser")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the console serves its dashboard once serve swapped the box in
            page.goto(box.url + "/")
            if page.url == box.url + "/":
                break
            time.sleep(0.2)
        assert page.url == box.url + "/" and "box-signing" in page.content()
        shot("11-dashboard")
        browser.close()
    assert signed["level"] == "B-T"
    assert BOX_SUBJECT in requests.get(box.api_url + "/v1/certificate", timeout=10).json()["subject"]
