"""The dev box's set-up (`init_dev`, `serve --dev`) and the start-up checks every box runs.

Each test makes its own state directory (own SoftHSM2 token, own dev PKI) through the CLI, in a
process of its own: SoftHSM2 reads its token directory once per process, and this one already
serves the session's box.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import requests
from asn1crypto import pem, x509

from firmware.config import BoxConfig
from firmware.devpki import DevPki

from .support import ESIGNBOX, BoxProcess, box_toml_with, free_port


def init_dev(state_dir: Path, *options: str) -> BoxConfig:
    subprocess.run([ESIGNBOX, "--state-dir", str(state_dir), "init-dev", *options],
                   check=True, capture_output=True, timeout=120)
    return BoxConfig.load(state_dir)


@pytest.fixture
def dev_dir(tmp_path: Path) -> Path:
    state_dir = tmp_path / "box"
    init_dev(state_dir, "--pki-port", str(free_port()), "--port", str(free_port()))
    return state_dir


def test_init_dev_never_overwrites_an_installed_chain(dev_dir: Path):
    """A chain installed after a key rollover must survive the next `make run`."""
    config = BoxConfig.load(dev_dir)
    installed = config.chain_file.read_bytes() + b"# installed by the operator\n"
    config.chain_file.write_bytes(installed)
    roots = config.trust_roots_file.read_bytes() + b"# the organisation's roots\n"
    config.trust_roots_file.write_bytes(roots)
    init_dev(dev_dir)
    assert config.chain_file.read_bytes() == installed
    assert config.trust_roots_file.read_bytes() == roots


def test_box_refuses_to_start_with_a_chain_for_another_key(dev_dir: Path):
    """Health must not say ok while every signature would fail: the box does not start at all."""
    config = BoxConfig.load(dev_dir)
    root = config.trust_roots_file.read_bytes()  # a certificate, but not for the token key
    config.chain_file.write_bytes(root)
    port = free_port()
    started = subprocess.run([ESIGNBOX, "--state-dir", str(dev_dir), "serve", "--port", str(port)],
                             capture_output=True, text=True, timeout=60)
    assert started.returncode != 0
    assert "box-signing" in started.stderr and str(config.chain_file) in started.stderr, started.stderr
    assert "not for" in started.stderr and "Traceback" not in started.stderr
    config.chain_file.write_bytes(b"".join(pem.armor("CERTIFICATE", der) for der in _dev_chain(dev_dir)))
    box = BoxProcess(dev_dir, port).start()
    try:
        assert requests.get(f"{box.url}/v1/health", timeout=5).status_code == 200
    finally:
        box.stop()


def test_init_dev_with_another_port_moves_the_dev_box_and_its_links(dev_dir: Path):
    """`serve --dev --port X` on an existing dev box (init_dev with that port) sends links to port X;
    a link address an admin set stays, and no port asked for changes nothing."""
    before = BoxConfig.load(dev_dir)
    assert before.contracts.public_base_url == f"http://127.0.0.1:{before.api_port}"
    port = free_port()
    moved = init_dev(dev_dir, "--port", str(port))
    assert moved.api_port == port and moved.contracts.public_base_url == f"http://127.0.0.1:{port}"
    assert init_dev(dev_dir).api_port == port
    toml = dev_dir / "box.toml"
    toml.write_text(box_toml_with(toml.read_text(), {"contracts": {"public_base_url": "https://sign.example.org"}}))
    again = init_dev(dev_dir, "--port", str(port + 1))
    assert again.api_port == port + 1 and again.contracts.public_base_url == "https://sign.example.org"


def _dev_chain(state_dir: Path) -> list[bytes]:
    config = BoxConfig.load(state_dir)
    return DevPki(state_dir / "pki", f"http://127.0.0.1:{config.pki_port}").box_chain()


def test_serve_dev_on_a_new_state_dir_keeps_the_port_it_was_given(tmp_path: Path):
    state_dir, port = tmp_path / "fresh", free_port()
    process = subprocess.Popen(
        [ESIGNBOX, "--state-dir", str(state_dir), "serve", "--dev", "--no-console",
         "--port", str(port), "--pki-port", str(free_port())],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{port}/v1/health", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.2)
        else:
            pytest.fail("serve --dev did not answer on the port it was given")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)
    assert tomllib.loads((state_dir / "box.toml").read_text())["api"]["port"] == port


def test_the_dev_box_signs_mail_with_a_mail_key_of_its_own(dev_dir: Path):
    """`esignbox init-dev` (as `make run`) makes a second token key and a dev-PKI e-mail certificate
    for it, installed where the key life cycle keeps a key's chain; mail is signed with it. The box
    is opened in a process of its own: a PKCS#11 module loads once per process, with one token set."""
    config = init_dev(dev_dir)
    assert config.mail.key_label == "box-mail" and config.directory.enabled
    _, _, der = next(pem.unarmor((dev_dir / "chains" / "box-mail.pem").read_bytes(), multiple=True))
    leaf = x509.Certificate.load(der)
    assert leaf.extended_key_usage_value.native == ["email_protection"]
    assert [n.native for n in leaf.subject_alt_name_value] == ["esignbox@esignbox.dev"]
    probe = ("import sys; from pathlib import Path; from firmware.box import Box; from firmware.config import BoxConfig;"
             "box = Box.open(BoxConfig.load(Path(sys.argv[1])));"
             "print(box.mail.signing_certificate.sha256.hex(), box.signer.signing_cert.sha256.hex())")
    out = subprocess.run([sys.executable, "-c", probe, str(dev_dir)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    mail_cert, signing_cert = out.stdout.split()
    assert mail_cert == leaf.sha256.hex() != signing_cert
