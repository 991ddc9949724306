"""The API process as a server: slow or idle clients, a killed server's children, private files.

Every test talks to a real `esignbox serve` over loopback with raw sockets: a flood of half-sent
request heads is what an idle or slowloris client looks like to the server.
"""

from __future__ import annotations

import base64
import hashlib
import os
import signal
import socket
import sqlite3
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from firmware.config import BoxConfig
from firmware.store.db import Database

from .support import ESIGNBOX, Api, BoxProcess, copy_box, free_port

PARTIAL_HEAD = b"POST /v1/signatures HTTP/1.1\r\nHost: box\r\nContent-Type: application/json\r\n"
ATTACKER = "127.0.0.2"  # another loopback address: a peer other than the honest client's 127.0.0.1


def _flood(url_port: int, count: int, source: str) -> list[socket.socket]:
    """``count`` connections from ``source`` that each send half a request head and stop."""
    sockets = []
    for _ in range(count):
        sock = socket.socket()
        sock.bind((source, 0))
        sock.settimeout(2)
        sock.connect(("127.0.0.1", url_port))
        sock.sendall(PARTIAL_HEAD)
        sockets.append(sock)
    return sockets


def _closed_by_server(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:  # reset
        return True
    finally:
        sock.setblocking(True)


def _close_all(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        sock.close()


def _sign_hash(api: Api) -> requests.Response:
    digest = base64.b64encode(hashlib.sha256(b"flood").digest()).decode()
    return api.session.post(api.base_url + "/v1/signatures", json={"hash_algorithm": "sha256", "hash": digest},
                            timeout=5)


def test_an_idle_flood_from_one_peer_does_not_block_others(box: BoxProcess, api: Api, box_config: BoxConfig) -> None:
    limits = box_config.api
    flood = _flood(box.port, limits.connection_limit + 20, ATTACKER)  # more than the whole server holds
    try:
        started = time.monotonic()
        assert requests.get(box.url + "/v1/health", timeout=3).status_code == 200
        assert _sign_hash(api).status_code == 201
        assert time.monotonic() - started < 3
        still_open = sum(not _closed_by_server(sock) for sock in flood)
        # the rest were closed as they came; each worker process holds its share of the limit
        assert limits.peer_connection_limit // limits.workers <= still_open <= limits.peer_connection_limit
    finally:
        _close_all(flood)


@pytest.fixture(scope="module")
def tight_box(box_config: BoxConfig, pki_server, tmp_path_factory) -> Iterator[BoxProcess]:
    """A copy of the test box (same token key, chain and PKI) whose [api] limits are small."""
    state = copy_box(box_config, tmp_path_factory.mktemp("tight-box"),
                     {"api": {"connection_limit": 40, "header_timeout": 2}})
    process = BoxProcess(state).start()
    yield process
    process.stop()


def test_a_head_that_never_ends_is_dropped_after_the_header_timeout(tight_box: BoxProcess) -> None:
    """Trickled bytes keep a slowloris connection "active"; its head must still finish in time.

    The flood comes from 127.0.0.1 (not capped per peer) and is larger than connection_limit:
    only the header timeout frees the server.
    """
    config = BoxConfig.load(tight_box.state_dir)
    assert (config.api.connection_limit, config.api.header_timeout) == (40, 2)
    flood = _flood(tight_box.port, 50, "127.0.0.1")
    try:
        # The 10 beyond connection_limit wait in the backlog and get their own timeout once accepted.
        deadline = time.monotonic() + 2 * config.api.header_timeout + 2
        while time.monotonic() < deadline and not all(_closed_by_server(s) for s in flood):
            for sock in flood:
                try:
                    sock.send(b"X")  # one more byte of a header line, never the blank line
                except OSError:
                    pass
            time.sleep(0.3)
        assert all(_closed_by_server(s) for s in flood)
        assert requests.get(tight_box.url + "/v1/health", timeout=3).status_code == 200
    finally:
        _close_all(flood)


def _wait_healthy(process: subprocess.Popen, url: str, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"esignbox serve --dev exited:\n{log.read_text()}"
        try:
            if requests.get(url + "/v1/health", timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"esignbox serve --dev did not answer:\n{log.read_text()}")


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


class DevServe:
    """`esignbox serve --dev` on one fresh state dir and fixed ports, each run in its own process group."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.state, self.pki_port, self.port = directory / "dev", free_port(), free_port()
        self.started: list[subprocess.Popen] = []

    def start(self) -> subprocess.Popen:
        log = self.directory / f"serve-{len(self.started)}.log"
        process = subprocess.Popen(
            [ESIGNBOX, "--state-dir", str(self.state), "serve", "--dev", "--no-console",
             "--pki-port", str(self.pki_port), "--port", str(self.port)],
            stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
        self.started.append(process)
        _wait_healthy(process, f"http://127.0.0.1:{self.port}", log)
        return process

    def kill_all(self) -> None:
        for process in self.started:
            try:
                os.killpg(process.pid, signal.SIGKILL)  # the server and whatever it left behind
            except ProcessLookupError:
                pass
            process.wait()


@pytest.fixture(scope="module")
def dev_serve(tmp_path_factory) -> Iterator[DevServe]:
    """A dev box made by `serve --dev` under a developer's usual umask (022), already serving."""
    dev = DevServe(tmp_path_factory.mktemp("dev-serve"))
    old_umask = os.umask(0o022)
    try:
        dev.start()
    finally:
        os.umask(old_umask)
    yield dev
    dev.kill_all()


def test_a_killed_dev_server_takes_its_pki_server_with_it(dev_serve: DevServe) -> None:
    first = dev_serve.started[-1]
    assert not _port_free(dev_serve.pki_port)
    first.kill()  # kill -9: no handler of the server runs
    first.wait()
    deadline = time.monotonic() + 5
    while not _port_free(dev_serve.pki_port) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _port_free(dev_serve.pki_port), "the dev PKI outlived its server"
    dev_serve.start()  # a second `serve --dev` on the same state dir and ports starts


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_database_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)
    try:
        older = tmp_path / "older.db"  # as a box before this fix left it: 0644 with its WAL
        made_earlier = sqlite3.connect(older)
        made_earlier.execute("PRAGMA journal_mode=WAL")
        made_earlier.execute("CREATE TABLE t (x)")
        assert _mode(older) == 0o644
        made_earlier.close()
        for path in (tmp_path / "box.db", older):
            database = Database(path)
            database.connect().execute("SELECT count(*) FROM clients").fetchone()
            files = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
            assert {f.name: _mode(f) for f in files} == {f.name: 0o600 for f in files}
    finally:
        os.umask(old_umask)


def test_a_dev_box_keeps_its_database_and_secrets_private(dev_serve: DevServe) -> None:
    state = dev_serve.state
    assert _mode(state / "secrets") == 0o700
    private = sorted(state.glob("box.db*")) + sorted((state / "secrets").iterdir())
    assert len(private) >= 4  # box.db, its WAL and shared memory, the PINs and the dev API key
    assert {p.name: _mode(p) for p in private} == {p.name: 0o600 for p in private}
