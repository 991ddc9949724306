"""Hostile input gets a 4xx JSON error and one log line, never a 500 or a traceback.

The named cases are bodies that once made the box answer 500 with thousands of lines of
traceback: JSON nested 100,000 deep (on every JSON endpoint, the unauthenticated ones included)
and PDFs that drive pyHanko's reader into recursion or assertions. The fuzz tests mutate valid
PDFs and JSON bodies (hypothesis, derandomized and bounded) and post them to the real box.
"""

from __future__ import annotations

import base64
import json
import re
import time

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware.csc.resources import served
from firmware.csc.versions import V1, V2

from .pdfs import hostile_pdfs, make_pdf, make_pdf_with_object_stream, minimal_pdf
from .support import Api, BoxProcess

PDF = {"Content-Type": "application/pdf"}
JSON = {"Content-Type": "application/json"}
# Seconds a single hostile request may take; far above what any of them needs (see the report).
SLOWEST_ALLOWED = 10.0
_FUZZ = settings(
    max_examples=120, derandomize=True, database=None, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
_HASH = base64.b64encode(bytes(32)).decode()
_SHA256, _SHA256_RSA = "2.16.840.1.101.3.4.2.1", "1.2.840.113549.1.1.11"


class LogTail:
    """What the box logged since this object was made."""

    def __init__(self, box: BoxProcess) -> None:
        self._box = box
        self._start = len(box.log())

    def lines(self) -> list[str]:
        return self._box.log()[self._start:].splitlines()


def _csc_body_methods() -> list[str]:
    """Every CSC route that reads a body: all but info and auth/login, which take none."""
    return sorted({f"/csc/{v.name}/{name}" for v in (V1, V2) for name in served(v) if name not in ("info", "auth/login")})


NATIVE_JSON = ["/v1/signatures", "/v1/signatures/batch"]
CSC_JSON = _csc_body_methods()


@pytest.fixture(scope="module")
def hostile_api(box, clients) -> Api:
    # every scope: the body of each endpoint must be reached (a missing scope is refused before it)
    return Api(box.url, clients.add("hostile-input", scopes=("hash", "pdf", "timestamp"))[1])


@pytest.fixture(scope="module")
def access_token(box, hostile_api) -> str:
    response = hostile_api.post("/csc/v1/auth/login")
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def _post_json(api: Api, token: str, path: str, body: bytes) -> requests.Response:
    """CSC routes get the access token, the box's own the API key (already in the session)."""
    headers = {**JSON, "Authorization": f"Bearer {token}"} if path.startswith("/csc/") else JSON
    return api.post(path, data=body, headers=headers)


def _assert_json_refusal(response: requests.Response, path: str) -> dict:
    """A 4xx in the error shape of the route's face: {error, message} or CSC's {error, error_description}."""
    assert 400 <= response.status_code < 500, (path, response.status_code, response.text[:300])
    assert response.headers["Content-Type"].startswith("application/json"), (path, response.headers)
    body = response.json()
    detail = "error_description" if path.startswith("/csc/") else "message"
    assert body["error"] and body[detail] and "\n" not in body[detail], (path, body)
    return body


def _assert_one_line_each(log: LogTail, refusals: int) -> None:
    lines = log.lines()
    assert not any("Traceback" in line for line in lines), "\n".join(lines[:40])
    assert sum(" refused: " in line for line in lines) == refusals, "\n".join(lines)


# -- the named cases ----------------------------------------------------------------------------

def test_json_nested_100000_deep_is_refused_on_every_json_endpoint(box, hostile_api, access_token):
    deep = b"[" * 100_000 + b"]" * 100_000
    deep_objects = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
    log = LogTail(box)
    paths = [*NATIVE_JSON, *CSC_JSON]
    for path in paths:
        for body in (deep, deep_objects):
            refusal = _assert_json_refusal(_post_json(hostile_api, access_token, path, body), path)
            assert refusal["error"] == "invalid_request", (path, refusal)
    # unauthenticated: the OAuth2 token endpoint reads the body before anyone is known
    anonymous = requests.post(f"{box.url}/csc/v1/oauth2/token", data=deep, headers=JSON, timeout=60)
    _assert_json_refusal(anonymous, "/csc/v1/oauth2/token")
    _assert_one_line_each(log, 2 * len(paths) + 1)


def test_json_nesting_within_the_limit_still_parses(hostile_api):
    """32 levels (the body and 31 objects inside) are fine: the refusal above is about depth."""
    nested: object = _HASH
    for _ in range(31):
        nested = {"x": nested}
    body = {"hash_algorithm": "sha256", "hash": _HASH, "level": "B-B", "extra": nested}
    response = hostile_api.post("/v1/signatures", json=body)
    assert response.status_code == 201, response.text


def test_hostile_pdfs_get_422_and_one_log_line(box, hostile_api):
    log = LogTail(box)
    timings = {}
    for name, pdf in hostile_pdfs().items():
        for path, params in (("/v1/pdf/sign", {"level": "B-B"}), ("/v1/pdf/verify", {})):
            started = time.perf_counter()
            response = hostile_api.post(path, params=params, data=pdf, headers=PDF)
            timings[name, path] = time.perf_counter() - started
            assert response.status_code == 422, (name, path, response.status_code, response.text[:300])
            assert _assert_json_refusal(response, path)["error"] == "invalid_pdf", name
    _assert_one_line_each(log, 2 * len(hostile_pdfs()))
    slowest = max(timings, key=timings.get)
    print(f"slowest hostile PDF: {slowest} {timings[slowest]:.3f} s")
    assert timings[slowest] < SLOWEST_ALLOWED, timings
    signed = hostile_api.post("/v1/pdf/sign", params={"level": "B-B"}, data=make_pdf(), headers=PDF)
    assert signed.status_code == 200, signed.text  # still serving, signer not poisoned


# -- fuzzing ------------------------------------------------------------------------------------

_PDF_TOKENS = [
    b"[", b"]", b"<<", b">>", b"(", b")", b"\\", b"0 R", b"1 0 R", b" obj", b"endobj", b"stream", b"endstream",
    b"/ObjStm", b"/XRef", b"xref", b"trailer", b"startxref", b"%%EOF", b"-1", b"99999999999", b"1e308",
    b"/Kids [1 0 R]", b"/Count", b"/Prev 0", b"/Length 0", b"/Filter /FlateDecode", b"/N 4", b"\x00", b"\xff",
]
_KEEP = 16  # bytes at the start no mutation touches
_SYNTAX = re.compile(rb"[/\[\]<>(){}\":R]|obj|xref|trailer")
_JSON_TOKENS = [b"[", b"]", b"{", b"}", b'"', b"\\", b",", b":", b"null", b"1e999", b"-0", b"\\u0000", b"\xff", b" "]


@st.composite
def _mutated(draw, bases: list[bytes], tokens: list[bytes]) -> bytes:
    """A base with a few byte-level mutations, mostly in place (offsets stay right) and at syntax.

    The first bytes (a PDF's header) are left alone: every change there is refused at once.
    """
    data = bytearray(draw(st.sampled_from(bases)))
    for _ in range(draw(st.integers(1, 6))):
        anchors = [m.start() for m in _SYNTAX.finditer(data, _KEEP)]
        at = draw(st.one_of(st.sampled_from(anchors or [_KEEP]), st.integers(_KEEP, max(_KEEP, len(data)))))
        operation = draw(st.sampled_from(["overwrite", "overwrite", "flip", "insert", "delete", "repeat", "truncate"]))
        run = draw(st.sampled_from(tokens)) * draw(st.sampled_from([1, 2, 50, 1000]))
        if operation == "overwrite":
            data[at:at + len(run)] = run
        elif operation == "flip" and at < len(data):
            data[at] ^= draw(st.integers(1, 255))
        elif operation == "insert":
            data[at:at] = run
        elif operation == "delete":
            del data[at:at + draw(st.integers(1, 64))]
        elif operation == "repeat":
            data[at:at] = data[at:at + draw(st.integers(1, 64))] * draw(st.integers(2, 200))
        elif operation == "truncate":
            del data[at:]
    return bytes(data)


@pytest.fixture(scope="module")
def pdf_bases(hostile_api) -> list[bytes]:
    """PDFs with a classic xref table, an xref stream, an object stream, and one the box signed."""
    plain = make_pdf()
    signed = hostile_api.post("/v1/pdf/sign", params={"level": "B-B"}, data=plain, headers=PDF)
    assert signed.status_code == 200, signed.text
    return [minimal_pdf(), plain, make_pdf_with_object_stream(), signed.content]


def _assert_handled(response: requests.Response, path: str, elapsed: float) -> None:
    assert elapsed < SLOWEST_ALLOWED, (path, elapsed)
    if response.status_code < 300:
        return
    _assert_json_refusal(response, path)


def test_fuzzed_pdfs_never_get_a_500(box, hostile_api, pdf_bases):
    log = LogTail(box)
    started = time.perf_counter()

    @_FUZZ
    @given(pdf=_mutated(pdf_bases, _PDF_TOKENS), path=st.sampled_from(["/v1/pdf/sign", "/v1/pdf/verify"]))
    def check(pdf: bytes, path: str) -> None:
        before = time.perf_counter()
        response = hostile_api.post(path, params={"level": "B-B"} if path.endswith("sign") else {}, data=pdf,
                                    headers=PDF)
        _assert_handled(response, path, time.perf_counter() - before)

    check()
    print(f"PDF fuzzing: {_FUZZ.max_examples} examples in {time.perf_counter() - started:.1f} s")
    assert not any("Traceback" in line for line in log.lines())


def _json_bases() -> list[bytes]:
    bodies = [
        {"hash_algorithm": "sha256", "hash": _HASH, "level": "B-B", "profile": "CAdES"},
        {"hash_algorithm": "sha256", "hashes": [_HASH, _HASH], "level": "B-B"},
        {"credentialID": "box", "numSignatures": 1, "hash": [_HASH], "hashes": [_HASH], "hashAlgorithmOID": _SHA256},
        {"credentialID": "box", "SAD": "x", "hash": [_HASH], "signAlgo": _SHA256_RSA, "hashAlgo": _SHA256},
        {"credentialID": "box", "SAD": "x", "operationMode": "S", "documentDigests": [
            {"hashes": [_HASH], "hashAlgorithmOID": _SHA256, "signature_format": "P", "conformance_level": "Ades-B-B",
             "signAlgo": _SHA256_RSA}]},
        {"grant_type": "client_credentials", "client_id": "nobody", "client_secret": "wrong", "token": "nothing"},
        {"credentialInfo": True, "certificates": "chain", "certInfo": True, "userID": None, "nonce": "00ff"},
    ]
    return [json.dumps(body).encode() for body in bodies]


def _nested(depth: int) -> bytes:
    return b'{"a":[' * depth + b"1" + b"]}" * depth


def test_fuzzed_json_never_gets_a_500(box, hostile_api, access_token):
    log = LogTail(box)
    started = time.perf_counter()
    bodies = st.one_of(
        _mutated(_json_bases(), _JSON_TOKENS),
        st.integers(1, 60_000).map(_nested),
        st.recursive(st.none() | st.booleans() | st.floats() | st.text(), lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner))
        .map(lambda value: json.dumps(value).encode()),
    )

    @_FUZZ
    @given(body=bodies, path=st.sampled_from([*NATIVE_JSON, *CSC_JSON]))
    def check(body: bytes, path: str) -> None:
        before = time.perf_counter()
        response = _post_json(hostile_api, access_token, path, body)
        _assert_handled(response, path, time.perf_counter() - before)

    check()
    print(f"JSON fuzzing: {_FUZZ.max_examples} examples in {time.perf_counter() - started:.1f} s")
    assert not any("Traceback" in line for line in log.lines())
