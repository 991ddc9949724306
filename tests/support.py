"""Helpers the tests share: free ports, an `esignbox serve` process, an API session, a tiny CA."""

from __future__ import annotations

import secrets
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests
from cryptography import x509 as cx509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from firmware.config import CONFIG_NAME, parse
from firmware.devbox import port_changes
from firmware.operations import configstore

ESIGNBOX = str(Path(sys.executable).with_name("esignbox"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class BoxProcess:
    """An `esignbox serve` process on its own port, stopped with SIGTERM like systemd would.

    The port is written into box.toml before the start, with the links that pointed at the old
    one (firmware/devbox.py port_changes), so the invitations the box sends link to this process.
    """

    def __init__(self, state_dir: Path, port: int | None = None) -> None:
        self.state_dir = state_dir
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = state_dir / f"serve-{self.port}.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> BoxProcess:
        path = self.state_dir / CONFIG_NAME
        text = path.read_text()
        changes = port_changes(parse(text, path), self.port)
        if changes:  # written as it is (not audited): a test's box may have no room left for an entry
            path.write_text(box_toml_with(text, changes))
        with open(self.log_path, "wb") as log:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(
                [ESIGNBOX, "--state-dir", str(self.state_dir), "serve", "--port", str(self.port)],
                stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"esignbox exited early:\n{self.log_path.read_text()}")
            try:
                requests.get(f"{self.url}/v1/health", timeout=1)
                return self
            except requests.ConnectionError:
                time.sleep(0.1)
        raise RuntimeError(f"esignbox did not start:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text()


class Api:
    """A requests session bound to one box and one API key."""

    def __init__(self, base_url: str, api_key: str | None) -> None:
        self.base_url = base_url
        self.session = requests.Session()
        if api_key:
            self.session.headers["Authorization"] = f"Bearer {api_key}"

    def post(self, path: str, **kwargs) -> requests.Response:
        return self.session.post(self.base_url + path, timeout=60, **kwargs)

    def get(self, path: str, **kwargs) -> requests.Response:
        return self.session.get(self.base_url + path, timeout=60, **kwargs)


def issue_certificate(csr_pem: bytes, days: int = 30):
    """A tiny CA: returns (root PEM, leaf PEM) for the CSR's public key."""
    root_key = ec.generate_private_key(ec.SECP256R1())
    root_name = cx509.Name([cx509.NameAttribute(NameOID.COMMON_NAME, f"Test Root {secrets.token_hex(3)}")])
    now = datetime.now(UTC)
    root = (cx509.CertificateBuilder().subject_name(root_name).issuer_name(root_name)
            .public_key(root_key.public_key()).serial_number(cx509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=days))
            .add_extension(cx509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(root_key, hashes.SHA256()))
    request = cx509.load_pem_x509_csr(csr_pem)
    assert request.is_signature_valid
    leaf = (cx509.CertificateBuilder().subject_name(request.subject).issuer_name(root_name)
            .public_key(request.public_key()).serial_number(cx509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=days))
            .sign(root_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    return root.public_bytes(pem), leaf.public_bytes(pem)


def box_toml_with(text: str, changes: dict[str, dict[str, object]]) -> str:
    """``text`` (a box.toml) with ``changes`` merged per section, rendered by the box's one writer."""
    return configstore.render(configstore.merged(parse(text, Path("box.toml")), changes), "tests")
