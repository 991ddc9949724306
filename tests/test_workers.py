"""`esignbox serve` with several worker processes: shared state, restarts, live changes, clean stops.

The box here is a copy of the test box with ``[api] workers = 2``. Which worker answers is not
chosen by the test (the kernel hands each connection to one of them); it is read from /proc:
a WorkerConnection knows the worker that holds the box's end of it. Nothing in the box helps.
"""

from __future__ import annotations

import base64
import hashlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from asn1crypto import cms
from cryptography import x509

from firmware.config import BoxConfig
from firmware.store.clients import ClientRegistry
from firmware.store.db import Database

from .support import (
    ESIGNBOX,
    BoxProcess,
    WorkerConnection,
    connections_to_each_worker,
    copy_box,
    descendants,
    issue_certificate,
)
from .test_metering_audit import Post, quota_race

SHA256_OID = "2.16.840.1.101.3.4.2.1"
SHA256_RSA = "1.2.840.113549.1.1.11"


def _esignbox(state: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([ESIGNBOX, "--state-dir", str(state), *args], capture_output=True, text=True, timeout=120,
                          cwd=state)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _wait_for(condition, timeout: float = 30, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def two_workers(box_config: BoxConfig, pki_server, tmp_path_factory) -> Iterator[BoxProcess]:
    state = copy_box(box_config, tmp_path_factory.mktemp("two-workers"), {"api": {"workers": 2}})
    process = BoxProcess(state).start()
    _wait_for(lambda: len(process.workers()) == 2, what="two workers")
    yield process
    process.stop()


@pytest.fixture(scope="module")
def registry(two_workers: BoxProcess) -> ClientRegistry:
    return ClientRegistry(Database(two_workers.state_dir / "box.db"))


def _signing_key(registry: ClientRegistry, name: str, **limits) -> tuple[str, str]:
    client, key = registry.add(name, scopes=("hash", "pdf"), **limits)
    return client.id, key


def _sign(conn: WorkerConnection, key: str, document: bytes) -> tuple[int, dict]:
    return conn.call("POST", "/v1/signatures", {"hash_algorithm": "sha256", "hash": _b64(hashlib.sha256(document).digest()),
                                                "level": "B-B", "profile": "CAdES"},
                     {"Authorization": f"Bearer {key}"})


def _signer_serial(signature: str) -> str:
    signer = cms.ContentInfo.load(base64.b64decode(signature))["content"]["signer_infos"][0]
    return format(signer["sid"].chosen["serial_number"].native, "x")


def test_both_workers_serve_and_a_sad_spent_on_one_is_refused_on_the_other(two_workers: BoxProcess, registry):
    held = connections_to_each_worker(two_workers, 1)
    first, second = (conns[0] for conns in held.values())
    assert first.pid != second.pid
    client_id, key = _signing_key(registry, "csc-two-workers")
    basic = "Basic " + _b64(f"{client_id}:{key}".encode())
    status, login = first.call("POST", "/csc/v1/auth/login", None, {"Authorization": basic})
    assert status == 200, login
    bearer = {"Authorization": f"Bearer {login['access_token']}"}
    digest = hashlib.sha256(b"signed once, on whichever worker").digest()

    for spend, retry in ((first, second), (second, first)):
        status, authorized = retry.call("POST", "/csc/v1/credentials/authorize", {
            "credentialID": "box-signing", "numSignatures": 1, "hash": [_b64(digest)]}, bearer)
        assert status == 200, authorized
        sign = {"credentialID": "box-signing", "SAD": authorized["SAD"], "hash": [_b64(digest)],
                "hashAlgo": SHA256_OID, "signAlgo": SHA256_RSA}
        status, signed = spend.call("POST", "/csc/v1/signatures/signHash", sign, bearer)
        assert status == 200 and len(signed["signatures"]) == 1, signed
        status, refused = retry.call("POST", "/csc/v1/signatures/signHash", sign, bearer)
        assert (status, refused["error"]) == (400, "invalid_request") and "SAD" in refused["error_description"]


def test_quotas_are_exact_across_workers(two_workers: BoxProcess, registry):
    """The 150-call race of test_metering_audit, its 8 clients spread 4 and 4 over the two workers."""
    held = connections_to_each_worker(two_workers, 4)
    connections = [conn for conns in held.values() for conn in conns]
    assert len(connections) == 8 and len(held) == 2

    def sender(conn: WorkerConnection):
        def connect(key: str) -> Post:
            return lambda body: conn.call("POST", "/v1/signatures", body, {"Authorization": f"Bearer {key}"})[0]
        return connect

    box_config = BoxConfig.load(two_workers.state_dir)
    quota_race(box_config, registry, "concurrent-150-two-workers", [sender(conn) for conn in connections])


def test_a_worker_killed_under_load_is_restarted_and_every_201_is_in_the_audit_log(two_workers: BoxProcess, registry):
    client_id, key = _signing_key(registry, "under-load")
    signed: list[str] = []  # document hashes of the 201s
    other_statuses: list[int] = []
    broken: list[str] = []  # requests whose connection the kill cut
    stop = threading.Event()

    def load(thread: int) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            digest = hashlib.sha256(b"load %d %d" % (thread, n)).digest()
            try:  # a connection of its own each time: both workers get some
                response = requests.post(two_workers.url + "/v1/signatures", timeout=30,
                                         headers={"Authorization": f"Bearer {key}"},
                                         json={"hash_algorithm": "sha256", "hash": _b64(digest), "level": "B-B"})
            except requests.RequestException as exc:  # the killed worker's connections
                broken.append(type(exc).__name__)
                continue
            if response.status_code == 201:
                signed.append(digest.hex())
            else:
                other_statuses.append(response.status_code)

    before = two_workers.workers()
    threads = [threading.Thread(target=load, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    try:
        _wait_for(lambda: len(signed) >= 20, what="the first signatures")
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        _wait_for(lambda: len(two_workers.workers()) == 2 and victim not in two_workers.workers(), what="the restart")
        (replacement,) = two_workers.workers() - before
        at_restart = len(signed)
        _wait_for(lambda: len(signed) >= at_restart + 20, what="signatures after the restart")
        held = connections_to_each_worker(two_workers, 1)
        assert set(held) == {replacement, *(before - {victim})}  # the new worker serves too
        assert _sign(held[replacement][0], key, b"on the replacement")[0] == 201
    finally:
        stop.set()
        for thread in threads:
            thread.join()

    assert f"worker 1 (pid {victim}) was killed by SIGKILL" in two_workers.log() or \
        f"worker 2 (pid {victim}) was killed by SIGKILL" in two_workers.log()
    logged = {row[0] for row in Database(two_workers.state_dir / "box.db").connect().execute(
        "SELECT document_hash FROM signatures WHERE client_id = ?", (client_id,))}
    assert set(signed) <= logged and len(signed) == len(set(signed))
    assert other_statuses == [], "only the killed worker's connections may fail, and only by being cut"
    verified = _esignbox(two_workers.state_dir, "audit", "verify")
    assert verified.returncode == 0 and "audit chain intact" in verified.stdout, verified.stderr


def test_a_key_rollover_is_used_by_every_workers_next_signature(two_workers: BoxProcess, registry):
    """The command line's activate writes box.toml through the console's own path (configstore);
    each worker's next request, on a connection it already held, signs with the new key."""
    state = two_workers.state_dir
    _, key = _signing_key(registry, "rollover")
    held = connections_to_each_worker(two_workers, 1)
    old_serial = _chain_serial(state)
    for conns in held.values():
        status, body = _sign(conns[0], key, b"before")
        assert status == 201 and _signer_serial(body["signature"]) == old_serial

    for args in (("keygen", "--label", "box-next", "--algorithm", "ec-p256"),
                 ("csr", "--label", "box-next", "--subject", "CN=Next Key,O=Example Ltd,C=BE", "--out", "next.csr")):
        assert _esignbox(state, *args).returncode == 0
    root, leaf = issue_certificate((state / "next.csr").read_bytes(), days=30)
    (state / "next-chain.pem").write_bytes(leaf + root)
    assert _esignbox(state, "import-chain", "next-chain.pem", "--label", "box-next").returncode == 0
    activated = _esignbox(state, "activate", "box-next")
    assert activated.returncode == 0, activated.stderr
    new_serial = _chain_serial(state)
    assert new_serial != old_serial

    for pid, conns in held.items():
        status, body = _sign(conns[0], key, b"after")
        assert status == 201 and _signer_serial(body["signature"]) == new_serial, pid
        assert conns[0].call("GET", "/v1/certificate")[1]["serial"] == new_serial
    assert "box.toml changed: the signing service now uses it (key 'box-next')" in two_workers.log()


def _chain_serial(state: Path) -> str:
    """The serial of the signing certificate box.toml names now."""
    return format(x509.load_pem_x509_certificate(BoxConfig.load(state).chain_file.read_bytes()).serial_number, "x")


def test_one_worker_with_two_token_sessions_signs_concurrently(box_config: BoxConfig, pki_server, tmp_path):
    """The smallest box (and a YubiHSM2's frugal setting): one worker, a pool of two sessions."""
    state = copy_box(box_config, tmp_path, {"api": {"workers": 1}, "token": {"sessions": 2}})
    box = BoxProcess(state).start()
    try:
        _wait_for(lambda: len(box.workers()) == 1, what="one worker")
        _, key = _signing_key(ClientRegistry(Database(state / "box.db")), "one-worker")
        statuses: list[int] = []

        def sign(n: int) -> None:
            for i in range(5):
                statuses.append(_sign(WorkerConnection(box), key, b"one worker %d %d" % (n, i))[0])

        threads = [threading.Thread(target=sign, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert statuses == [201] * 20
        assert "connected with 2 signing session(s)" in box.log()
    finally:
        box.stop()


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill-9"])
def test_stopping_the_parent_leaves_no_process_behind(box_config: BoxConfig, pki_server, tmp_path, how):
    state = copy_box(box_config, tmp_path, {"api": {"workers": 2}})
    box = BoxProcess(state).start()
    _wait_for(lambda: len(box.workers()) == 2, what="two workers")
    assert box.process is not None
    family = descendants(box.process.pid)
    assert box.workers() <= set(family)
    box.process.send_signal(how)
    box.process.wait(timeout=20)
    _wait_for(lambda: not [pid for pid in family if _running(pid)], timeout=15, what=f"the workers to end: {family}")
    if how == signal.SIGTERM:
        assert box.process.returncode == 0


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie has ended; whether it is reaped is up to init)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_a_crash_looping_worker_is_restarted_ever_later_while_the_other_serves_on(box_config: BoxConfig, pki_server,
                                                                                   tmp_path):
    state = copy_box(box_config, tmp_path, {"api": {"workers": 2}})
    box = BoxProcess(state).start()
    try:
        _wait_for(lambda: len(box.workers()) == 2, what="two workers")
        _, key = _signing_key(ClientRegistry(Database(state / "box.db")), "crash-loop")
        good = (state / "box.toml").read_text()
        (state / "box.toml").write_text(good + "\n[nonsense]\n")  # a hand edit no worker can start from
        held = connections_to_each_worker(box, 1)
        for conns in held.values():  # a running worker cannot follow it: it signs on as it was
            assert _sign(conns[0], key, b"signed on")[0] == 201
        assert "could not be reassembled from it" in box.log()

        os.kill(min(held), signal.SIGKILL)
        _wait_for(lambda: "exited with status 1 after" in box.log() and "restarting it in 2 s" in box.log(),
                  what="the second restart's longer delay")
        survivor = max(held)
        assert survivor in box.workers() and _sign(held[survivor][0], key, b"meanwhile")[0] == 201

        (state / "box.toml").write_text(good)
        _wait_for(lambda: _every_worker_answers(box), timeout=60, what="the restarted worker")
    finally:
        box.stop()


def _every_worker_answers(box: BoxProcess) -> bool:
    if len(box.workers()) != 2:
        return False
    try:
        held = connections_to_each_worker(box, 1, timeout=5)
    except AssertionError:  # one is still starting
        return False
    for conns in held.values():
        conns[0].close()
    return True
