"""Quotas, scopes, usage counting and the hash-chained audit log, against the real box process."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable

from firmware.store import audit
from firmware.store.db import open_connection

from .support import ESIGNBOX, Api, BoxProcess


def _body(document: bytes, level: str = "B-B") -> dict:
    return {"hash_algorithm": "sha256", "hash": base64.b64encode(hashlib.sha256(document).digest()).decode(),
            "level": level}


def _count(box_config, client_id: str) -> int:
    conn = open_connection(box_config.database)
    try:
        return conn.execute("SELECT COUNT(*) FROM signatures WHERE client_id = ?", (client_id,)).fetchone()[0]
    finally:
        conn.close()


def _esignbox(box_config, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([ESIGNBOX, "--state-dir", str(box_config.state_dir), *args],
                          capture_output=True, text=True, timeout=60)


def test_quota_is_enforced_counted_and_reported(box, box_config, clients):
    client, key = clients.add("quota-3", calls=3)
    api = Api(box.url, key)
    for n in range(3):
        assert api.post("/v1/signatures", json=_body(b"bill %d" % n)).status_code == 201
    refused = api.post("/v1/signatures", json=_body(b"bill 4"))
    assert refused.status_code == 402
    assert refused.json()["error"] == "quota_exhausted" and "0 of 3 calls left" in refused.json()["message"]
    assert _count(box_config, client.id) == 3
    usage = api.get("/v1/usage").json()
    assert usage["client"]["calls_used"] == 3 and usage["client"]["calls_left"] == 0
    assert [(u["endpoint"], u["signatures"]) for u in usage["usage"]] == [("hash", 3)]
    report = _esignbox(box_config, "usage", "--client", client.id, "--json")
    assert report.returncode == 0 and json.loads(report.stdout)[0]["signatures"] == 3


def test_a_batch_larger_than_the_quota_is_refused_whole(box, box_config, clients):
    client, key = clients.add("quota-5", calls=5)
    hashes = [base64.b64encode(hashlib.sha256(b"%d" % n).digest()).decode() for n in range(6)]
    response = Api(box.url, key).post("/v1/signatures/batch", json={"hash_algorithm": "sha256", "hashes": hashes,
                                                                   "level": "B-B"})
    assert response.status_code == 402
    assert _count(box_config, client.id) == 0 and clients.get(client.id).calls_used == 0


def test_rate_limit_per_minute(box, clients):
    _, key = clients.add("rate-2", rate_per_minute=2)
    api = Api(box.url, key)
    assert [api.post("/v1/signatures", json=_body(b"r%d" % n)).status_code for n in range(3)] == [201, 201, 429]
    assert "per minute" in api.post("/v1/signatures", json=_body(b"r")).json()["message"]


def _storm(url: str, key: str, sizes: list[int]) -> list[tuple[int, int]]:
    """Send one request per size at once (size 1: the single endpoint, else a batch); (size, status) each."""
    results: list[tuple[int, int]] = []
    lock = threading.Lock()
    start = threading.Barrier(len(sizes))

    def send(n: int, size: int) -> None:
        api = Api(url, key)
        documents = [b"storm %d %d %f" % (n, i, time.time()) for i in range(size)]
        start.wait(timeout=30)
        if size == 1:
            response = api.post("/v1/signatures", json=_body(documents[0]))
        else:
            response = api.post("/v1/signatures/batch", json={
                "hash_algorithm": "sha256", "level": "B-B",
                "hashes": [base64.b64encode(hashlib.sha256(d).digest()).decode() for d in documents]})
        with lock:
            results.append((size, response.status_code))

    threads = [threading.Thread(target=send, args=(n, size)) for n, size in enumerate(sizes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


def test_rate_per_minute_is_exact_under_concurrency(box, box_config, clients):
    client, key = clients.add("storm-minute", rate_per_minute=5)
    statuses = [status for _, status in _storm(box.url, key, [1] * 60)]
    assert statuses.count(201) == 5 and statuses.count(429) == 55
    assert _count(box_config, client.id) == 5


def test_rate_per_day_is_exact_under_concurrency_with_batches(box, box_config, clients):
    # 20 single requests among the 60: once any of them is refused the day is full, so exactly 10.
    client, key = clients.add("storm-day", rate_per_day=10)
    results = _storm(box.url, key, [1, 2, 3] * 20)
    assert {status for _, status in results} == {201, 429}
    assert sum(size for size, status in results if status == 201) == 10 == _count(box_config, client.id)


def test_scope_limits_what_a_client_may_sign(box, clients):
    _, key = clients.add("pdf-only", scopes=("pdf",))
    response = Api(box.url, key).post("/v1/signatures", json=_body(b"x"))
    assert response.status_code == 403 and response.json()["error"] == "scope_denied"


def test_a_failed_signing_attempt_is_not_charged(box, box_config, clients, pki_outage):
    client, key = clients.add("charged-only-for-signatures", calls=10)
    assert Api(box.url, key).post("/v1/signatures", json=_body(b"t", "B-T")).status_code == 503
    assert clients.get(client.id).calls_used == 0 and _count(box_config, client.id) == 0


Post = Callable[[dict], int]  # sends one signing request body as one client, returns the status


def quota_race(box_config, clients, name: str, senders: list[Callable[[str], Post]]) -> None:
    """A client that bought 150 calls sends 200 requests from 8 threads at once (25 each, thread
    ``n`` through ``senders[n](api_key)``): exactly 150 are signed, charged and logged."""
    client, key = clients.add(name, calls=150)
    statuses: list[int] = []
    lock = threading.Lock()

    def work(worker: int, post: Post) -> None:
        for n in range(25):
            status = post(_body(b"%d-%d" % (worker, n)))
            with lock:
                statuses.append(status)

    threads = [threading.Thread(target=work, args=(w, sender(key))) for w, sender in enumerate(senders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(statuses) == 200
    assert statuses.count(201) == 150 and statuses.count(402) == 50
    assert _count(box_config, client.id) == 150 == clients.get(client.id).calls_used


def test_concurrent_clients_never_overshoot_the_quota(box, box_config, clients):
    def sender(key: str) -> Post:
        api = Api(box.url, key)
        return lambda body: api.post("/v1/signatures", json=body).status_code

    quota_race(box_config, clients, "concurrent-150", [sender] * 8)


def test_rotation_and_disabling(box, clients):
    client, old_key = clients.add("rotating")
    _, new_key = clients.rotate(client.id)
    assert Api(box.url, old_key).post("/v1/signatures", json=_body(b"x")).status_code == 401
    assert Api(box.url, new_key).post("/v1/signatures", json=_body(b"x")).status_code == 201
    clients.disable(client.id)
    assert Api(box.url, new_key).post("/v1/signatures", json=_body(b"x")).status_code == 401
    clients.enable(client.id)
    assert Api(box.url, new_key).post("/v1/signatures", json=_body(b"x")).status_code == 201


def test_refusals_and_client_changes_are_in_the_audit_log(box, box_config, clients):
    client, key = clients.add("audited")
    clients.set_limits(client.id, calls=7)
    Api(box.url, "esb_nobody_nothing").post("/v1/signatures", json=_body(b"x"))
    Api(box.url, key).post("/v1/signatures", json={"hash_algorithm": "sha1", "hash": "AAAA"})
    time.sleep(0.5)  # refusals are written asynchronously
    conn = open_connection(box_config.database)
    entries = list(audit.export(conn))
    mine = [e for e in entries if e["client_id"] == client.id]
    assert [e["action"] for e in mine][:2] == ["client.add", "client.limits"]
    assert mine[1]["details"]["calls"] == 7 and mine[1]["actor"] == "operator"
    refusals = [e["details"] for e in entries if e["action"] == "refusal"]
    assert any(r["status"] == 401 and r["error"] == "invalid_api_key" for r in refusals)
    assert any(r["status"] == 400 and e["client_id"] == client.id
               for e, r in ((e, e["details"]) for e in entries if e["action"] == "refusal"))


def test_audit_chain_verifies_and_detects_edits_and_deletions(box, box_config, api, tmp_path):
    assert api.post("/v1/signatures", json=_body(b"audited document")).status_code == 201
    ok = _esignbox(box_config, "audit", "verify")
    assert ok.returncode == 0 and "intact" in ok.stdout

    def tampered_copy(sql: str):
        state = tmp_path / sql.split()[0].lower()
        state.mkdir()
        shutil.copy(box_config.state_dir / "box.toml", state / "box.toml")
        source = sqlite3.connect(box_config.database)
        target = sqlite3.connect(state / "box.db")
        source.backup(target)
        source.close()
        target.execute(sql)
        target.commit()
        target.close()
        return subprocess.run([ESIGNBOX, "--state-dir", str(state), "audit", "verify"],
                              capture_output=True, text=True, timeout=60)

    edited = tampered_copy(
        "UPDATE audit_log SET details = json_set(details, '$.level', 'B-LT') "
        "WHERE seq = (SELECT MIN(seq) FROM audit_log WHERE action = 'signature')"
    )
    assert edited.returncode != 0 and "altered" in edited.stderr
    deleted = tampered_copy("DELETE FROM audit_log WHERE seq = 3")
    assert deleted.returncode != 0 and "missing" in deleted.stderr


def test_anchor_timestamps_the_chain_head(box, box_config, api, tmp_path):
    assert api.post("/v1/signatures", json=_body(b"before anchor")).status_code == 201
    anchored = _esignbox(box_config, "audit", "anchor")
    assert anchored.returncode == 0 and "anchored at entry" in anchored.stdout
    assert _esignbox(box_config, "audit", "verify").returncode == 0
    entry = [json.loads(line) for line in _esignbox(box_config, "audit", "export").stdout.splitlines()
             if json.loads(line)["action"] == "anchor"][-1]
    (tmp_path / "anchor.tst").write_bytes(base64.b64decode(entry["details"]["timestamp_token"]))
    result = subprocess.run(
        ["openssl", "ts", "-verify", "-digest", entry["details"]["head_hash"], "-in", str(tmp_path / "anchor.tst"),
         "-token_in", "-CAfile", str(box_config.trust_roots_file)], capture_output=True, text=True)
    assert "Verification: OK" in result.stdout, result.stdout + result.stderr


def test_killing_the_server_mid_load_never_leaves_an_unlogged_signature(box_config, pki_server, api_key,
                                                                          session_box_stopped):
    fresh = BoxProcess(box_config.state_dir).start()
    received: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def load(worker: int) -> None:
        api = Api(fresh.url, api_key)
        n = 0
        while not stop.is_set():
            document = b"crash %d %d %f" % (worker, n, time.time())
            try:
                response = api.post("/v1/signatures", json=_body(document))
            except Exception:
                return  # the server is gone
            if response.status_code == 201:
                with lock:
                    received.append(hashlib.sha256(document).hexdigest())
            n += 1

    threads = [threading.Thread(target=load, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    fresh.process.send_signal(signal.SIGKILL)
    fresh.process.wait()
    stop.set()
    for t in threads:
        t.join()
    assert len(received) > 20
    conn = open_connection(box_config.database)
    logged = {row[0] for row in conn.execute("SELECT document_hash FROM signatures")}
    assert set(received) <= logged
    assert audit.verify(conn).ok
