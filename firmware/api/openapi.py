"""GET /openapi.json: the box's API described for integrators and for schema-driven testing.

Written by hand next to the resources it describes (Falcon has no schema introspection), except
for the request schemas: those come from schema.py (native) and csc/schema.py (CSC), which the
resources read requests with, and their level defaults are the running box's. The schemathesis run in the tests keeps the rest
honest: any response that strays from this document fails CI.
"""

from __future__ import annotations

from typing import Any

import falcon

from ..csc.resources import CscResource, served
from ..csc.schema import FORM_METHODS, body_schema
from ..csc.versions import V1, V2
from ..signing.levels import HASH_LEVELS, Level, Profile
from .contracts import BODIES, envelope_schema
from .schema import (
    directory_code_body,
    directory_exists_query,
    directory_lookup_query,
    directory_submit_body,
    hash_body,
    level_schema,
    mail_body,
    otp_body,
    otp_verify_body,
    pdf_sign_query,
    pdf_verify_query,
    usage_query,
)

_ERROR = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
}
_CSC_ERROR = {
    "type": "object",
    "required": ["error", "error_description"],
    "properties": {"error": {"type": "string"}, "error_description": {"type": "string"}},
}
_B64 = {"type": "string", "format": "byte"}
_VALIDATION_INFO = {
    "type": "object",
    "properties": {k: {"type": "array", "items": _B64} for k in ("certificates", "crls", "ocsps")},
}
_SIGNATURE = {
    "type": "object",
    "required": ["signature", "level", "profile"],
    "properties": {
        "signature": {**_B64, "description": "detached CMS SignedData, DER"},
        "level": level_schema(HASH_LEVELS),
        "profile": {"type": "string", "enum": [p.value for p in Profile]},
        "validation_info": _VALIDATION_INFO,
    },
}

_MAIL_QUEUED = {
    "type": "object",
    "required": ["id", "encrypted"],
    "properties": {"id": {"type": "string"},
                   "encrypted": {"type": "boolean", "description": "false: the recipient got the plain notice"}},
}
_MAIL_STATUS = {
    "type": "object",
    "required": ["id", "status", "encrypted", "attempts", "created_at"],
    "properties": {
        "id": {"type": "string"},
        "status": {"type": "string", "enum": ["queued", "sending", "sent", "failed"]},
        "encrypted": {"type": "boolean"},
        "attempts": {"type": "integer"},
        "created_at": {"type": "string"},
        "sent_at": {"type": "string", "nullable": True},
        "last_error": {"type": "string", "nullable": True},
    },
}

_MESSAGES = {
    400: "invalid request", 401: "missing or invalid API key", 402: "call quota exhausted",
    403: "scope not allowed", 404: "no such resource, or (directory) no published certificate / unknown or spent proof",
    405: "method not allowed",
    409: "the PDF's signatures rule it out: certified_no_changes (DocMDP 1), certified_document (a new visible"
         " field on a certified PDF; use an empty field or sign invisibly), earlier_signature_broken (an earlier"
         " signature is, or would be, broken; nothing released)",
    413: "body too large",
    415: "wrong content type", 422: "not a usable PDF, or (directory) a certificate refused: the message names the"
                                      " failed check", 429: "rate limit reached",
    500: "internal error", 503: "token, TSA or revocation service unavailable; nothing was signed",
}
_OTP_ISSUED = {
    "type": "object", "required": ["id", "expires_in", "encrypted"],
    "properties": {"id": {"type": "string"}, "expires_in": {"type": "integer", "description": "seconds"},
                   "encrypted": {"type": "boolean", "description": "false: sent plain (allow_plain)"}},
}
_OTP_VERDICT = {
    "type": "object", "required": ["valid", "reason"],
    "properties": {"valid": {"type": "boolean"},
                   "reason": {"type": "string",
                              "enum": ["ok", "unknown", "expired", "used", "too_many_attempts", "wrong_code"]}},
}
_OTP_MESSAGES = {409: "no encryption certificate for the address and allow_plain is false (no_encryption_certificate)",
                 503: "no mail relay configured (mail_unavailable); nothing was sent"}
_MAIL_MESSAGES = {404: "no such mail for this client", 503: "no mail relay configured (mail_unavailable), or the"
                                                             " token unavailable; nothing was queued"}


def _errors(*codes: int, schema: dict[str, Any] = _ERROR, messages: dict[int, str] | None = None) -> dict[str, Any]:
    return {
        str(code): {"description": (messages or {}).get(code, _MESSAGES.get(code, "")),
                    "content": {"application/json": {"schema": schema}}}
        for code in codes
    }


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_SIGNING_ERRORS = (400, 401, 402, 403, 413, 429, 500, 503)


def _query(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """OpenAPI parameters for a query schema's properties (required as the schema says)."""
    required = set(schema.get("required", ()))
    return [{"name": name, "in": "query", "required": name in required, "description": prop.get("description", ""),
             "schema": {k: v for k, v in prop.items() if k != "description"}}
            for name, prop in schema["properties"].items()]


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _native_paths(default_level: Level) -> dict[str, Any]:
    pdf_body = {"required": True, "content": {"application/pdf": {"schema": {"type": "string", "format": "binary"}}}}
    return {
        "/v1/health": {"get": {
            "summary": "Is the token present and the signing key usable?", "security": [],
            "responses": {
                "200": _json({"type": "object", "properties": {"status": {"type": "string"},
                                                                 "token_present": {"type": "boolean"}}}),
                **_errors(503, schema={"type": "object"}),
            }}},
        "/v1/certificate": {"get": {
            "summary": "The signing certificate chain, leaf first", "security": [],
            "responses": {"200": _json({"type": "object", "required": ["chain_pem"], "properties": {
                "subject": {"type": "string"}, "serial": {"type": "string"}, "chain_pem": {"type": "string"}}})}}},
        "/v1/signatures": {"post": {
            "summary": "Sign a document hash: detached CMS with timestamp and LTV data",
            "requestBody": _json_body(hash_body(default_level, batch=False)),
            "responses": {"201": _json(_SIGNATURE, "signed"), **_errors(*_SIGNING_ERRORS)}}},
        "/v1/signatures/batch": {"post": {
            "summary": "Sign up to 1000 hashes in one call; all or none",
            "requestBody": _json_body(hash_body(default_level, batch=True)),
            "responses": {"201": _json({"type": "object", "required": ["signatures"], "properties": {
                "signatures": {"type": "array", "items": _SIGNATURE}}}, "signed"),
                **_errors(*_SIGNING_ERRORS)}}},
        "/v1/usage": {"get": {
            "summary": "The calling client's quota and metered calls per endpoint per day",
            "parameters": _query(usage_query()),
            "responses": {"200": _json({"type": "object", "required": ["client", "usage"], "properties": {
                "client": {"type": "object"},
                "usage": {"type": "array", "items": {"type": "object", "properties": {
                    "endpoint": {"type": "string", "description": "hash, pdf, raw (CSC signHash) or timestamp"},
                    "day": {"type": "string"},
                    "signatures": {"type": "integer", "description": "metered calls: signatures, or timestamps"}}}}}}),
                **_errors(400, 401)}}},
        "/v1/mail": {"post": {
            "summary": "Send a signed, encrypted S/MIME mail (scope mail); the plain notice to a recipient"
                       " without a certificate",
            "requestBody": _json_body(mail_body()),
            "responses": {"202": _json(_MAIL_QUEUED, "queued"),
                          **_errors(400, 401, 402, 403, 413, 429, 500, 503, messages=_MAIL_MESSAGES)}}},
        "/v1/mail/{mail_id}": {"get": {
            "summary": "A mail's delivery status (scope mail; the calling client's mails only)",
            "parameters": [{"name": "mail_id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": _json(_MAIL_STATUS),
                          **_errors(401, 403, 404, 500, messages=_MAIL_MESSAGES)}}},
        "/v1/otp": {"post": {
            "summary": "Mail a one-time code, encrypted to the person's directory certificate (scope mail)",
            "requestBody": _json_body(otp_body()),
            "responses": {"201": _json(_OTP_ISSUED, "queued"),
                          **_errors(400, 401, 402, 403, 409, 429, 500, 503, messages=_OTP_MESSAGES)}}},
        "/v1/otp/verify": {"post": {
            "summary": "Check a one-time code: valid once, within its lifetime and attempts (scope mail)",
            "requestBody": _json_body(otp_verify_body()),
            "responses": {"200": _json(_OTP_VERDICT), **_errors(400, 401, 403, 500, 503, messages=_OTP_MESSAGES)}}},
        "/v1/pdf/sign": {"post": {
            "summary": "Sign a PDF (PAdES); the signed PDF comes back",
            "parameters": _query(pdf_sign_query(default_level)),
            "requestBody": pdf_body,
            "responses": {
                "200": {"description": "the signed PDF", "content": {"application/pdf": {
                    "schema": {"type": "string", "format": "binary"}}},
                    "headers": {"X-Signature-Level": {"schema": {"type": "string"}},
                                "X-Signature-Field": {"schema": {"type": "string"}}}},
                **_errors(*_SIGNING_ERRORS, 409, 415, 422)}}},
        "/v1/pdf/verify": {"post": {
            "summary": "Report on every signature in a PDF: the box's JSON, or an ETSI TS 119 102-2 report",
            "parameters": _query(pdf_verify_query()),
            "requestBody": pdf_body,
            "responses": {"200": {"description": "OK", "content": {
                "application/json": {"schema": {"type": "object"}},
                "application/xml": {"schema": {"type": "string"}}}},
                **_errors(400, 401, 413, 415, 422, 500, 503)}}},
    }


_DIRECTORY_CERT = {"type": "object", "required": ["fingerprint", "certificate", "chain"], "properties": {
    "fingerprint": {"type": "string", "description": "SHA-256 of the DER, hex"},
    "not_before": {"type": "string"}, "not_after": {"type": "string"},
    "certificate": _B64, "chain": {"type": "array", "items": _B64}}}
_PROOF_ANSWER = _json({"type": "object", "required": ["email", "fingerprint", "status"], "properties": {
    "email": {"type": "string"}, "fingerprint": {"type": "string"},
    "status": {"type": "string", "enum": ["published", "superseded", "unpublished"]}}})


def _directory_paths() -> dict[str, Any]:
    """The certificate directory's endpoints, documented only on a box that serves them."""
    tag = {"tags": ["Certificate directory"]}
    return {
        "/v1/directory/certificates": {
            "get": {**tag, "summary": "The published e-mail encryption certificates of exactly one address, with"
                                     " chain (scope directory; metered; rate-limited per client and per address)",
                    "parameters": _query(directory_lookup_query()),
                    "responses": {
                        "200": {"description": "OK", "content": {
                            "application/json": {"schema": {"type": "object", "required": ["email", "certificates"],
                                                            "properties": {"email": {"type": "string"}, "certificates": {
                                                                "type": "array", "items": _DIRECTORY_CERT}}}},
                            "application/pem-certificate-chain": {"schema": {"type": "string"}},
                            "application/pkcs7-mime": {"schema": {"type": "string", "format": "binary"}}}},
                        **_errors(400, 401, 402, 403, 404, 429, 500)}},
            "post": {**tag, "summary": "Submit a certificate for an address: checked, then published once its owner"
                                      " follows the link mailed (encrypted) to it (scope directory)",
                     "requestBody": _json_body(directory_submit_body()),
                     "responses": {
                         "202": _json({"type": "object", "required": ["email", "fingerprint", "status"], "properties": {
                             "email": {"type": "string"}, "fingerprint": {"type": "string"},
                             "status": {"type": "string"}, "proof_sent": {"type": "boolean"}}}, "pending: proof sent"),
                         "200": _json({"type": "object"}, "already published"),
                         **_errors(400, 401, 403, 413, 422, 500, 503)}}},
        "/v1/directory/exists": {"get": {
            **tag, "summary": "Is there a published certificate for exactly this address? (scope directory; metered)",
            "parameters": _query(directory_exists_query()),
            "responses": {"200": _json({"type": "object", "required": ["exists"],
                                        "properties": {"exists": {"type": "boolean"}}}),
                          **_errors(400, 401, 402, 403, 429, 500)}}},
        "/v1/directory/proofs": {"post": {
            **tag, "summary": "Prove control of the mailbox with the mailed code", "security": [],
            "requestBody": _json_body(directory_code_body()),
            "responses": {"200": _PROOF_ANSWER, **_errors(400, 404, 413, 422, 500, 503)}}},
        "/v1/directory/proofs/{token}": {"post": {
            **tag, "summary": "Prove control of the mailbox: the mailed link's token", "security": [],
            "parameters": [{"name": "token", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": _PROOF_ANSWER, **_errors(404, 422, 500, 503)}}},
    }


def _contract_paths() -> dict[str, Any]:
    """The envelope endpoints (scope contracts), documented only on a box that serves them."""
    tag: dict[str, Any] = {"tags": ["Contract signing"]}
    envelope: dict[str, Any] = {"type": "object", "description": "the envelope, its parties and fields, with times"}
    common = (400, 401, 403, 404, 409, 413, 500)
    contract = "/v1/contracts/{contract_id}"
    party = f"{contract}/parties/{{party_id}}"
    ids = [{"name": "contract_id", "in": "path", "required": True, "schema": {"type": "string"}}]
    party_ids = [*ids, {"name": "party_id", "in": "path", "required": True, "schema": {"type": "string"}}]
    pdf = {"description": "the PDF", "content": {"application/pdf": {"schema": {"type": "string", "format": "binary"}}}}

    def post(summary: str, params: list[dict[str, Any]], body: str | None, answer: dict[str, Any] = envelope,
             codes: tuple[int, ...] = common) -> dict[str, Any]:
        operation: dict[str, Any] = {**tag, "summary": summary, "parameters": params,
                                     "responses": {"200": _json(answer), **_errors(*codes)}}
        if body is not None:
            operation["requestBody"] = {"required": False, "content": {"application/json": {"schema": BODIES[body]}}}
        return {"post": operation}

    return {
        "/v1/contracts": {
            "post": {**tag, "summary": "Start an envelope: multipart 'envelope' (JSON) and 'document' (PDF); one metered call",
                     "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                         "type": "object", "required": ["envelope", "document"], "properties": {
                             "envelope": envelope_schema(), "document": {"type": "string", "format": "binary"}}}}}},
                     "responses": {"201": _json(envelope, "created; invited parties carry their link"),
                                   **_errors(400, 401, 402, 403, 413, 422, 429, 500, 503)}},
            "get": {**tag, "summary": "This client's envelopes, newest first",
                    "parameters": [{"name": "status", "in": "query", "required": False, "schema": {"type": "string"}}],
                    "responses": {"200": _json({"type": "object"}), **_errors(401, 403, 500)}}},
        contract: {"get": {**tag, "summary": "An envelope: every party and field, with times", "parameters": ids,
                           "responses": {"200": _json(envelope), **_errors(401, 403, 404, 500)}}},
        f"{contract}/document": {"get": {**tag, "summary": "The newest revision (the final PDF once completed)",
                                         "parameters": ids, "responses": {"200": pdf, **_errors(401, 403, 404, 500)}}},
        f"{contract}/certificate": {"get": {**tag, "summary": "The signed completion certificate", "parameters": ids,
                                            "responses": {"200": pdf, **_errors(401, 403, 404, 409, 500)}}},
        f"{contract}/cancel": post("Cancel the envelope", ids, "cancel"),
        f"{contract}/remind": post("New links mailed to the parties whose turn it is", ids, None),
        f"{party}/resend": post("A new link for one party", party_ids, None),
        f"{party}/reassign": post("Hand the party's part to a delegate, validated in turn", party_ids, "reassign"),
        f"{party}/decline": post("The party declines, with a reason: the envelope ends", party_ids, "decline"),
        f"{party}/verification": post("Start the party's identity validation", party_ids, None,
                                      {"type": "object"}, (*common, 503)),
        f"{party}/verification/confirm": post("Complete it with the party's code", party_ids, "confirm",
                                              {"type": "object"}, (*common, 422)),
        "/v1/signers/totp": {"post": {**tag, "summary": "Enrol a person for method totp (an authenticator app);"
                                                        " the secret is shown once",
                                      "requestBody": _json_body(BODIES["totp"]),
                                      "responses": {"201": _json({"type": "object"}), **_errors(400, 401, 403, 413, 500)}}},
        f"{party}/sign": post("The validated party's signature, made on the token", party_ids, "sign",
                              {"type": "object"}, (*common, 422, 503)),
    }


def _csc_description(resource: type[CscResource]) -> dict[str, str]:
    """What the resource's docstring says, and the client scope it needs."""
    scope = resource.scope and f"Needs the client's `{resource.scope}` scope."
    text = " ".join(filter(None, (resource.__doc__, scope)))
    return {"description": text} if text else {}


def _csc_body(schema: dict[str, Any], form: bool) -> dict[str, Any]:
    """A CSC method's body, as csc/schema.py describes it and the resource reads it; optional where
    every field is (CSC clients send no body then)."""
    content = {"application/json": {"schema": schema}}
    if form:
        content["application/x-www-form-urlencoded"] = {"schema": schema}
    return {"required": bool(schema.get("required")), "content": content}


def _csc_paths() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for version in (V1, V2):
        for name, resource in served(version).items():
            operation: dict[str, Any] = {
                "summary": f"CSC {version.name} {name}",
                **_csc_description(resource),
                "tags": [f"CSC {version.name}"],
                "security": [] if not resource.requires_token else [{"cscToken": []}],
                "requestBody": _csc_body(body_schema(version, name), form=name in FORM_METHODS),
                "responses": {
                    "200": _json({"type": "object"}), "204": {"description": "done"},
                    **_errors(400, 401, 402, 403, 413, 429, 500, 503, schema=_CSC_ERROR),
                },
            }
            paths[f"{version.root}/{name}"] = {"post": operation}
    return paths


def build_spec(default_level: Level, directory: bool = False, contracts: bool = False) -> dict[str, Any]:
    """The document for a box whose [signing] default_level is ``default_level``, with the
    certificate directory's and the envelopes' endpoints if it serves them."""
    return {
        "openapi": "3.0.3",
        "info": {"title": "E-signature Box API", "version": "1",
                 "description": "Hash and PDF signing with a key that never leaves the box's token. "
                                "Errors: {error, message} (CSC endpoints: {error, error_description})."},
        "components": {"securitySchemes": {
            "apiKey": {"type": "http", "scheme": "bearer", "description": "the client's API key"},
            "cscToken": {"type": "http", "scheme": "bearer", "description": "access token from auth/login"}}},
        "security": [{"apiKey": []}],
        "paths": {**_native_paths(default_level), **(_directory_paths() if directory else {}),
                  **(_contract_paths() if contracts else {}), **_csc_paths(),
                  "/openapi.json": {"get": {"summary": "this document", "security": [],
                                            "responses": {"200": _json({"type": "object"})}}}},
    }


class OpenApiResource:
    """Built with each app of the live signing service, so a settings change shows in it."""

    public = True

    def __init__(self, default_level: str, directory: bool = False, contracts: bool = False) -> None:
        self._spec = build_spec(Level(default_level), directory, contracts)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = self._spec
