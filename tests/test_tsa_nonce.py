"""A TSA answer with another nonce than the request's is TimestampUnavailable (503), not a crash.

pyHanko's handle_tsp_response formats its nonce-mismatch message with ``nonce.hex()`` on an int,
so the mismatch raised AttributeError (a 500); the box compares the nonce itself
(signing.timestamps.token_from_response). The wrong answer here is real: the dev PKI's TSA signs
a token for a request with nonce 1, and a plain HTTP server replays that answer to every request.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import falcon.testing
import pytest
import requests
from asn1crypto import algos, tsp

from firmware.box import Box
from firmware.config import BoxConfig
from firmware.csc.timestamping import TimestampService
from firmware.operations.errors import FAULTS, Face
from firmware.operations.live import SigningService, reassemble
from firmware.signing.timestamps import FallbackTimeStamper, TimestampUnavailable
from firmware.store.db import Database
from firmware.store.ledger import SignatureLedger

DIGEST = hashlib.sha256(b"stamped twice").digest()


def _answer_for_nonce(tsa_url: str, nonce: int) -> bytes:
    request = tsp.TimeStampReq({
        "version": 1,
        "message_imprint": {"hash_algorithm": algos.DigestAlgorithm({"algorithm": "sha256"}), "hashed_message": DIGEST},
        "nonce": nonce,
        "cert_req": True,
    })
    response = requests.post(tsa_url, data=request.dump(), timeout=30,
                             headers={"Content-Type": "application/timestamp-query"})
    response.raise_for_status()
    answer = tsp.TimeStampResp.load(response.content)
    assert answer["status"]["status"].native == "granted"
    return response.content


@pytest.fixture(scope="module")
def replaying_tsa(box_config: BoxConfig, pki_server) -> Iterator[str]:
    """A TSA URL that answers every request with the dev TSA's token for nonce 1."""
    answer = _answer_for_nonce(box_config.tsa_urls[0], 1)

    class Replay(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Type", "application/timestamp-reply")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Replay)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_the_signing_timestamper_refuses_another_nonce(replaying_tsa):
    with pytest.raises(TimestampUnavailable, match="nonce"):
        asyncio.run(FallbackTimeStamper([replaying_tsa]).async_timestamp(DIGEST, "sha256"))


def test_the_csc_timestamp_refuses_another_nonce(replaying_tsa, box_config, clients):
    client = clients.add("tsa-nonce", scopes=("timestamp",))[0]
    service = TimestampService(FallbackTimeStamper([replaying_tsa]), SignatureLedger(Database(box_config.database)))
    with pytest.raises(TimestampUnavailable, match="nonce"):
        service.stamp(client.id, DIGEST, "sha256", nonce=2)
    # the same answer, asked for with the nonce it was made for, passes
    token = service.stamp(client.id, DIGEST, "sha256", nonce=1)
    assert token["content"]["encap_content_info"]["content"].parsed["nonce"].native == 1


@pytest.fixture
def replaying_app(box_config: BoxConfig, replaying_tsa: str) -> Iterator[falcon.testing.TestClient]:
    """The box's own app, in process, with the replaying TSA as its only one."""
    box = Box.open(box_config)
    try:
        service = SigningService(box)
        signing = dataclasses.replace(box_config.signing, tsa_urls=(replaying_tsa,))
        service.install(reassemble(box, dataclasses.replace(box_config, signing=signing)))
        yield falcon.testing.TestClient(service)
    finally:
        box.token.close()


def test_a_wrong_nonce_is_503_timestamp_unavailable_on_both_faces(replaying_app, clients):
    key = clients.add("tsa-nonce-http", scopes=("hash", "timestamp"))[1]
    native = replaying_app.simulate_post("/v1/signatures", headers={"Authorization": f"Bearer {key}"}, json={
        "hash_algorithm": "sha256", "hash": base64.b64encode(DIGEST).decode(), "level": "B-T"})
    assert (native.status_code, native.json["error"]) == (503, "timestamp_unavailable"), native.text
    login = replaying_app.simulate_post("/csc/v2/auth/login", headers={"Authorization": f"Bearer {key}"})
    csc = replaying_app.simulate_post(
        "/csc/v2/signatures/timestamp", headers={"Authorization": f"Bearer {login.json['access_token']}"},
        json={"hash": base64.b64encode(DIGEST).decode(), "hashAlgo": "2.16.840.1.101.3.4.2.1", "nonce": "2"})
    assert (csc.status_code, csc.json["error"]) == FAULTS[TimestampUnavailable].on(Face.CSC), csc.text
    assert "nonce" in csc.json["error_description"]
