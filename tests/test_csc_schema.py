"""CSC request bodies are read by their schema (firmware/csc/schema.py), in process: the Box's own
app on Falcon's TestClient (as in test_api_rules.py), no server and no TSA.

A wrong type or a missing required field is 400 invalid_request naming the field, on v1 and v2;
the OpenAPI document's CSC requestBody is that same schema, so what it lists as required is what
the resource refuses to go without; fields the box does not read are still ignored.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator

import falcon.testing
import pytest

from firmware.box import Box
from firmware.config import BoxConfig
from firmware.csc.resources import served
from firmware.csc.schema import body_schema
from firmware.csc.versions import V1, V2, CscVersion
from firmware.store.metering import SCOPES

DIGEST = base64.b64encode(bytes(32)).decode()
SHA256_OID = "2.16.840.1.101.3.4.2.1"
SHA256_RSA = "1.2.840.113549.1.1.11"


@pytest.fixture(scope="module")
def local_box(box_config: BoxConfig) -> Iterator[Box]:
    box = Box.open(box_config)
    yield box
    box.token.close()


@pytest.fixture(scope="module")
def client(local_box: Box) -> falcon.testing.TestClient:
    return falcon.testing.TestClient(local_box.app())


@pytest.fixture(scope="module")
def token(client: falcon.testing.TestClient, local_box: Box) -> str:
    key = local_box.clients.add("csc-schema", scopes=SCOPES)[1]
    result = client.simulate_post("/csc/v1/auth/login", headers={"Authorization": f"Bearer {key}"})
    assert result.status_code == 200, result.text
    return result.json["access_token"]


@pytest.fixture(scope="module")
def credential(client: falcon.testing.TestClient, token: str) -> str:
    return _post(client, token, V1, "credentials/list", {}).json["credentialIDs"][0]


def _post(client: falcon.testing.TestClient, token: str, version: CscVersion, method: str,
          body: dict[str, object]) -> falcon.testing.Result:
    return client.simulate_post(f"{version.root}/{method}", json=body, headers={"Authorization": f"Bearer {token}"})


def _refused(result: falcon.testing.Result, field: str) -> None:
    assert result.status_code == 400, result.text
    assert set(result.json) == {"error", "error_description"}, result.json
    assert result.json["error"] == "invalid_request", result.json
    assert field in result.json["error_description"], result.json


def _sign_hash_body(version: CscVersion, credential: str) -> dict[str, object]:
    """A signHash body with every field the schema names (its SAD is no real one)."""
    return {"credentialID": credential, "SAD": "not-a-sad", version.hashes_field: [DIGEST],
            version.hash_algo_field: SHA256_OID, "signAlgo": SHA256_RSA, "signAlgoParams": None}


@pytest.mark.parametrize("version", [V1, V2], ids=["v1", "v2"])
@pytest.mark.parametrize(("method", "change", "field"), [
    ("signatures/signHash", {"signAlgo": 1}, "signAlgo"),
    ("signatures/signHash", {"SAD": ["x"]}, "SAD"),
    ("signatures/signHash", {"{hashes}": DIGEST}, "{hashes}"),
    ("signatures/signHash", {"{hashes}": []}, "{hashes}"),
    ("signatures/signHash", {"{hashes}": [DIGEST, 5]}, "{hashes}[1]"),
    ("signatures/signHash", {"{hashes}": ["not base64!"]}, "{hashes}[0]"),
    ("signatures/signHash", {"signAlgoParams": 7}, "signAlgoParams"),
    ("credentials/authorize", {"numSignatures": "1"}, "numSignatures"),
    ("credentials/authorize", {"numSignatures": True}, "numSignatures"),
    ("credentials/authorize", {"numSignatures": 0}, "numSignatures"),
    ("credentials/info", {"certInfo": "yes"}, "certInfo"),
    ("credentials/info", {"certificates": "all"}, "certificates"),
    ("signatures/timestamp", {"hash": 12, "hashAlgo": SHA256_OID}, "hash"),
    ("signatures/timestamp", {"hash": DIGEST, "hashAlgo": SHA256_OID, "nonce": 12}, "nonce"),
])
def test_a_wrong_type_is_invalid_request_naming_the_field(client, token, credential, version, method, change, field):
    body = {**_sign_hash_body(version, credential), "numSignatures": 1}
    body.update({name.replace("{hashes}", version.hashes_field): value for name, value in change.items()})
    _refused(_post(client, token, version, method, body), field.replace("{hashes}", version.hashes_field))


@pytest.mark.parametrize("version", [V1, V2], ids=["v1", "v2"])
def test_every_required_field_is_enforced_as_the_schema_says(client, token, credential, version):
    """Each method's required fields, from csc/schema.py: an empty body is refused naming one of them."""
    for method in served(version):
        required = body_schema(version, method).get("required", [])
        if not required:
            continue
        result = _post(client, token, version, method, {})
        _refused(result, "missing field")
        assert any(repr(name) in result.json["error_description"] for name in required), (method, result.json)


def test_sign_doc_entries_are_read_by_their_nested_schema(client, token, credential):
    entry = {"hashes": [DIGEST], "hashAlgorithmOID": SHA256_OID, "signature_format": "C", "signAlgo": SHA256_RSA}
    for change, field in [({"signature_format": None}, "documentDigests[0].signature_format"),
                          ({"signature_format": "X"}, "signature_format"),
                          ({"hashes": "x"}, "documentDigests[0].hashes"),
                          ({"conformance_level": 3}, "documentDigests[0].conformance_level")]:
        body = {"credentialID": credential, "SAD": "not-a-sad", "documentDigests": [{**entry, **change}]}
        _refused(_post(client, token, V2, "signatures/signDoc", body), field)
    _refused(_post(client, token, V2, "signatures/signDoc",
                   {"credentialID": credential, "SAD": "x", "documentDigests": ["C"]}), "documentDigests[0]")
    _refused(_post(client, token, V2, "signatures/signDoc",
                   {"credentialID": credential, "SAD": "x", "documentDigests": []}), "documentDigests")
    _refused(_post(client, token, V2, "signatures/signDoc", {"credentialID": credential, "SAD": "x",
                                                             "documentDigests": [entry], "operationMode": "A"}),
             "operationMode")


@pytest.mark.parametrize("version", [V1, V2], ids=["v1", "v2"])
def test_defaults_apply_and_unknown_fields_are_ignored(client, token, credential, version):
    result = _post(client, token, version, "credentials/info",
                   {"credentialID": credential, "lang": "de-CH", "clientData": {"any": ["thing"]}})
    assert result.status_code == 200, result.text
    cert = result.json["cert"]
    assert len(cert["certificates"]) == 1 and "subjectDN" not in cert  # certificates "single", certInfo false


def test_oauth2_form_body_is_read_by_its_schema(client):
    result = client.simulate_post("/csc/v2/oauth2/token", body="client_id=x",
                                  headers={"Content-Type": "application/x-www-form-urlencoded"})
    _refused(result, "grant_type")
    result = client.simulate_post("/csc/v2/oauth2/token", body="grant_type=password",
                                  headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert (result.status_code, result.json["error"]) == (400, "unsupported_grant_type")
    result = client.simulate_post("/csc/v2/oauth2/token", body="grant_type=client_credentials",
                                  headers={"Content-Type": "application/x-www-form-urlencoded"})
    _refused(result, "client_id")


@pytest.mark.parametrize("version", [V1, V2], ids=["v1", "v2"])
def test_openapi_request_body_is_the_schema_the_resource_enforces(client, token, credential, version):
    spec = client.simulate_get("/openapi.json").json
    for method in served(version):
        operation = spec["paths"][f"{version.root}/{method}"]["post"]
        schema = operation["requestBody"]["content"]["application/json"]["schema"]
        assert schema == body_schema(version, method), method
        assert operation["requestBody"]["required"] == bool(schema.get("required")), method

    required = body_schema(version, "signatures/signHash")["required"]
    assert spec["paths"][f"{version.root}/signatures/signHash"]["post"]["requestBody"]["content"][
        "application/json"]["schema"]["required"] == required
    assert version.hashes_field in required and "signAlgo" in required
    for name in required:  # each one the document calls required, the resource refuses to go without
        body = _sign_hash_body(version, credential)
        del body[name]
        _refused(_post(client, token, version, "signatures/signHash", body), f"missing field {name!r}")
