"""The key life cycle from the command line, as the README tells an operator to run it.

keygen → csr → a CA issues the certificate → import-chain --label → activate → the box signs
with the new key, also after a `serve --dev` restart → rollback-key goes back. The box has its own
state directory (own SoftHSM2 token) made by `init-dev` in a process of its own, like
tests/test_devbox.py; every command is the real `esignbox`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import signal
import subprocess
import time
import tomllib
from pathlib import Path

import pytest
import requests
from asn1crypto import cms
from cryptography import x509 as cx509

from firmware.config import BoxConfig

from .support import ESIGNBOX, BoxProcess, free_port, issue_certificate

SUBJECT = "CN=CLI Test Signer,O=Example Ltd,C=BE"


def esignbox(state_dir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([ESIGNBOX, "--state-dir", str(state_dir), *args], capture_output=True, text=True,
                          timeout=120, cwd=state_dir)
    if check:
        assert done.returncode == 0, done.stderr
    return done


@pytest.fixture
def dev_dir(tmp_path: Path) -> Path:
    state_dir = tmp_path / "box"
    state_dir.mkdir()
    esignbox(state_dir, "init-dev", "--pki-port", str(free_port()), "--port", str(free_port()))
    return state_dir


def serial_of(pem: bytes) -> str:
    return format(cx509.load_pem_x509_certificate(pem).serial_number, "x")


def signer_serial(url: str, api_key: str) -> str:
    """The serial of the certificate a fresh B-B signature names as its signer."""
    digest = base64.b64encode(hashlib.sha256(b"which key signs?").digest()).decode()
    response = requests.post(url + "/v1/signatures", timeout=30, headers={"Authorization": f"Bearer {api_key}"},
                             json={"hash_algorithm": "sha256", "hash": digest, "level": "B-B", "profile": "CAdES"})
    assert response.status_code == 201, response.text
    signer = cms.ContentInfo.load(base64.b64decode(response.json()["signature"]))["content"]["signer_infos"][0]
    return format(signer["sid"].chosen["serial_number"].native, "x")


def serving_serial(url: str) -> str:
    return requests.get(url + "/v1/certificate", timeout=10).json()["serial"]


def serve_dev(state_dir: Path, port: int) -> subprocess.Popen:
    process = subprocess.Popen([ESIGNBOX, "--state-dir", str(state_dir), "serve", "--dev", "--no-console",
                                "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, "serve --dev exited early"
        try:
            requests.get(f"http://127.0.0.1:{port}/v1/health", timeout=1)
            return process
        except requests.ConnectionError:
            time.sleep(0.2)
    process.kill()
    pytest.fail("serve --dev did not answer")


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=20)


def audit_entries(state_dir: Path) -> list[dict]:
    return [json.loads(line) for line in esignbox(state_dir, "audit", "export").stdout.splitlines()]


def test_keygen_csr_import_activate_serve_restart_rollback(dev_dir: Path):
    dev_serial = serial_of(BoxConfig.load(dev_dir).chain_file.read_bytes())
    esignbox(dev_dir, "keygen", "--label", "box-2027", "--algorithm", "ec-p256")
    esignbox(dev_dir, "csr", "--label", "box-2027", "--subject", SUBJECT, "--out", "box.csr")
    root, leaf = issue_certificate((dev_dir / "box.csr").read_bytes(), days=365)
    (dev_dir / "issued-chain.pem").write_bytes(leaf + root)
    new_serial = serial_of(leaf)

    # a chain for another key is refused, and nothing is installed
    refused = esignbox(dev_dir, "import-chain", "issued-chain.pem", check=False)
    assert refused.returncode == 1 and "not for token key 'box-signing'" in refused.stderr
    # a key without an installed chain cannot be activated
    early = esignbox(dev_dir, "activate", "box-2027", check=False)
    assert early.returncode == 1 and "no certificate chain" in early.stderr

    imported = esignbox(dev_dir, "import-chain", "issued-chain.pem", "--label", "box-2027")
    assert "box-2027" in imported.stdout and "esignbox activate box-2027" in imported.stdout
    assert (dev_dir / "chains" / "box-2027.pem").exists()
    assert tomllib.loads((dev_dir / "box.toml").read_text())["signing"]["key_label"] == "box-signing"

    activated = esignbox(dev_dir, "activate", "box-2027")
    assert new_serial in activated.stdout and "restart the service" in activated.stdout
    signing = tomllib.loads((dev_dir / "box.toml").read_text())["signing"]
    assert (signing["key_label"], signing["chain_file"]) == ("box-2027", "chains/box-2027.pem")
    assert (dev_dir / "chains" / "box-signing.pem").exists()  # the outgoing key keeps its chain

    api_key = esignbox(dev_dir, "clients", "add", "key-check").stdout.strip().splitlines()[-1]
    box = BoxProcess(dev_dir).start()
    try:
        assert serving_serial(box.url) == new_serial
        assert signer_serial(box.url, api_key) == new_serial
    finally:
        box.stop()

    port = free_port()
    process = serve_dev(dev_dir, port)  # `make run` again: init_dev must leave the new key in force
    try:
        assert serving_serial(f"http://127.0.0.1:{port}") == new_serial
    finally:
        stop(process)

    rolled = esignbox(dev_dir, "rollback-key")
    assert "box-signing" in rolled.stdout and dev_serial in rolled.stdout and "restart the service" in rolled.stdout
    assert tomllib.loads((dev_dir / "box.toml").read_text())["signing"]["key_label"] == "box-signing"
    box = BoxProcess(dev_dir).start()
    try:
        assert signer_serial(box.url, api_key) == dev_serial
    finally:
        box.stop()

    operator = [(e["action"], e["details"]) for e in audit_entries(dev_dir)
                if e["actor"] == "operator" and e["action"].startswith(("key.", "chain."))]
    assert [action for action, _ in operator] == ["key.generate", "key.csr", "chain.import", "key.activate",
                                                  "key.rollback"]
    details = dict(operator)
    assert details["chain.import"]["serial"] == new_serial and details["chain.import"]["label"] == "box-2027"
    assert (details["key.activate"]["label"], details["key.activate"]["previous"]) == ("box-2027", "box-signing")
    assert (details["key.rollback"]["label"], details["key.rollback"]["previous"]) == ("box-signing", "box-2027")


def test_activate_refuses_a_chain_that_is_not_for_the_key(dev_dir: Path):
    """A chain file edited by hand after import is caught at activation, not at the next start."""
    esignbox(dev_dir, "keygen", "--label", "box-2027", "--algorithm", "ec-p256")
    (dev_dir / "chains").mkdir(exist_ok=True)  # init-dev keeps the mail key's chain there too
    (dev_dir / "chains" / "box-2027.pem").write_bytes(BoxConfig.load(dev_dir).chain_file.read_bytes())
    refused = esignbox(dev_dir, "activate", "box-2027", check=False)
    assert refused.returncode == 1 and "not for token key 'box-2027'" in refused.stderr
    assert tomllib.loads((dev_dir / "box.toml").read_text())["signing"]["key_label"] == "box-signing"
