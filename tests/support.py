"""Helpers the tests share: free ports, an `esignbox serve` process and its workers, an API session, a tiny CA."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import json
import os
import secrets
import shutil
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

from firmware.config import CONFIG_NAME, BoxConfig, parse
from firmware.devbox import port_changes
from firmware.operations import configstore

ESIGNBOX = str(Path(sys.executable).with_name("esignbox"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def spki_pin(cert: cx509.Certificate) -> str:
    """Chromium's --ignore-certificate-errors-spki-list value that trusts exactly ``cert``'s key."""
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def stop_process(process: subprocess.Popen, timeout: float) -> None:
    """SIGTERM, as systemd stops the box, then SIGKILL if it is not gone within ``timeout`` s."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


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
        if self.process:
            stop_process(self.process, timeout=10)

    def log(self) -> str:
        return self.log_path.read_text()

    def workers(self) -> set[int]:
        """The pids of its worker processes now (firmware/workers.py), read from /proc."""
        assert self.process is not None
        return {pid for pid in children(self.process.pid) if b"serve-worker" in _cmdline(pid)}


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text() if entry.name.isdigit() else ""
        except OSError:  # ended meanwhile
            continue
        if stat and int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def descendants(pid: int) -> list[int]:
    found = children(pid)
    return found + [d for child in found for d in descendants(child)]


def copy_box(box_config: BoxConfig, state: Path, changes: dict[str, dict[str, object]]) -> Path:
    """A copy of the test box in ``state`` (the same token key, chain and PKI; a new database) whose
    box.toml has ``changes``: for a test that needs other settings than the session's box."""
    shared = box_config.state_dir
    for name in ("tokens", "secrets", "chains"):
        shutil.copytree(shared / name, state / name)
    for name in ("box-chain.pem", "trust-roots.pem"):
        shutil.copy(shared / name, state / name)
    (state / "softhsm2.conf").write_text(
        f"directories.tokendir = {state / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    (state / "box.toml").write_text(box_toml_with((shared / "box.toml").read_text(), changes))
    return state


def _server_side_inode(server_port: int, client_port: int) -> str | None:
    """The socket inode of the box's end of a loopback connection, from /proc/net/tcp."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = (int(address.split(":")[1], 16) for address in fields[1:3])
        if (local, remote) == (server_port, client_port):
            return fields[9]
    return None


class WorkerConnection:
    """One keep-alive HTTP connection to a box, and the worker process that accepted it (the one that
    holds the box's end of it, found in /proc): evidence of which worker answers, with no help
    from the box."""

    def __init__(self, box: BoxProcess) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", box.port, timeout=60)
        assert self.call("GET", "/v1/health")[0] == 200  # a worker has accepted it by now
        inode = _server_side_inode(box.port, self.conn.sock.getsockname()[1])
        holders = [pid for pid in box.workers() if f"socket:[{inode}]" in _open_files(pid)]
        assert len(holders) == 1, (inode, holders)
        self.pid = holders[0]

    def call(self, method: str, path: str, body: dict | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, dict]:
        self.conn.request(method, path, body=None if body is None else json.dumps(body),
                          headers={"Content-Type": "application/json", **(headers or {})})
        response = self.conn.getresponse()
        data = response.read()
        return response.status, json.loads(data) if data else {}

    def close(self) -> None:
        self.conn.close()


def _open_files(pid: int) -> set[str]:
    """What the descriptors of ``pid`` point to ("socket:[inode]" for a socket)."""
    found = set()
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):  # closed meanwhile
                found.add(os.readlink(fd))
    except OSError:
        pass
    return found


def connections_to_each_worker(box: BoxProcess, per_worker: int, timeout: float = 30.0) -> dict[int, list[WorkerConnection]]:
    """``per_worker`` connections held open to every worker of ``box``; the kernel picks the worker
    of each, so connections are opened until every worker has its share. A worker that has only
    just started (still importing) accepts nothing yet: hence a time limit, not a count."""
    wanted = box.workers()
    held: dict[int, list[WorkerConnection]] = {pid: [] for pid in wanted}
    deadline = time.monotonic() + timeout
    while not all(len(conns) >= per_worker for conns in held.values()):
        if time.monotonic() > deadline:
            raise AssertionError(f"after {timeout} s: {({pid: len(c) for pid, c in held.items()})}")
        conn = WorkerConnection(box)
        if len(held.setdefault(conn.pid, [])) < per_worker:
            held[conn.pid].append(conn)
        else:
            conn.close()
            time.sleep(0.02)  # give a starting worker the chance to reach its accept loop
    return held


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
