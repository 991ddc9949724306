"""The certificate directory over HTTP (issue 11): exact-address lookups for API clients with the
``directory`` scope, submissions by them, and the owner's proof of mailbox control (public: the
owner follows a link from a mail, with no API key).

No listing, search or bulk export: every lookup names one address, is a metered call, and is
rate-limited per client and per address (firmware/directory/service.py). "No certificate" and
"not proven yet" are one answer: 404 no_certificate, or {"exists": false}.
"""

from __future__ import annotations

import falcon
from asn1crypto import pem
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7

from ..directory import PROOF_PATH, CertificateRow, DirectoryService, NoCertificate
from ..errors import InvalidRequest
from .bodies import b64, b64decode, read_json
from .directory_page import ConfirmationPage
from .schema import (
    directory_code_body,
    directory_exists_query,
    directory_lookup_query,
    directory_submit_body,
    query_params,
    read_body,
    read_query,
)

__all__ = ["PEM_CHAIN", "PKCS7_CERTS", "add_directory_routes"]

PEM_CHAIN = "application/pem-certificate-chain"  # RFC 8555 9.1
PKCS7_CERTS = "application/pkcs7-mime; smime-type=certs-only"  # RFC 8551 3.2.2
_LOOKUP, _EXISTS = directory_lookup_query(), directory_exists_query()
_SUBMIT, _CODE = directory_submit_body(), directory_code_body()


def _certificate(text: str, name: str) -> bytes:
    """One certificate from base64 DER or PEM."""
    data = text.encode("ascii", "replace")
    if pem.detect(data):
        try:
            found = list(pem.unarmor(data, multiple=True))
        except ValueError:
            raise InvalidRequest(f"field {name!r} is not valid PEM") from None
        if len(found) != 1 or found[0][0] != "CERTIFICATE":
            raise InvalidRequest(f"field {name!r} must hold exactly one PEM CERTIFICATE")
        der: bytes = found[0][2]
        return der
    return b64decode(text, name)


def _format(req: falcon.Request, asked: str | None) -> str:
    if asked is not None:
        return asked
    accept = req.get_header("Accept") or ""
    if PEM_CHAIN in accept:
        return "pem"
    if "application/pkcs7-mime" in accept:
        return "der"
    return "json"


def _bundle(rows: list[CertificateRow]) -> list[bytes]:
    """Each certificate, then the chain certificates not yet given, in order."""
    seen: list[bytes] = []
    for row in rows:
        for der in (row.certificate, *row.chain):
            if der not in seen:
                seen.append(der)
    return seen


def _json(row: CertificateRow) -> dict[str, object]:
    return {"fingerprint": row.fingerprint, "not_before": row.not_before.isoformat(),
            "not_after": row.not_after.isoformat(), "certificate": b64(row.certificate),
            "chain": [b64(der) for der in row.chain]}


class DirectoryCertificatesResource:
    """GET: the published certificates of one address; POST: submit one for it."""

    scope = "directory"

    def __init__(self, service: DirectoryService) -> None:
        self._service = service

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        query = read_query(_LOOKUP, query_params(req))
        rows = self._service.lookup(query["email"], req.context.client.id)
        if not rows:
            raise NoCertificate("no certificate for this address")
        kind = _format(req, query.get("format"))
        if kind == "pem":
            resp.content_type = PEM_CHAIN
            resp.data = b"".join(pem.armor("CERTIFICATE", der) for der in _bundle(rows))
        elif kind == "der":
            resp.content_type = PKCS7_CERTS
            certs = [x509.load_der_x509_certificate(der) for der in _bundle(rows)]
            resp.data = pkcs7.serialize_certificates(certs, Encoding.DER)
        else:
            resp.media = {"email": rows[0].address, "certificates": [_json(row) for row in rows]}

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_body(_SUBMIT, read_json(req))
        chain = [_certificate(item, f"chain[{i}]") for i, item in enumerate(body.get("chain", []))]
        client = req.context.client
        row = self._service.submit(body["email"], _certificate(body["certificate"], "certificate"), chain,
                                   source="api", actor=f"client:{client.id}", client_id=client.id)
        resp.status = falcon.HTTP_202 if row.status == "pending" else falcon.HTTP_200
        resp.media = {"email": row.address, "fingerprint": row.fingerprint, "status": row.status,
                      "proof_sent": row.status == "pending"}


class DirectoryExistsResource:
    scope = "directory"

    def __init__(self, service: DirectoryService) -> None:
        self._service = service

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        query = read_query(_EXISTS, query_params(req))
        resp.media = {"exists": self._service.exists(query["email"], req.context.client.id)}


def _proof_answer(row: CertificateRow) -> dict[str, object]:
    return {"email": row.address, "fingerprint": row.fingerprint, "status": row.status}


class ProofResource:
    """POST /v1/directory/proofs/{token}: a proof link's token, for programs; people follow the
    mailed link to the confirmation page (directory_page.py), whose GET asks and POST acts."""

    public = True

    def __init__(self, service: DirectoryService) -> None:
        self._service = service

    def on_post(self, req: falcon.Request, resp: falcon.Response, token: str) -> None:
        resp.media = _proof_answer(self._service.confirm(token))


class ProofCodeResource:
    """POST /v1/directory/proofs: the owner types the mailed code instead."""

    public = True

    def __init__(self, service: DirectoryService) -> None:
        self._service = service

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_body(_CODE, read_json(req))
        resp.media = _proof_answer(self._service.confirm_code(body["email"], body["code"]))


def add_directory_routes(app: falcon.App[falcon.Request, falcon.Response], service: DirectoryService) -> None:
    app.add_route("/v1/directory/certificates", DirectoryCertificatesResource(service))
    app.add_route("/v1/directory/exists", DirectoryExistsResource(service))
    app.add_route("/v1/directory/proofs", ProofCodeResource(service))
    app.add_route("/v1/directory/proofs/{token}", ProofResource(service))
    app.add_route(PROOF_PATH, ConfirmationPage(service))
