"""The CSC remote-signing API (v1.0.4 and v2.0) end to end, against the real `box` server.

The main proof is pyHanko's own, unmodified CSCSigner signing a PDF through the box at PAdES B-LT;
the result is checked by `pdfsig` and by pyHanko's validator using only the embedded LTV data.
The rest pins down the access tokens and the SADs (single use, bound to hashes, client and
credential), the algorithms, signDoc and timestamp, each checked with OpenSSL or cryptography.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import io
import json
import os
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor

import aiohttp
import pytest
import requests
from asn1crypto import algos, cms, pem, tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, utils
from cryptography.x509.oid import NameOID
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.fields import SigSeedSubFilter
from pyhanko.sign.signers import PdfSignatureMetadata, PdfSigner
from pyhanko.sign.signers.csc_signer import (
    CSCAuthorizationInfo,
    CSCAuthorizationManager,
    CSCServiceSessionInfo,
    CSCSigner,
    fetch_certs_in_csc_credential,
)
from pyhanko.sign.timestamps import HTTPTimeStamper
from pyhanko.sign.validation import async_validate_pdf_signature
from pyhanko.sign.validation.dss import DocumentSecurityStore
from pyhanko_certvalidator import ValidationContext

from firmware.errors import InvalidRequest
from firmware.signing.raw_signing import RawSigningService
from firmware.signing.token_signer import TokenSigner
from firmware.store.clients import ClientRegistry
from firmware.store.csc_grants import AccessTokens, InvalidAccessToken, SadRefused, SadStore
from firmware.store.db import Database
from firmware.store.ledger import SignatureLedger
from firmware.store.metering import SCOPES
from hsm import KeyAlgorithm, Token

from .pdfs import make_pdf

SHA256_OID = "2.16.840.1.101.3.4.2.1"
SHA256_RSA = "1.2.840.113549.1.1.11"
RSA_ENCRYPTION = "1.2.840.113549.1.1.1"
RSASSA_PSS = "1.2.840.113549.1.1.10"
ECDSA_SHA256 = "1.2.840.10045.4.3.2"


class Csc:
    """One client's CSC session: logs in with its API key, then sends the access token."""

    def __init__(self, base_url: str, client_id: str, api_key: str) -> None:
        self.base_url, self.client_id = base_url, client_id
        response = requests.post(f"{base_url}/csc/v1/auth/login", auth=(client_id, api_key), timeout=30)
        assert response.status_code == 200, response.text
        self.token = response.json()["access_token"]

    def post(self, version: str, method: str, body: dict | None = None, token: str | None = None) -> requests.Response:
        headers = {"Authorization": f"Bearer {token or self.token}"}
        return requests.post(f"{self.base_url}/csc/{version}/{method}", json=body or {}, headers=headers, timeout=60)

    def authorize(self, version: str, credential: str, digests: list[bytes], **extra) -> str:
        field = "hash" if version == "v1" else "hashes"
        response = self.post(version, "credentials/authorize", {
            "credentialID": credential, "numSignatures": len(digests), field: [_b64(d) for d in digests], **extra})
        assert response.status_code == 200, response.text
        assert 0 < response.json()["expiresIn"] <= 300
        return response.json()["SAD"]

    def sign_hash_v1(self, credential: str, sad: str, digests: list[bytes]) -> requests.Response:
        return self.post("v1", "signatures/signHash", {
            "credentialID": credential, "SAD": sad, "hash": [_b64(d) for d in digests],
            "hashAlgo": SHA256_OID, "signAlgo": SHA256_RSA})


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _client_id(api_key: str) -> str:
    return api_key.split("_")[1]


def _roots(box_config) -> list[asn1_x509.Certificate]:
    return [asn1_x509.Certificate.load(der) for _, _, der in
            pem.unarmor(box_config.trust_roots_file.read_bytes(), multiple=True)]


def _raw_count(box_config, client_id: str) -> int:
    return Database(box_config.database).connect().execute(
        "SELECT COUNT(*) FROM signatures WHERE client_id = ? AND kind = 'raw'", (client_id,)).fetchone()[0]


def _assert_csc_error(response: requests.Response, status: int, error: str | None = None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "error_description"} and body["error_description"], body
    if error is not None:
        assert body["error"] == error, body
    return body


@pytest.fixture(scope="module")
def csc_key(clients) -> str:
    return clients.add(f"csc-{os.getpid()}", scopes=SCOPES)[1]


@pytest.fixture(scope="module")
def csc(box, csc_key) -> Csc:
    return Csc(box.url, _client_id(csc_key), csc_key)


@pytest.fixture(scope="module")
def other(box, clients) -> Csc:
    key = clients.add(f"csc-other-{os.getpid()}")[1]
    return Csc(box.url, _client_id(key), key)


@pytest.fixture(scope="module")
def public_key(box_config):
    pem_chain = box_config.chain_file.read_bytes()
    return x509.load_pem_x509_certificates(pem_chain)[0].public_key()


# -- pyHanko's CSCSigner, unmodified, through the box -------------------------------------------

class _BoxAuthorization(CSCAuthorizationManager):
    """Asks the box's credentials/authorize for a SAD bound to exactly the hashes pyHanko signs."""

    def __init__(self, session_info, credential_info, session: aiohttp.ClientSession) -> None:
        super().__init__(session_info, credential_info)
        self._session = session

    async def authorize_signature(self, hash_b64s: list[str]) -> CSCAuthorizationInfo:
        async with self._session.post(
            self.csc_session_info.endpoint_url("credentials/authorize"), headers=self.auth_headers,
            json=self.format_csc_auth_request(hash_b64s=hash_b64s), raise_for_status=True,
        ) as response:
            return self.parse_csc_auth_response(await response.json())


async def _sign_pdf_through_csc(box_url: str, token: str, box_config, pdf: bytes, prefer_pss: bool = False) -> bytes:
    async with aiohttp.ClientSession() as session:
        session_info = CSCServiceSessionInfo(box_url, box_config.key_label, oauth_token=token)
        credential_info = await fetch_certs_in_csc_credential(session, session_info)
        signer = CSCSigner(session, _BoxAuthorization(session_info, credential_info, session), prefer_pss=prefer_pss)
        metadata = PdfSignatureMetadata(
            field_name="Signature1", md_algorithm="sha256", subfilter=SigSeedSubFilter.PADES,
            embed_validation_info=True,
            validation_context=ValidationContext(trust_roots=_roots(box_config), allow_fetching=True),
        )
        pdf_signer = PdfSigner(metadata, signer=signer, timestamper=HTTPTimeStamper(box_config.tsa_urls[0]))
        out = await pdf_signer.async_sign_pdf(IncrementalPdfFileWriter(io.BytesIO(pdf)), output=io.BytesIO())
        return out.getvalue()


async def _validate_offline(signed: bytes, box_config):
    """Valid with the DSS's certificates, OCSP responses and CRLs alone: no fetching allowed."""
    reader = PdfFileReader(io.BytesIO(signed))
    context = DocumentSecurityStore.read_dss(reader).as_validation_context(
        {"trust_roots": _roots(box_config), "allow_fetching": False, "revocation_mode": "hard-fail"})
    return await async_validate_pdf_signature(reader.embedded_signatures[0], signer_validation_context=context)


@pytest.mark.parametrize("prefer_pss", [False, True], ids=["pkcs1v15", "pss"])
def test_pyhanko_csc_signer_signs_a_pades_b_lt_pdf_through_the_box(csc, box, box_config, tmp_path, prefer_pss):
    before = _raw_count(box_config, csc.client_id)
    signed = asyncio.run(_sign_pdf_through_csc(box.url, csc.token, box_config, make_pdf(pages=2), prefer_pss))
    (tmp_path / "signed.pdf").write_bytes(signed)

    pdfsig = subprocess.run(["pdfsig", str(tmp_path / "signed.pdf")], capture_output=True, text=True)
    assert "Signature is Valid." in pdfsig.stdout, pdfsig.stdout + pdfsig.stderr

    status = asyncio.run(_validate_offline(signed, box_config))
    assert status.intact and status.valid and status.trusted, status.pretty_print_details()
    assert status.timestamp_validity is not None and status.timestamp_validity.valid
    assert status.signing_cert.dump() == x509.load_pem_x509_certificates(
        box_config.chain_file.read_bytes())[0].public_bytes(serialization.Encoding.DER)
    assert _raw_count(box_config, csc.client_id) == before + 1  # the one signHash pyHanko made


# -- access tokens ---------------------------------------------------------------------------------

def test_info_is_public_and_lists_what_each_version_serves(box):
    v1 = requests.post(f"{box.url}/csc/v1/info", json={}, timeout=10).json()
    v2 = requests.get(f"{box.url}/csc/v2/info", timeout=10).json()
    assert v1["specs"] == "1.0.4.0" and v2["specs"].startswith("2.")
    assert "signatures/signHash" in v1["methods"] and "signatures/signDoc" not in v1["methods"]
    assert {"signatures/signDoc", "signatures/timestamp", "credentials/authorize"} <= set(v2["methods"])
    assert v1["oauth2"] == f"{box.url}/csc/v1" and "oauth2client" in v1["authType"]
    assert SHA256_RSA in v2["signAlgorithms"]["algos"] and "Ades-B-LT" in v2["conformance_levels"]


def test_login_oauth2_and_revoke(box, csc_key):
    client_id = _client_id(csc_key)
    base = f"{box.url}/csc/v2"
    by_bearer = requests.post(f"{base}/auth/login", headers={"Authorization": f"Bearer {csc_key}"}, timeout=10)
    assert by_bearer.status_code == 200 and by_bearer.json()["expires_in"] == 3600
    form = requests.post(f"{base}/oauth2/token", timeout=10, data={
        "grant_type": "client_credentials", "client_id": client_id, "client_secret": csc_key})
    basic = requests.post(f"{box.url}/csc/v1/oauth2/token", data={"grant_type": "client_credentials"},
                          auth=(client_id, csc_key), timeout=10)
    for response in (form, basic):
        assert response.status_code == 200, response.text
        assert response.json()["token_type"] == "Bearer" and response.json()["expires_in"] == 3600
        assert response.headers["Cache-Control"] == "no-store"
        token = response.json()["access_token"]
        info = requests.post(f"{base}/credentials/list", json={}, headers={"Authorization": f"Bearer {token}"},
                             timeout=10)
        assert info.status_code == 200 and info.json()["credentialIDs"] == ["box-signing"]

    _assert_csc_error(requests.post(f"{base}/oauth2/token", timeout=10, data={
        "grant_type": "client_credentials", "client_id": client_id, "client_secret": csc_key + "x"}),
        401, "invalid_client")
    _assert_csc_error(requests.post(f"{base}/oauth2/token", timeout=10, data={
        "grant_type": "password", "client_id": client_id, "client_secret": csc_key}), 400, "unsupported_grant_type")
    _assert_csc_error(requests.post(f"{base}/auth/login", auth=("000000000000", csc_key), timeout=10),
                      400, "authentication_error")  # the key is another client's

    token = by_bearer.json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    revoked = requests.post(f"{base}/auth/revoke", json={"token": token}, headers=headers, timeout=10)
    assert revoked.status_code == 204
    _assert_csc_error(requests.post(f"{base}/credentials/list", json={}, headers=headers, timeout=10),
                      401, "invalid_token")


@pytest.mark.parametrize("authorization", [None, "Bearer nonsense", "Basic Zm9vOmJhcg==", "api-key"])
def test_bad_or_missing_access_token_is_a_401_in_csc_format(box, csc_key, box_config, authorization):
    headers = {} if authorization is None else {
        "Authorization": f"Bearer {csc_key}" if authorization == "api-key" else authorization}
    before = _raw_count(box_config, _client_id(csc_key))
    response = requests.post(f"{box.url}/csc/v1/signatures/signHash", headers=headers, timeout=10, json={
        "credentialID": "box-signing", "SAD": "x", "hash": [_b64(bytes(32))], "signAlgo": SHA256_RSA})
    _assert_csc_error(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert _raw_count(box_config, _client_id(csc_key)) == before


@pytest.fixture
def grants_db(tmp_path) -> Database:
    return Database(tmp_path / "grants.db")


def test_access_tokens_expire_and_are_bound_to_their_client(grants_db):
    now = [1000.0]
    registry = ClientRegistry(grants_db)
    client_a, client_b = registry.add("a")[0], registry.add("b")[0]
    tokens = AccessTokens(grants_db, ttl_s=60, clock=lambda: now[0])
    token, ttl = tokens.issue(client_a.id, tokens.checkpoint())
    assert ttl == 60 and tokens.client(token).id == client_a.id
    tokens.revoke(token, client_b.id)  # someone else's revocation does nothing
    assert tokens.client(token).id == client_a.id
    now[0] += 61
    with pytest.raises(InvalidAccessToken) as info:
        tokens.client(token)
    assert info.value.expired
    tokens.issue(client_a.id, tokens.checkpoint())  # a login clears expired tokens out
    assert grants_db.connect().execute("SELECT COUNT(*) FROM csc_tokens").fetchone()[0] == 1


def test_a_token_is_dead_if_the_key_rotates_while_the_login_checks_it(grants_db):
    registry = ClientRegistry(grants_db)
    client = registry.add("racer")[0]
    tokens = AccessTokens(grants_db)
    since = tokens.checkpoint()  # the login starts, checks the old key ...
    registry.rotate(client.id)  # ... the operator rotates ...
    token, _ = tokens.issue(client.id, since)  # ... and the token is issued under the new key
    with pytest.raises(InvalidAccessToken, match="API key changed"):
        tokens.client(token)


def test_sad_expires_names_its_credential_and_is_stored_hashed(grants_db):
    now = [1000.0]
    client = ClientRegistry(grants_db).add("a")[0]
    tokens = AccessTokens(grants_db, clock=lambda: now[0])
    token = tokens.issue(client.id, tokens.checkpoint())[0]
    store = SadStore(grants_db, ttl_s=300, clock=lambda: now[0])
    digest = bytes(32)
    sad, ttl = store.issue(token, "box-signing", [digest], "sha256")
    assert ttl == 300
    stored = grants_db.connect().execute("SELECT sad_hash FROM csc_sads").fetchone()[0]
    assert stored == hashlib.sha256(sad.encode()).digest()
    now[0] += 301
    with pytest.raises(SadRefused, match="expired"):
        store.consume(sad, token, "box-signing", [("sha256", digest)])
    sad, _ = store.issue(token, "box-signing", [digest], "sha256")
    with pytest.raises(SadRefused, match="another credential"):
        store.consume(sad, token, "other-key", [("sha256", digest)])
    sad, _ = store.issue(token, "box-signing", [digest], "sha256")
    with pytest.raises(SadRefused, match="sha256 hashes"):
        store.consume(sad, token, "box-signing", [("sha512", digest)])
    sad, _ = store.issue(token, "box-signing", [digest], "sha256")
    tokens.revoke(token, client.id)  # the SADs go with their token
    assert grants_db.connect().execute("SELECT COUNT(*) FROM csc_sads").fetchone()[0] == 0


def test_a_sad_is_spent_once_by_racing_processes(grants_db):
    """Eight connections of their own (as separate serving processes have) spend one SAD at once."""
    client = ClientRegistry(grants_db).add("a")[0]
    tokens = AccessTokens(grants_db)
    token = tokens.issue(client.id, tokens.checkpoint())[0]
    digest = bytes(32)
    sad, _ = SadStore(grants_db).issue(token, "box-signing", [digest], "sha256")
    stores = [SadStore(Database(grants_db.path)) for _ in range(8)]
    start = threading.Barrier(len(stores))

    def spend(store: SadStore) -> bool:
        start.wait(timeout=10)
        try:
            store.consume(sad, token, "box-signing", [("sha256", digest)])
        except SadRefused:
            return False
        return True

    with ThreadPoolExecutor(len(stores)) as pool:
        outcomes = list(pool.map(spend, stores, timeout=30))
    assert outcomes.count(True) == 1


def _sign_v1(session: Csc, digest: bytes) -> requests.Response:
    return session.sign_hash_v1("box-signing", session.authorize("v1", "box-signing", [digest]), [digest])


@pytest.mark.parametrize("change", ["rotate", "disable"])
def test_rotating_or_disabling_a_client_ends_its_access_tokens_and_sads(box, clients, box_config, change):
    client, key = clients.add(f"csc-{change}-{os.getpid()}")
    session = Csc(box.url, client.id, key)
    digest = hashlib.sha256(f"before {change}".encode()).digest()
    sad = session.authorize("v1", "box-signing", [digest])
    assert session.post("v1", "credentials/list").status_code == 200
    before = _raw_count(box_config, client.id)

    if change == "rotate":
        new_key = clients.rotate(client.id)[1]
    else:
        clients.disable(client.id)
    _assert_csc_error(session.post("v1", "credentials/list"), 401, "invalid_token")
    _assert_csc_error(session.post("v2", "credentials/authorize", {
        "credentialID": "box-signing", "numSignatures": 1, "hashes": [_b64(digest)],
        "hashAlgorithmOID": SHA256_OID}), 401, "invalid_token")
    _assert_csc_error(session.sign_hash_v1("box-signing", sad, [digest]), 401, "invalid_token")

    if change == "rotate":  # the new key logs in; the SAD obtained with the old one stays dead
        fresh = Csc(box.url, client.id, new_key)
        _assert_csc_error(fresh.sign_hash_v1("box-signing", sad, [digest]), 400, "invalid_request")
        assert _sign_v1(fresh, digest).status_code == 200
    else:  # enabling the client again does not bring tokens issued before the disable back
        clients.enable(client.id)
        _assert_csc_error(session.post("v1", "credentials/list"), 401, "invalid_token")
        _assert_csc_error(session.sign_hash_v1("box-signing", sad, [digest]), 401, "invalid_token")
        fresh = Csc(box.url, client.id, key)
        _assert_csc_error(fresh.sign_hash_v1("box-signing", sad, [digest]), 400, "invalid_request")
        assert _sign_v1(fresh, digest).status_code == 200
    assert _raw_count(box_config, client.id) == before + 1


# -- SADs and signHash ---------------------------------------------------------------------------------

def test_sign_hash_batch_signs_in_order_and_records_each(csc, box_config, public_key):
    documents = [f"bill {n}".encode() for n in range(3)]
    digests = [hashlib.sha256(d).digest() for d in documents]
    before = _raw_count(box_config, csc.client_id)
    sad = csc.authorize("v1", "box-signing", digests)
    response = csc.sign_hash_v1("box-signing", sad, digests)
    assert response.status_code == 200, response.text
    signatures = [base64.b64decode(s) for s in response.json()["signatures"]]
    for document, signature in zip(documents, signatures, strict=True):
        public_key.verify(signature, document, padding.PKCS1v15(), hashes.SHA256())
    assert _raw_count(box_config, csc.client_id) == before + 3
    row = Database(box_config.database).connect().execute(
        "SELECT * FROM signatures WHERE client_id = ? ORDER BY id DESC LIMIT 1", (csc.client_id,)).fetchone()
    assert (row["kind"], row["hash_algorithm"], row["document_hash"]) == ("raw", "sha256", digests[-1].hex())


def test_sad_is_single_use_bound_to_its_hashes_and_its_client(csc, other, box_config):
    digest, stranger = hashlib.sha256(b"contract").digest(), hashlib.sha256(b"other").digest()
    before = _raw_count(box_config, csc.client_id)

    sad = csc.authorize("v1", "box-signing", [digest])
    _assert_csc_error(other.sign_hash_v1("box-signing", sad, [digest]), 400, "invalid_request")
    assert csc.sign_hash_v1("box-signing", sad, [digest]).status_code == 200  # other's try did not spend it
    body = _assert_csc_error(csc.sign_hash_v1("box-signing", sad, [digest]), 400, "invalid_request")
    assert "SAD" in body["error_description"]  # reused

    sad = csc.authorize("v1", "box-signing", [digest])
    body = _assert_csc_error(csc.sign_hash_v1("box-signing", sad, [stranger]), 400, "invalid_request")
    assert "not authorized" in body["error_description"]
    _assert_csc_error(csc.sign_hash_v1("box-signing", sad, [digest]), 400)  # the probe spent it

    sad = csc.authorize("v1", "box-signing", [digest])
    _assert_csc_error(csc.sign_hash_v1("box-signing", sad, [digest, digest]), 400)  # one hash, not two
    _assert_csc_error(csc.post("v1", "credentials/authorize", {
        "credentialID": "box-signing", "numSignatures": 2, "hash": [_b64(digest)]}), 400)
    _assert_csc_error(csc.post("v1", "credentials/authorize", {
        "credentialID": "someone-else", "numSignatures": 1, "hash": [_b64(digest)]}), 400)
    assert _raw_count(box_config, csc.client_id) == before + 1


def test_a_client_without_the_hash_scope_gets_no_sad(box, clients):
    key = clients.add(f"csc-pdf-only-{os.getpid()}", scopes=("pdf",))[1]
    pdf_only = Csc(box.url, _client_id(key), key)
    response = pdf_only.post("v1", "credentials/authorize", {
        "credentialID": "box-signing", "numSignatures": 1, "hash": [_b64(bytes(32))]})
    _assert_csc_error(response, 403, "scope_denied")


def test_v2_sign_hash_with_pss_and_clear_errors_for_algorithms_the_key_cannot_do(csc, public_key):
    digest = hashlib.sha256(b"v2 document").digest()
    pss = algos.RSASSAPSSParams({
        "hash_algorithm": {"algorithm": "sha256"},
        "mask_gen_algorithm": {"algorithm": "mgf1", "parameters": {"algorithm": "sha256"}},
        "salt_length": 32,
    })

    def sign(**fields) -> requests.Response:
        sad = csc.authorize("v2", "box-signing", [digest], hashAlgorithmOID=SHA256_OID)
        return csc.post("v2", "signatures/signHash",
                        {"credentialID": "box-signing", "SAD": sad, "hashes": [_b64(digest)], **fields})

    response = sign(signAlgo=RSASSA_PSS, signAlgoParams=_b64(pss.dump()))
    assert response.status_code == 200, response.text
    public_key.verify(base64.b64decode(response.json()["signatures"][0]), b"v2 document",
                      padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256())
    response = sign(signAlgo=RSA_ENCRYPTION, hashAlgorithmOID=SHA256_OID)
    assert response.status_code == 200, response.text
    public_key.verify(base64.b64decode(response.json()["signatures"][0]), b"v2 document",
                      padding.PKCS1v15(), hashes.SHA256())

    # pyHanko's CSCSigner asks for the largest salt the key allows: 256 - 32 - 2 for RSA-2048/SHA-256.
    largest = algos.RSASSAPSSParams({**pss.native, "salt_length": 222})
    response = sign(signAlgo=RSASSA_PSS, signAlgoParams=_b64(largest.dump()))
    assert response.status_code == 200, response.text
    public_key.verify(base64.b64decode(response.json()["signatures"][0]), b"v2 document",
                      padding.PSS(padding.MGF1(hashes.SHA256()), 222), hashes.SHA256())

    wrong_salt = algos.RSASSAPSSParams({**pss.native, "salt_length": 223})
    for fields, needle in [
        ({"signAlgo": ECDSA_SHA256}, "RSA key"),
        ({"signAlgo": RSA_ENCRYPTION}, "needs the hash algorithm"),
        ({"signAlgo": RSASSA_PSS}, "signAlgoParams"),
        ({"signAlgo": RSASSA_PSS, "signAlgoParams": _b64(wrong_salt.dump())}, "salt length"),
        ({"signAlgo": "1.2.840.113549.1.1.12", "hashAlgorithmOID": SHA256_OID}, "contradicts"),
        ({"signAlgo": SHA256_RSA, "operationMode": "A"}, "operationMode"),
    ]:
        assert needle in _assert_csc_error(sign(**fields), 400, "invalid_request")["error_description"]


def test_credentials_info_follows_the_certificates_parameter(csc, box_config):
    chain = csc.post("v1", "credentials/info", {"credentialID": "box-signing", "certificates": "chain"}).json()
    assert chain["authMode"] == "explicit" and chain["SCAL"] == "2" and chain["multisign"] >= 1
    assert chain["key"]["status"] == "enabled" and chain["key"]["len"] == 2048
    assert len(chain["cert"]["certificates"]) == 3 and chain["cert"]["status"] == "valid"
    v2 = csc.post("v2", "credentials/info", {"credentialID": "box-signing", "certInfo": True}).json()
    assert v2["auth"]["mode"] == "explicit" and len(v2["cert"]["certificates"]) == 1
    assert v2["cert"]["subjectDN"] and v2["cert"]["validTo"].endswith("Z")
    none = csc.post("v2", "credentials/info", {"credentialID": "box-signing", "certificates": "none"}).json()
    assert "certificates" not in none["cert"]
    _assert_csc_error(csc.post("v2", "credentials/info", {"credentialID": "box-signing", "certificates": "all"}),
                      400)


# -- v2 signDoc and timestamp -------------------------------------------------------------------------

DOCUMENT = b"Purchase order 2026-117 for ACME Ltd\n" * 40


@pytest.mark.parametrize("signature_format", ["C", "P"])
@pytest.mark.parametrize("level", ["AdES-B-B", "AdES-B-T", "AdES-B-LT"])
def test_v2_sign_doc_makes_a_cms_openssl_verifies(csc, box_config, tmp_path, level, signature_format):
    digest = hashlib.sha256(DOCUMENT).digest()
    sad = csc.authorize("v2", "box-signing", [digest], hashAlgorithmOID=SHA256_OID)
    response = csc.post("v2", "signatures/signDoc", {
        "credentialID": "box-signing", "SAD": sad,
        "documentDigests": [{"hashes": [_b64(digest)], "hashAlgorithmOID": SHA256_OID,
                             "signature_format": signature_format, "conformance_level": level,
                             "signAlgo": SHA256_RSA}],
    })
    assert response.status_code == 200, response.text
    body = response.json()
    [signature] = [base64.b64decode(s) for s in body["SignatureObject"]]
    (tmp_path / "sig.der").write_bytes(signature)
    (tmp_path / "doc.bin").write_bytes(DOCUMENT)
    result = subprocess.run(
        ["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", str(tmp_path / "sig.der"),
         "-content", str(tmp_path / "doc.bin"), "-CAfile", str(box_config.trust_roots_file), "-purpose", "any",
         "-out", "/dev/null"], capture_output=True, text=True)
    assert "Verification successful" in result.stderr, result.stderr
    unsigned = cms.ContentInfo.load(signature)["content"]["signer_infos"][0]["unsigned_attrs"]
    assert any(a["type"].native == "signature_time_stamp_token" for a in unsigned) == (level != "AdES-B-B")
    assert ("validationInfo" in body) == (level == "AdES-B-LT")
    if level == "AdES-B-LT":
        assert body["validationInfo"]["ocsp"] and body["validationInfo"]["crl"]
        assert len(body["validationInfo"]["certificates"]) >= 3


def test_v2_sign_doc_refuses_what_it_cannot_make_without_spending_the_sad(csc):
    digest = hashlib.sha256(DOCUMENT).digest()
    sad = csc.authorize("v2", "box-signing", [digest], hashAlgorithmOID=SHA256_OID)
    entry = {"hashes": [_b64(digest)], "hashAlgorithmOID": SHA256_OID, "signature_format": "C",
             "signAlgo": SHA256_RSA}
    for bad in [{"signAlgo": RSASSA_PSS}, {"signature_format": "X"}, {"conformance_level": "AdES-B-LTA"},
                {"signed_envelope_property": "Attached"}]:
        response = csc.post("v2", "signatures/signDoc",
                            {"credentialID": "box-signing", "SAD": sad, "documentDigests": [{**entry, **bad}]})
        _assert_csc_error(response, 400, "invalid_request")
    response = csc.post("v2", "signatures/signDoc", {"credentialID": "box-signing", "SAD": sad,
                                                    "documentDigests": [entry]})
    assert response.status_code == 200, response.text


def test_v2_timestamp_verifies_with_openssl_ts(csc, box_config, tmp_path):
    digest = hashlib.sha256(DOCUMENT).digest()
    response = csc.post("v2", "signatures/timestamp", {"hash": _b64(digest), "hashAlgo": SHA256_OID, "nonce": "c0ffee"})
    assert response.status_code == 200, response.text
    token = base64.b64decode(response.json()["timestamp"])
    info = cms.ContentInfo.load(token)["content"]["encap_content_info"]["content"].parsed
    assert info["nonce"].native == 0xC0FFEE and isinstance(info, tsp.TSTInfo)
    (tmp_path / "tst.der").write_bytes(token)
    result = subprocess.run(
        ["openssl", "ts", "-verify", "-in", str(tmp_path / "tst.der"), "-token_in", "-digest", digest.hex(),
         "-CAfile", str(box_config.trust_roots_file)], capture_output=True, text=True)
    assert "Verification: OK" in result.stdout, result.stdout + result.stderr
    _assert_csc_error(csc.post("v1", "signatures/timestamp", {"hash": _b64(b"short"), "hashAlgo": SHA256_OID}), 400)



def _timestamp(session: Csc, document: bytes) -> requests.Response:
    return session.post("v2", "signatures/timestamp",
                        {"hash": _b64(hashlib.sha256(document).digest()), "hashAlgo": SHA256_OID})


def _last_refusal(box_config, client_id: str) -> dict:
    row = Database(box_config.database).connect().execute(
        "SELECT details FROM audit_log WHERE action = 'refusal' AND client_id = ? ORDER BY seq DESC LIMIT 1",
        (client_id,)).fetchone()
    return json.loads(row["details"])


def test_timestamps_need_the_timestamp_scope_and_are_charged_and_reported(box, clients, box_config):
    client, key = clients.add(f"csc-tsa-{os.getpid()}")
    assert client.scopes == ("hash", "pdf")  # not granted by default
    session = Csc(box.url, client.id, key)
    _assert_csc_error(_timestamp(session, b"free ride"), 403, "scope_denied")
    refusal = _last_refusal(box_config, client.id)
    assert (refusal["path"], refusal["status"]) == ("/csc/v2/signatures/timestamp", 403)

    clients.set_scopes(client.id, ("hash", "timestamp"))
    clients.set_limits(client.id, calls=2)
    for n in range(2):
        assert _timestamp(session, f"stamp {n}".encode()).status_code == 200
    body = _assert_csc_error(_timestamp(session, b"one too many"), 402, "quota_exhausted")
    assert "quota" in body["error_description"]
    assert _last_refusal(box_config, client.id)["status"] == 402

    usage = requests.get(f"{box.url}/v1/usage", headers={"Authorization": f"Bearer {key}"}, timeout=10).json()
    assert usage["client"]["calls_used"] == 2 and usage["client"]["scopes"] == ["hash", "timestamp"]
    assert [(u["endpoint"], u["signatures"]) for u in usage["usage"]] == [("timestamp", 2)]
    entry = Database(box_config.database).connect().execute(
        "SELECT actor, details FROM audit_log WHERE action = 'timestamp' AND client_id = ? ORDER BY seq DESC",
        (client.id,)).fetchone()
    assert entry["actor"] == f"client:{client.id}"
    assert json.loads(entry["details"])["document_hash"] == hashlib.sha256(b"stamp 1").hexdigest()


def test_timestamps_count_against_the_rate_like_signatures(box, clients):
    client, key = clients.add(f"csc-tsa-rate-{os.getpid()}", scopes=("hash", "timestamp"), rate_per_minute=2)
    session = Csc(box.url, client.id, key)
    assert _sign_v1(session, hashlib.sha256(b"signed first").digest()).status_code == 200
    assert _timestamp(session, b"then stamped").status_code == 200
    _assert_csc_error(_timestamp(session, b"over the rate"), 429, "rate_limited")
    _assert_csc_error(_sign_v1(session, hashlib.sha256(b"signed after").digest()), 429, "rate_limited")


# -- ECDSA: the raw-signing service on a real EC key on the token ------------------------------------

def _certificate_for(token: Token, label: str) -> asn1_x509.Certificate:
    """A certificate carrying the token key, issued by a throwaway CA: all raw signing reads of it."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "EC raw signing test")]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Throwaway CA")]))
        .public_key(serialization.load_der_public_key(token.key(label).public_key_info))
        .serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .sign(ca_key, hashes.SHA256())
    )
    return asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))


@pytest.mark.parametrize("algorithm,oid,hash_name", [
    (KeyAlgorithm.EC_P256, ECDSA_SHA256, "sha256"),
    (KeyAlgorithm.EC_P384, "1.2.840.10045.4.3.3", "sha384"),
])
def test_raw_signing_with_an_ec_key(box_config, clients, algorithm, oid, hash_name):
    token = Token(box_config.token_config())
    label = f"csc-{algorithm.value}-{os.getpid()}"
    token.generate_key(label, algorithm)
    ledger = SignatureLedger(Database(box_config.database))
    service = RawSigningService(token, TokenSigner(token, label, [_certificate_for(token, label)]), ledger)
    assert oid in service.supported_algorithms() and RSA_ENCRYPTION not in service.supported_algorithms()
    with pytest.raises(InvalidRequest, match="EC key"):
        service.algorithm(SHA256_RSA)

    client, _ = clients.add(f"csc-ec-{algorithm.value}-{os.getpid()}")
    message = b"sealed by an EC key"
    digest = hashlib.new(hash_name, message).digest()
    [signature] = service.sign(client.id, service.algorithm(oid), [digest])
    public = serialization.load_der_public_key(token.key(label).public_key_info)
    public.verify(signature, digest, ec.ECDSA(utils.Prehashed(getattr(hashes, hash_name.upper())())))
    public.verify(signature, message, ec.ECDSA(getattr(hashes, hash_name.upper())()))
    assert _raw_count(box_config, client.id) == 1
