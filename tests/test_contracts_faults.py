"""Envelopes under faults: a TSA outage while a party signs, and the box killed (SIGKILL) in the
middle of a party's signature. Real parts only: the `esignbox serve` process on the session's
SoftHSM2 token, the dev PKI's servers (stopped for the outage), HTTP with requests.

What must hold: no signature lost or made twice, no half-written revision, no party key left for
good on the token, and an envelope whose parties have all signed is completed after the restart.
"""

from __future__ import annotations

import json
import secrets
import signal
import threading
import time
from typing import Any

import requests

from firmware.config import BoxConfig
from firmware.store import audit
from firmware.store.clients import ClientRegistry
from firmware.store.db import Database, open_connection

from .pdfs import make_pdf, reader
from .support import BoxProcess


def _party(name: str, code: str, x: int) -> dict[str, Any]:
    return {"name": name, "email": f"{name.lower()}@example.com", "method": "access_code", "access_code": code,
            "field": {"name": name, "page": 1, "box": [x, 60, x + 200, 130]}}


def _envelope(url: str, key: str) -> str:
    envelope = {"title": "Fault test", "parties": [_party("Alice", "A-1", 50), _party("Bob", "B-1", 300)]}
    created = requests.post(f"{url}/v1/contracts", headers={"Authorization": f"Bearer {key}"}, timeout=60, files={
        "envelope": ("envelope.json", json.dumps(envelope), "application/json"),
        "document": ("c.pdf", make_pdf(), "application/pdf")})
    assert created.status_code == 201, created.text
    contract_id: str = created.json()["id"]
    return contract_id


def _post(url: str, key: str, path: str, **body: Any) -> requests.Response:
    return requests.post(f"{url}{path}", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=60)


def _status(url: str, key: str, contract_id: str) -> dict[str, Any]:
    result: dict[str, Any] = requests.get(f"{url}/v1/contracts/{contract_id}", timeout=30,
                                          headers={"Authorization": f"Bearer {key}"}).json()
    return result


def _validate(url: str, key: str, contract_id: str, party: str, code: str) -> None:
    base = f"/v1/contracts/{contract_id}/parties/{party}"
    assert _post(url, key, base + "/verification").status_code == 200
    confirmed = _post(url, key, base + "/verification/confirm", code=code)
    assert confirmed.status_code == 200, confirmed.text


def test_a_tsa_outage_while_a_party_signs_changes_nothing(box_config: BoxConfig, box, pki_server):
    key = ClientRegistry(Database(box_config.database)).add(f"faults-{secrets.token_hex(4)}",
                                                            scopes=("contracts",))[1]
    contract_id = _envelope(box.url, key)
    _validate(box.url, key, contract_id, "p1", "A-1")
    before = _status(box.url, key, contract_id)
    pki_server.stop()
    try:
        refused = _post(box.url, key, f"/v1/contracts/{contract_id}/parties/p1/sign")
    finally:
        pki_server.start()
    assert refused.status_code == 503 and refused.json()["error"] in ("timestamp_unavailable", "revocation_unavailable")
    after = _status(box.url, key, contract_id)
    assert after["revision"] == before["revision"] and after["parties"][0]["status"] == "validated"
    signed = _post(box.url, key, f"/v1/contracts/{contract_id}/parties/p1/sign")
    assert signed.status_code == 200 and signed.json()["status"] == "signed", signed.text


def test_a_box_killed_while_the_last_party_signs_resumes_without_a_lost_or_doubled_signature(
        box_config: BoxConfig, pki_server, session_box_stopped):
    key = ClientRegistry(Database(box_config.database)).add(f"crash-{secrets.token_hex(4)}",
                                                            scopes=("contracts",))[1]
    box = BoxProcess(box_config.state_dir).start()
    contract_id = _envelope(box.url, key)
    for party, code in (("p1", "A-1"), ("p2", "B-1")):
        _validate(box.url, key, contract_id, party, code)
    assert _post(box.url, key, f"/v1/contracts/{contract_id}/parties/p1/sign").status_code == 200

    outcome: list[int] = []

    def sign_last() -> None:
        try:
            outcome.append(_post(box.url, key, f"/v1/contracts/{contract_id}/parties/p2/sign").status_code)
        except requests.RequestException:
            outcome.append(0)  # the box died under the request

    signing = threading.Thread(target=sign_last)
    signing.start()
    time.sleep(0.5)  # the token is at work: key generation, certificate, signature, timestamp
    box.process.send_signal(signal.SIGKILL)
    box.process.wait()
    signing.join()

    box = BoxProcess(box_config.state_dir).start()  # the restart sweeps: completes what was signed
    try:
        deadline = time.monotonic() + 60
        status = _status(box.url, key, contract_id)
        if status["parties"][1]["status"] == "validated":  # the kill came before the commit: sign again
            assert _post(box.url, key, f"/v1/contracts/{contract_id}/parties/p2/sign").status_code == 200
        while status["status"] != "completed" and time.monotonic() < deadline:
            time.sleep(0.5)
            status = _status(box.url, key, contract_id)
        assert status["status"] == "completed", (outcome, status)
        final = requests.get(f"{box.url}/v1/contracts/{contract_id}/document", timeout=30,
                             headers={"Authorization": f"Bearer {key}"}).content
    finally:
        box.stop()

    fields = sorted(sig.field_name for sig in reader(final).embedded_regular_signatures)
    assert fields == ["Alice", "Bob", "Organisation"]  # one signature per party, none twice
    conn = open_connection(box_config.database)
    signed = conn.execute("SELECT COUNT(*) FROM contract_events WHERE contract_id = ? AND action = 'signed'",
                          (contract_id,)).fetchone()[0]
    revisions = [row[0] for row in conn.execute(
        "SELECT revision FROM contract_documents WHERE contract_id = ? ORDER BY revision", (contract_id,))]
    assert signed == 2 and revisions == list(range(len(revisions)))
    assert audit.verify(conn).ok
