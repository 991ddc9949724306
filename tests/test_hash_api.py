"""POST /v1/signatures end to end: real waitress process, SoftHSM2 token, certomancer TSA/OCSP/CRL.

Signatures are checked with tools nobody here wrote: `openssl cms -verify` against the original
file, `openssl ts -verify` for the timestamp, and pyHanko's CMS validator.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import subprocess
from pathlib import Path

import pytest
from asn1crypto import cms, crl, ocsp, x509
from pyhanko.sign.validation.generic_cms import async_validate_detached_cms
from pyhanko_certvalidator import ValidationContext

from firmware.store.db import Database

from .support import Api, BoxProcess

DOCUMENT = b"Invoice 2026-11 for ACME Ltd: 1,234.56 EUR\n" * 50


def _sign(api: Api, level: str, profile: str = "PAdES", algorithm: str = "sha256", document: bytes = DOCUMENT):
    digest = hashlib.new(algorithm, document).digest()
    return api.post(
        "/v1/signatures",
        json={"hash_algorithm": algorithm, "hash": base64.b64encode(digest).decode(), "level": level,
              "profile": profile},
    )


def _signed_count(box_config, client_id: str | None = None) -> int:
    conn = Database(box_config.database).connect()
    if client_id is None:
        return conn.execute("SELECT COUNT(*) FROM signatures").fetchone()[0]
    return conn.execute("SELECT COUNT(*) FROM signatures WHERE client_id = ?", (client_id,)).fetchone()[0]


def _openssl_cms_verify(tmp_path: Path, signature: bytes, roots: Path, document: bytes = DOCUMENT) -> str:
    (tmp_path / "sig.der").write_bytes(signature)
    (tmp_path / "doc.bin").write_bytes(document)
    result = subprocess.run(
        ["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", str(tmp_path / "sig.der"),
         "-content", str(tmp_path / "doc.bin"), "-CAfile", str(roots), "-purpose", "any", "-out", "/dev/null"],
        capture_output=True, text=True,
    )
    return result.stderr + result.stdout


def _timestamp_token(signature: bytes) -> tuple[cms.ContentInfo, bytes]:
    signer_info = cms.ContentInfo.load(signature)["content"]["signer_infos"][0]
    for attr in signer_info["unsigned_attrs"]:
        if attr["type"].native == "signature_time_stamp_token":
            return attr["values"][0], signer_info["signature"].native
    raise AssertionError("no signature timestamp")


def _signed_attr_types(signature: bytes) -> set[str]:
    signer_info = cms.ContentInfo.load(signature)["content"]["signer_infos"][0]
    return {attr["type"].native for attr in signer_info["signed_attrs"]}


@pytest.mark.parametrize("profile", ["PAdES", "CAdES"])
@pytest.mark.parametrize("level", ["B-B", "B-T", "B-LT"])
def test_signature_verifies_with_openssl(api, box_config, tmp_path, level, profile):
    response = _sign(api, level, profile)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["level"] == level and body["profile"] == profile
    signature = base64.b64decode(body["signature"])
    assert "Verification successful" in _openssl_cms_verify(tmp_path, signature, box_config.trust_roots_file)

    attrs = _signed_attr_types(signature)
    assert "signing_certificate_v2" in attrs and "message_digest" in attrs
    assert ("signing_time" in attrs) == (profile == "CAdES")  # PAdES forbids it, CAdES requires it
    has_timestamp = any(
        a["type"].native == "signature_time_stamp_token"
        for a in cms.ContentInfo.load(signature)["content"]["signer_infos"][0]["unsigned_attrs"]
    )
    assert has_timestamp == (level != "B-B")
    assert ("validation_info" in body) == (level == "B-LT")


@pytest.mark.parametrize("algorithm", ["sha384", "sha512"])
def test_longer_hashes(api, box_config, tmp_path, algorithm):
    response = _sign(api, "B-T", "CAdES", algorithm)
    assert response.status_code == 201, response.text
    signature = base64.b64decode(response.json()["signature"])
    assert "Verification successful" in _openssl_cms_verify(tmp_path, signature, box_config.trust_roots_file)
    si = cms.ContentInfo.load(signature)["content"]["signer_infos"][0]
    assert si["digest_algorithm"]["algorithm"].native == algorithm


def test_timestamp_verifies_with_openssl_ts(api, box_config, tmp_path):
    signature = base64.b64decode(_sign(api, "B-T").json()["signature"])
    token, signature_value = _timestamp_token(signature)
    (tmp_path / "tst.der").write_bytes(token.dump())
    (tmp_path / "signature-value.bin").write_bytes(signature_value)
    result = subprocess.run(
        ["openssl", "ts", "-verify", "-in", str(tmp_path / "tst.der"), "-token_in",
         "-data", str(tmp_path / "signature-value.bin"), "-CAfile", str(box_config.trust_roots_file)],
        capture_output=True, text=True,
    )
    assert "Verification: OK" in result.stdout, result.stdout + result.stderr


def test_pyhanko_validates_the_cms_as_intact_valid_trusted(api, box_config):
    signature = base64.b64decode(_sign(api, "B-T", "CAdES").json()["signature"])
    roots = [x509.Certificate.load(der) for der in _pem_certs(box_config.trust_roots_file)]
    signed_data = cms.ContentInfo.load(signature)["content"]

    async def validate():
        context = ValidationContext(trust_roots=roots, allow_fetching=True)
        return await async_validate_detached_cms(DOCUMENT, signed_data, signer_validation_context=context)

    status = asyncio.run(validate())
    assert status.intact and status.valid and status.trusted
    assert status.timestamp_validity is not None and status.timestamp_validity.valid


def _pem_certs(path: Path) -> list[bytes]:
    from asn1crypto import pem

    return [der for _, _, der in pem.unarmor(path.read_bytes(), multiple=True)]


def test_b_lt_returns_what_a_dss_needs(api):
    body = _sign(api, "B-LT").json()
    info = body["validation_info"]
    certs = [x509.Certificate.load(base64.b64decode(c)) for c in info["certificates"]]
    subjects = {c.subject.native["common_name"] for c in certs}
    assert any("E-signature Box" in s for s in subjects)
    assert any(c.extended_key_usage_value and "time_stamping" in c.extended_key_usage_value.native for c in certs)
    responses = [ocsp.OCSPResponse.load(base64.b64decode(o)) for o in info["ocsps"]]
    assert responses and all(r["response_status"].native == "successful" for r in responses)
    statuses = [r.basic_ocsp_response["tbs_response_data"]["responses"][0]["cert_status"].name for r in responses]
    assert statuses == ["good"] * len(statuses)
    assert [crl.CertificateList.load(base64.b64decode(c)) for c in info["crls"]]


def test_cades_b_lt_carries_revocation_values_inside_the_cms(api):
    signed_data = cms.ContentInfo.load(base64.b64decode(_sign(api, "B-LT", "CAdES").json()["signature"]))["content"]
    kinds = {choice.name for choice in signed_data["crls"]}
    assert kinds == {"crl", "other"}  # a CRL and an OCSP response (RFC 5940)


def test_batch_signs_every_hash_and_records_each(api, box_config, clients, api_key):
    client_id = api_key.split("_")[1]
    before = _signed_count(box_config, client_id)
    documents = [f"bill {n}".encode() for n in range(5)]
    response = api.post(
        "/v1/signatures/batch",
        json={"hash_algorithm": "sha256", "level": "B-T",
              "hashes": [base64.b64encode(hashlib.sha256(d).digest()).decode() for d in documents]},
    )
    assert response.status_code == 201, response.text
    signatures = response.json()["signatures"]
    assert len(signatures) == 5
    for document, item in zip(documents, signatures, strict=False):
        signed_data = cms.ContentInfo.load(base64.b64decode(item["signature"]))["content"]
        digests = [
            a["values"][0].native for a in signed_data["signer_infos"][0]["signed_attrs"]
            if a["type"].native == "message_digest"
        ]
        assert digests == [hashlib.sha256(document).digest()]
    assert _signed_count(box_config, client_id) == before + 5


def test_every_signature_is_recorded_with_who_what_and_which_key(api, box_config, api_key):
    client_id = api_key.split("_")[1]
    document = b"record me"
    assert _sign(api, "B-B", document=document).status_code == 201
    row = Database(box_config.database).connect().execute(
        "SELECT * FROM signatures WHERE client_id = ? ORDER BY id DESC LIMIT 1", (client_id,)
    ).fetchone()
    assert row["document_hash"] == hashlib.sha256(document).hexdigest()
    assert (row["kind"], row["level"], row["profile"], row["key_label"]) == ("hash", "B-B", "PAdES", "box-signing")
    assert row["cert_serial"] and row["created_at"]


BAD_REQUESTS = [
    ({"hash_algorithm": "sha256", "hash": base64.b64encode(b"short").decode()}, 400, "invalid_hash"),
    ({"hash_algorithm": "md5", "hash": base64.b64encode(b"\0" * 16).decode()}, 400, "invalid_hash"),
    ({"hash_algorithm": "sha256", "hash": base64.b64encode(b"\0" * 32).decode(), "level": "B-X"}, 400,
     "invalid_request"),
    ({"hash_algorithm": "sha256", "hash": base64.b64encode(b"\0" * 32).decode(), "level": "B-LTA"}, 400,
     "invalid_request"),
    ({"hash_algorithm": "sha256", "hash": base64.b64encode(b"\0" * 32).decode(), "profile": "XAdES"}, 400,
     "invalid_request"),
    ({"hash_algorithm": "sha256", "hash": "not base64!"}, 400, "invalid_request"),
    ({"hash_algorithm": "sha256"}, 400, "invalid_request"),
    ({"hash_algorithm": 256, "hash": base64.b64encode(b"\0" * 32).decode()}, 400, "invalid_request"),
]


@pytest.mark.parametrize("body,status,code", BAD_REQUESTS)
def test_bad_requests_get_a_clear_error_and_sign_nothing(api, box_config, body, status, code):
    before = _signed_count(box_config)
    response = api.post("/v1/signatures", json=body)
    assert response.status_code == status
    assert response.json()["error"] == code and response.json()["message"]
    assert _signed_count(box_config) == before
    assert api.get("/v1/health").status_code == 200


def test_malformed_and_huge_bodies(api, box_config):
    before = _signed_count(box_config)
    response = api.post("/v1/signatures", data=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and response.json()["error"]
    response = api.post("/v1/signatures", data=b"hash=abc", headers={"Content-Type": "text/plain"})
    assert response.status_code == 400
    response = api.post("/v1/signatures", data=b"{" + b" " * (2 * 1024 * 1024) + b"}",
                        headers={"Content-Type": "application/json"})
    assert response.status_code == 413 and response.json()["error"] == "too_large"
    hashes = [base64.b64encode(b"\0" * 32).decode()] * 1001
    response = api.post("/v1/signatures/batch", json={"hash_algorithm": "sha256", "hashes": hashes})
    assert response.status_code == 400
    response = api.post("/v1/signatures/batch", json={"hash_algorithm": "sha256", "hashes": []})
    assert response.status_code == 400
    assert _signed_count(box_config) == before


def test_api_key_is_required_and_checked(box, box_config, clients):
    before = _signed_count(box_config)
    body = {"hash_algorithm": "sha256", "hash": base64.b64encode(b"\0" * 32).decode()}
    assert Api(box.url, None).post("/v1/signatures", json=body).json()["error"] == "missing_api_key"
    response = Api(box.url, "esb_000000000000_wrong").post("/v1/signatures", json=body)
    assert response.status_code == 401 and response.json()["error"] == "invalid_api_key"
    assert "WWW-Authenticate" in response.headers
    client, key = clients.add("to-be-disabled")
    assert Api(box.url, key).post("/v1/signatures", json={**body, "level": "B-B"}).status_code == 201
    clients.disable(client.id)
    assert Api(box.url, key).post("/v1/signatures", json=body).status_code == 401
    assert _signed_count(box_config) == before + 1


def test_public_endpoints(box):
    health = Api(box.url, None).get("/v1/health")
    assert health.status_code == 200 and health.json()["token_present"] is True
    certificate = Api(box.url, None).get("/v1/certificate").json()
    assert certificate["chain_pem"].count("BEGIN CERTIFICATE") == 3
    assert Api(box.url, None).get("/v1/nowhere").json()["error"]


def test_tsa_outage_gives_503_and_no_signature(api, box_config, pki_outage):
    before = _signed_count(box_config)
    response = _sign(api, "B-T")
    assert response.status_code == 503 and response.json()["error"] == "timestamp_unavailable"
    assert _signed_count(box_config) == before
    assert _sign(api, "B-B").status_code == 201  # what needs no TSA still works


def test_revocation_outage_refuses_b_lt_on_a_box_with_an_empty_cache(box_config, pki_server, api_key, tmp_path,
                                                                      session_box_stopped):
    fresh = BoxProcess(box_config.state_dir).start()
    try:
        api = Api(fresh.url, api_key)
        before = _signed_count(box_config)
        pki_server.stop()
        try:
            response = _sign(api, "B-LT")
        finally:
            pki_server.start()
        assert response.status_code == 503
        assert response.json()["error"] in ("timestamp_unavailable", "revocation_unavailable")
        assert _signed_count(box_config) == before
    finally:
        fresh.stop()


def test_secrets_never_reach_the_log(api, box, box_config, api_key):
    _sign(api, "B-B")
    Api(box.url, "esb_000000000000_" + "x" * 40).post("/v1/signatures", json={})
    log = box.log()
    assert box_config.token.read_pin() not in log
    assert api_key not in log and api_key.split("_", 2)[2] not in log


def test_batch_errors_name_the_bad_entry(api):
    good = base64.b64encode(hashlib.sha256(b"fine").digest()).decode()
    short = base64.b64encode(b"\x01" * 20).decode()
    response = api.post("/v1/signatures/batch", json={"hash_algorithm": "sha256", "hashes": [good, good, short]})
    assert response.status_code == 400 and "hashes[2]" in response.json()["message"], response.text
    response = api.post("/v1/signatures/batch", json={"hash_algorithm": "sha256", "hashes": [good, 7]})
    assert response.status_code == 400 and "hashes[1]" in response.json()["message"], response.text
