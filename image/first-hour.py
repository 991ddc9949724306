"""The first hour with a box, done by a machine against a booted image (boot-test.sh).

    python image/first-hour.py --box 127.0.0.2 --code CODE --console-ca FP --api-cert FP --shots DIR

What the image's README tells a person to do once the screen shows the box: check the console's
certificate against the CA fingerprint on the screen, open https://esignbox.local:8443/ in a
browser (headless Chromium; the name resolves to --box, where the VM's ports 8443 and 443 are),
enter the set-up code, create the administrator, make the token, generate the key, have the CSR
certified by "the organisation's CA" (a dev PKI on this host, which the box reaches as 10.0.2.2
through QEMU's user network), name the TSA and OCSP responder, create the first API client, start
the signing service; then check the API's certificate against the screen's and sign a hash
through the box's nginx on 443 with curl, as the top-level README shows. One screenshot per step.
Prints ``ok``/``FAIL`` lines and exits 1 if a step failed.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from asn1crypto import pem
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from playwright.sync_api import sync_playwright

from firmware.devpki import DevPki, PkiServer

NAME = "esignbox.local"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
ADMIN, PASSWORD = "admin", "correct horse battery staple"
SUBJECT = "CN=First Hour Signer,O=Example Ltd,C=BE"
HOST_FROM_THE_BOX = "10.0.2.2"  # this host, seen from QEMU's user network


def fingerprint(cert: x509.Certificate) -> str:
    return ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))


def presented_chain(box: str, port: int) -> list[x509.Certificate]:
    """The certificates the server sends, leaf first (openssl: Python's ssl gives only the leaf)."""
    done = subprocess.run(["openssl", "s_client", "-connect", f"{box}:{port}", "-servername", NAME, "-showcerts"],
                          input=b"", capture_output=True, timeout=30, check=False)
    return x509.load_pem_x509_certificates(done.stdout) if b"BEGIN CERTIFICATE" in done.stdout else []


def spki_pin(cert: x509.Certificate) -> str:
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Steps:
    def __init__(self) -> None:
        self.failed = 0

    def check(self, what: str, passed: bool, detail: str = "") -> bool:
        print(f"  {'ok  ' if passed else 'FAIL'}  {what}{f' ({detail})' if detail else ''}", flush=True)
        self.failed += 0 if passed else 1
        return passed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--box", required=True, help="where the VM's 8443 and 443 are forwarded")
    parser.add_argument("--code", required=True, help="the set-up code on the screen")
    parser.add_argument("--console-ca", required=True, help="the console CA's SHA-256 fingerprint on the screen")
    parser.add_argument("--api-cert", required=True, help="the API certificate's SHA-256 fingerprint on the screen")
    parser.add_argument("--shots", type=Path, required=True, help="directory for the screenshots")
    args = parser.parse_args()
    steps = Steps()
    args.shots.mkdir(parents=True, exist_ok=True)

    chain = presented_chain(args.box, 8443)
    cas = [c for c in chain[1:] if fingerprint(c) == args.console_ca.upper()]
    leaf_ok = bool(chain and cas)
    if leaf_ok:
        try:
            chain[0].verify_directly_issued_by(cas[0])
        except (InvalidSignature, ValueError, TypeError):
            leaf_ok = False
    if not steps.check("the console's certificate is issued by the CA whose fingerprint the screen shows", leaf_ok,
                       f"{len(chain)} certificate(s) presented"):
        return 1

    with tempfile.TemporaryDirectory() as scratch:
        port = free_port()
        pki = DevPki(Path(scratch) / "ca", f"http://{HOST_FROM_THE_BOX}:{port}")
        server: PkiServer | None = None
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
                *CHROMIUM_ARGS, f"--ignore-certificate-errors-spki-list={spki_pin(chain[0])}",
                f"--host-resolver-rules=MAP {NAME} {args.box}"])
            page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            page.set_default_timeout(120_000)  # the box runs under TCG: slow pages

            def shot(name: str) -> None:
                page.screenshot(path=str(args.shots / f"{name}.png"), full_page=True)

            try:
                page.goto(f"https://{NAME}:8443/")
                shot("01-code")
                page.fill("input[name=code]", args.code)
                page.click("button[type=submit]")
                page.fill("input[name=name]", ADMIN)
                page.fill("input[name=password]", PASSWORD)
                page.fill("input[name=confirm]", PASSWORD)
                shot("02-administrator")
                page.click("button[type=submit]")
                steps.check("the set-up code and a new administrator lead to the token step",
                            page.url.endswith("/setup/token"), page.url)
                shot("03-token")
                page.click("text=Make a SoftHSM2 token on the box")
                page.select_option("select[name=algorithm]", "ec-p256")
                shot("04-key")
                page.click("text=Generate the key")
                steps.check("a SoftHSM2 token and a key are made on the box", page.url.endswith("/setup/chain"), page.url)
                page.fill("input[name=subject]", SUBJECT)
                with page.expect_download() as info:
                    page.click("text=Download CSR")
                csr = x509.load_pem_x509_csr(Path(info.value.path()).read_bytes())
                pki.ensure(csr.public_key().public_bytes(serialization.Encoding.DER,
                                                         serialization.PublicFormat.SubjectPublicKeyInfo))
                server = PkiServer(pki, port)
                server.start()
                issued = b"".join(pem.armor("CERTIFICATE", der) for der in pki.box_chain())
                page.set_input_files("input[name=chain]", {"name": "issued.pem", "mimeType": "application/x-pem-file",
                                                           "buffer": issued})
                shot("05-chain")
                page.click("text=Check and keep")
                steps.check("the CA's certificate for the box's CSR is accepted", page.url.endswith("/setup/services"),
                            "; ".join(page.locator(".flash").all_inner_texts()))
                page.fill("textarea[name=tsa_urls]", pki.tsa_url())
                page.fill("textarea[name=ocsp_urls]", pki.ocsp_url())
                shot("06-services")
                page.click("text=Check and save")
                steps.check("the box reaches the TSA and the OCSP responder", page.url.endswith("/setup/client"),
                            "; ".join(page.locator(".flash").all_inner_texts()))
                page.fill("input[name=name]", "billing")
                page.click("text=Create the client")
                api_key = page.input_value("#api-key")
                shot("07-client")
                page.click("text=Continue")
                shot("08-start")
                page.click("text=Start the signing service")
                started = page.locator("#setup-started").is_visible()
                shot("09-started")
                steps.check("the console starts the signing service", started)
            finally:
                browser.close()

        api_chain = presented_chain(args.box, 443)
        api_ok = bool(api_chain) and fingerprint(api_chain[0]) == args.api_cert.upper()
        if steps.check("the API's certificate is the one whose fingerprint the screen shows", api_ok):
            cert_file = Path(scratch) / "esignbox.pem"
            cert_file.write_bytes(api_chain[0].public_bytes(serialization.Encoding.PEM))
            digest = base64.b64encode(hashlib.sha256(b"the first hour").digest()).decode()
            answer = ""
            deadline = time.monotonic() + 300  # the workers start once the set-up has finished: minutes under TCG
            while time.monotonic() < deadline:
                done = subprocess.run(
                    ["curl", "-s", "--max-time", "60", "--cacert", str(cert_file), "--resolve", f"{NAME}:443:{args.box}",
                     "-H", f"Authorization: Bearer {api_key}", "-H", "Content-Type: application/json",
                     "-d", json.dumps({"hash_algorithm": "sha256", "hash": digest, "level": "B-T"}),
                     "-w", "\n%{http_code}", f"https://{NAME}/v1/signatures"],
                    capture_output=True, text=True, timeout=90, check=False)
                answer = done.stdout
                if answer.endswith("\n201"):
                    break
                time.sleep(2)
            body, _, status = answer.rpartition("\n")
            level = json.loads(body).get("level") if status == "201" else None
            steps.check("a hash is signed through nginx on 443 (curl --cacert, as the README shows)",
                        status == "201" and level == "B-T", f"HTTP {status or '-'}, level {level}")
        if server is not None:
            server.stop()
    return 1 if steps.failed else 0


if __name__ == "__main__":
    sys.exit(main())
