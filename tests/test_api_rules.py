"""The signing API's request and response rules, in process: the Box's own app on Falcon's
TestClient, signing on the session's SoftHSM2 token (no server, no TSA: B-B only).

The real-server tests (test_hash_api, test_pdf_api, test_csc, ...) prove the end to end; these pin
down what the one error table, the one scope check and the one request schema promise: the same
failure gets the same status and code on the native and the CSC face, a request is read by the
schema the OpenAPI document shows, and that document follows the box's live settings.
"""

from __future__ import annotations

import base64
import dataclasses
import errno
import logging
from collections.abc import Iterator

import falcon
import falcon.testing
import pytest

from firmware.box import Box
from firmware.config import BoxConfig
from firmware.operations.errors import FAULTS, Face
from firmware.operations.live import SigningService, reassemble
from firmware.signing.revocation import CertificateRevoked
from firmware.store.metering import QuotaExhausted, Refusal, ScopeDenied

HASH = base64.b64encode(bytes(32)).decode()


class _Raiser:
    """Raises what the path names, as a resource deep inside the box would."""

    public = True

    def __init__(self, errors: dict[str, BaseException]) -> None:
        self._errors = errors

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        raise self._errors[name]


_ERRORS: dict[str, BaseException] = {
    **{exc_type.__name__: exc_type(f"why {exc_type.__name__}") for exc_type in FAULTS},
    "disk_full": OSError(errno.ENOSPC, "No space left on device"),
    "internal": RuntimeError("secret detail 1234"),
}


@pytest.fixture(scope="module")
def local_box(box_config: BoxConfig) -> Iterator[Box]:
    box = Box.open(box_config)
    yield box
    box.token.close()


@pytest.fixture(scope="module")
def client(local_box: Box) -> falcon.testing.TestClient:
    app = local_box.app()
    app.add_route("/v1/test-raise/{name}", _Raiser(_ERRORS))
    app.add_route("/csc/v2/test-raise/{name}", _Raiser(_ERRORS))
    return falcon.testing.TestClient(app)


def _key(local_box: Box, name: str, scopes: tuple[str, ...]) -> str:
    return local_box.clients.add(f"rules-{name}", scopes=scopes)[1]


def _csc_token(client: falcon.testing.TestClient, key: str) -> str:
    result = client.simulate_post("/csc/v2/auth/login", headers={"Authorization": f"Bearer {key}"})
    assert result.status_code == 200, result.text
    return result.json["access_token"]


def _sign(client: falcon.testing.TestClient, key: str, **body) -> falcon.testing.Result:
    return client.simulate_post("/v1/signatures", json={"hash_algorithm": "sha256", "hash": HASH, **body},
                                headers={"Authorization": f"Bearer {key}"})


# -- one error table -----------------------------------------------------------------------------------

@pytest.mark.parametrize("exc_type", list(FAULTS), ids=lambda t: t.__name__)
def test_each_fault_has_the_table_status_and_code_on_both_faces(client, exc_type):
    fault = FAULTS[exc_type]
    native = client.simulate_get(f"/v1/test-raise/{exc_type.__name__}")
    assert (native.status_code, native.json) == \
        (fault.on(Face.NATIVE)[0], {"error": fault.code, "message": f"why {exc_type.__name__}"})
    csc = client.simulate_get(f"/csc/v2/test-raise/{exc_type.__name__}")
    assert (csc.status_code, csc.json) == \
        (fault.on(Face.CSC)[0], {"error": fault.csc_code, "error_description": f"why {exc_type.__name__}"})


def test_the_faces_differ_only_where_csc_has_its_own_word(client):
    def both(exc_type: type[BaseException]) -> tuple[tuple[int, str], tuple[int, str]]:
        native = client.simulate_get(f"/v1/test-raise/{exc_type.__name__}")
        csc = client.simulate_get(f"/csc/v2/test-raise/{exc_type.__name__}")
        return (native.status_code, native.json["error"]), (csc.status_code, csc.json["error"])

    assert both(CertificateRevoked) == ((503, "signing_certificate_revoked"), (400, "invalid_request"))
    # refusals are the box's own: one status and code on both faces
    assert both(ScopeDenied) == ((403, "scope_denied"), (403, "scope_denied"))
    assert both(QuotaExhausted) == ((402, "quota_exhausted"), (402, "quota_exhausted"))
    assert both(Refusal) == ((403, "forbidden"), (403, "forbidden"))


def test_a_full_disk_anywhere_is_storage_full(client):
    native = client.simulate_get("/v1/test-raise/disk_full")
    assert (native.status_code, native.json["error"]) == (503, "storage_full")
    csc = client.simulate_get("/csc/v2/test-raise/disk_full")
    assert (csc.status_code, csc.json["error"]) == (503, "temporarily_unavailable")


def test_an_internal_error_is_500_without_detail_and_logged_with_its_traceback(client, caplog):
    with caplog.at_level(logging.ERROR):
        native = client.simulate_get("/v1/test-raise/internal")
        csc = client.simulate_get("/csc/v2/test-raise/internal")
    assert native.status_code == 500 and native.json == {"error": "internal_error",
                                                         "message": "internal error; see the box's log"}
    assert csc.status_code == 500 and csc.json == {"error": "server_error",
                                                   "error_description": "internal error; see the box's log"}
    logged = [r for r in caplog.records if r.exc_info and "secret detail 1234" in str(r.exc_info[1])]
    assert len(logged) == 2


def test_falcon_errors_take_the_face_of_their_route(client):
    native = client.simulate_get("/v1/nowhere")
    assert native.status_code == 404 and set(native.json) == {"error", "message"}
    csc = client.simulate_post("/csc/v2/nowhere")
    assert csc.status_code == 404 and csc.json["error"] == "invalid_request" and csc.json["error_description"]


# -- requests read by their schema ------------------------------------------------------------------------

def test_an_unknown_level_is_400_naming_the_levels(client, local_box):
    key = _key(local_box, "levels", ("hash", "pdf"))
    for level in ("B-X", "B-LTA"):  # B-LTA needs the whole document: the PDF endpoint only
        result = _sign(client, key, level=level)
        assert result.status_code == 400 and result.json["error"] == "invalid_request", result.text
        assert repr(level) in result.json["message"] and "B-B, B-T, B-LT" in result.json["message"]
    pdf = client.simulate_post("/v1/pdf/sign", params={"level": "B-X"}, body=b"%PDF-",
                               headers={"Authorization": f"Bearer {key}", "Content-Type": "application/pdf"})
    assert pdf.status_code == 400 and "B-B, B-T, B-LT, B-LTA" in pdf.json["message"], pdf.text


def test_a_hash_of_the_wrong_length_is_invalid_hash(client, local_box):
    key = _key(local_box, "hash-length", ("hash",))
    short = base64.b64encode(bytes(20)).decode()
    result = _sign(client, key, hash=short, level="B-B")
    assert (result.status_code, result.json["error"]) == (400, "invalid_hash")
    assert "32 bytes, got 20" in result.json["message"]
    assert _sign(client, key, level="B-B").status_code == 201  # the right length signs


def test_every_field_of_the_documented_body_is_checked_for_its_type(client, local_box):
    key = _key(local_box, "types", ("hash",))
    spec = client.simulate_get("/openapi.json").json
    schema = spec["paths"]["/v1/signatures"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert set(schema["properties"]) == {"hash_algorithm", "hash", "level", "profile"}
    for name in schema["properties"]:
        result = _sign(client, key, **{name: 42})
        assert result.status_code == 400 and repr(name) in result.json["message"], (name, result.text)
    for name in schema["required"]:
        body = {"hash_algorithm": "sha256", "hash": HASH}
        del body[name]
        result = client.simulate_post("/v1/signatures", json=body, headers={"Authorization": f"Bearer {key}"})
        assert result.status_code == 400 and f"missing field {name!r}" in result.json["message"], result.text


# -- one scope check ----------------------------------------------------------------------------------------

def test_a_missing_scope_is_403_scope_denied_on_both_faces(client, local_box):
    key = _key(local_box, "pdf-only", ("pdf",))
    native = _sign(client, key, level="B-B")
    assert (native.status_code, native.json["error"]) == (403, "scope_denied")
    assert "this client may not use hash signing" in native.json["message"]
    token = _csc_token(client, key)
    csc = client.simulate_post("/csc/v2/credentials/authorize", headers={"Authorization": f"Bearer {token}"},
                               json={"credentialID": "box-signing", "numSignatures": 1, "hashes": [HASH],
                                     "hashAlgorithmOID": "2.16.840.1.101.3.4.2.1"})
    assert (csc.status_code, csc.json["error"]) == (403, "scope_denied")
    assert csc.json["error_description"] == native.json["message"]


# -- the OpenAPI document follows the live settings ---------------------------------------------------------

def _documented_defaults(spec: dict) -> tuple[str, str]:
    body = spec["paths"]["/v1/signatures"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    query = {p["name"]: p for p in spec["paths"]["/v1/pdf/sign"]["post"]["parameters"]}
    return body["properties"]["level"]["default"], query["level"]["schema"]["default"]


def test_the_openapi_default_level_follows_a_settings_change(local_box, box_config):
    service = SigningService(local_box)
    client = falcon.testing.TestClient(service)
    assert _documented_defaults(client.simulate_get("/openapi.json").json) == (box_config.default_level,) * 2
    service.install(reassemble(local_box, dataclasses.replace(box_config, signing=dataclasses.replace(box_config.signing, default_level="B-B"))))
    assert _documented_defaults(client.simulate_get("/openapi.json").json) == ("B-B", "B-B")
    key = _key(local_box, "default-level", ("hash",))
    result = client.simulate_post("/v1/signatures", json={"hash_algorithm": "sha256", "hash": HASH},
                                  headers={"Authorization": f"Bearer {key}"})
    assert result.status_code == 201 and result.json["level"] == "B-B", result.text  # the default it documents
    service.install(reassemble(local_box, dataclasses.replace(box_config, signing=dataclasses.replace(box_config.signing, default_level="B-LTA"))))
    # hash signing cannot make B-LTA: its documented default is the level it really uses
    assert _documented_defaults(client.simulate_get("/openapi.json").json) == ("B-LT", "B-LTA")


@pytest.mark.parametrize(("query", "message"), [("days=0", "at least 1"), ("days=367", "at most 366"),
                                               ("days=x", "integer"), ("days=2&days=3", "more than once"),
                                               ("weeks=2", "unknown option")])
def test_usage_options_are_read_by_their_schema(client, local_box, query, message):
    key = _key(local_box, f"usage-{len(query)}-{query[:6]}", ("hash",))
    result = client.simulate_get("/v1/usage", query_string=query, headers={"Authorization": f"Bearer {key}"})
    assert result.status_code == 400 and message in result.json["message"], result.json


def test_usage_days_default_and_bounds_pass(client, local_box):
    key = _key(local_box, "usage-ok", ("hash",))
    for query in ("", "days=1", "days=366"):
        result = client.simulate_get("/v1/usage", query_string=query, headers={"Authorization": f"Bearer {key}"})
        assert result.status_code == 200 and "usage" in result.json, (query, result.json)
