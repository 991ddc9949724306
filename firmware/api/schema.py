"""The native API's request schemas: one description of each JSON body and query string, from which
the OpenAPI document is built (openapi.py) and requests are read (signatures.py, pdf.py).

One source for field names, types, levels and defaults, so the document cannot promise a field the
parser does not read, and a level default shown to integrators is the running box's ([signing]
default_level, changed from the console). The schemas are a small subset of JSON Schema — type,
format byte, enum, default, minimum, maximum, maxLength, minItems/maxItems, required, properties of
nested objects — checked by hand here: the box carries no jsonschema dependency for a few keywords.
The CSC API's bodies (csc/schema.py) are read by the same read_body.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import falcon

from hsm import DIGEST_SIZES

from ..errors import InvalidRequest
from ..signing.hash_signing import MAX_BATCH
from ..signing.levels import HASH_LEVELS, Level, Profile, hash_level
from .bodies import b64decode

__all__ = [
    "directory_code_body", "directory_exists_query", "directory_lookup_query", "directory_submit_body", "hash_body",
    "level_schema", "mail_body", "otp_body", "otp_verify_body", "pdf_sign_query", "pdf_verify_query", "read_body", "read_query",
]

_B64 = {"type": "string", "format": "byte"}
_JSON_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str, "integer": int, "boolean": bool, "array": list, "object": dict, "number": (int, float)}


def level_schema(levels: Iterable[Level], default: Level | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "enum": [lv.value for lv in levels]}
    return schema if default is None else {**schema, "default": default.value}


def hash_body(default_level: Level, batch: bool) -> dict[str, Any]:
    """POST /v1/signatures (one ``hash``) or /v1/signatures/batch (``hashes``)."""
    digests = ({"hashes": {"type": "array", "items": _B64, "minItems": 1, "maxItems": MAX_BATCH}}
               if batch else {"hash": {**_B64, "description": "the document's digest"}})
    return {
        "type": "object",
        "required": ["hash_algorithm", *digests],
        "properties": {
            # no enum: the token decides, and refuses others as invalid_hash
            "hash_algorithm": {"type": "string", "description": f"one of {', '.join(sorted(DIGEST_SIZES))}"},
            "level": level_schema(HASH_LEVELS, hash_level(default_level)),
            "profile": {"type": "string", "enum": [p.value for p in Profile], "default": Profile.PADES.value},
            **digests,
        },
    }


MAX_ATTACHMENTS = 10


def mail_body() -> dict[str, Any]:
    """POST /v1/mail. The whole body is bounded by the JSON limit (1 MiB: about 750 KiB of attachments)."""
    attachment = {
        "type": "object",
        "required": ["filename", "content_type", "data"],
        "properties": {
            "filename": {"type": "string", "maxLength": 200, "description": "e.g. bill-2026-11.pdf"},
            "content_type": {"type": "string", "maxLength": 100, "description": "type/subtype, e.g. application/pdf"},
            "data": {**_B64, "description": "the file, byte for byte"},
        },
    }
    return {
        "type": "object",
        "required": ["to", "subject"],
        "properties": {
            "to": {"type": "string", "maxLength": 254, "description": "one recipient address"},
            "subject": {"type": "string", "maxLength": 200, "description": "one line; in the clear, not encrypted"},
            "text": {"type": "string", "description": "plain-text body (text, html or both)"},
            "html": {"type": "string", "description": "HTML body"},
            "attachments": {"type": "array", "items": attachment, "minItems": 0, "maxItems": MAX_ATTACHMENTS},
        },
    }


def otp_body() -> dict[str, Any]:
    """POST /v1/otp."""
    return {
        "type": "object",
        "required": ["to"],
        "properties": {
            "to": {"type": "string", "maxLength": 254, "description": "the person's address"},
            "allow_plain": {"type": "boolean", "default": False,
                            "description": "without a directory certificate, send the code unencrypted"
                                           " (else 409 no_encryption_certificate)"},
        },
    }


def otp_verify_body() -> dict[str, Any]:
    """POST /v1/otp/verify."""
    return {
        "type": "object",
        "required": ["id", "code"],
        "properties": {
            "id": {"type": "string", "maxLength": 64, "description": "the id POST /v1/otp returned"},
            "code": {"type": "string", "maxLength": 16, "description": "what the person typed"},
        },
    }


def pdf_sign_query(default_level: Level) -> dict[str, Any]:
    """POST /v1/pdf/sign: the options, as query parameters beside the PDF body."""
    return {"type": "object", "properties": {
        "level": {**level_schema(list(Level), default_level), "description": "signature level"},
        "reason": {"type": "string", "description": "signature reason"},
        "location": {"type": "string", "description": "signing location"},
        "field": {"type": "string", "description": "signature field name; default: the first empty field, "
                                                    "else a new SignatureN"},
        "certify": {"type": "boolean", "default": False, "description": "certification (DocMDP) signature"},
        "docmdp": {"type": "integer", "enum": [1, 2, 3], "description": "DocMDP permission level"},
        "stamp_page": {"type": "integer", "minimum": 1, "description": "page of a new visible stamp"},
        "stamp_box": {"type": "string", "description": "x1,y1,x2,y2 in points: a new visible field there"},
        "stamp_text": {"type": "string", "description": "stamp text, in a new stamp or an existing visible "
                                                        "field; characters its font cannot show are refused"},
    }}


def pdf_verify_query() -> dict[str, Any]:
    """POST /v1/pdf/verify."""
    return {"type": "object", "properties": {
        "format": {"type": "string", "enum": ["json", "etsi"],
                   "description": "default json; etsi (or Accept: application/xml) gives the ETSI validation report"},
    }}


def usage_query() -> dict[str, Any]:
    """GET /v1/usage."""
    return {"type": "object", "properties": {
        "days": {"type": "integer", "minimum": 1, "maximum": 366, "default": 31, "description": "days back"},
    }}


_EMAIL = {"type": "string", "format": "email", "description": "the exact e-mail address (case, surrounding spaces and IDN domains"
                                          " are normalised; no patterns)"}
MAX_CHAIN = 8  # certificates a submitter may send as path candidates


def directory_lookup_query() -> dict[str, Any]:
    """GET /v1/directory/certificates."""
    return {"type": "object", "required": ["email"], "properties": {
        "email": _EMAIL,
        "format": {"type": "string", "enum": ["json", "pem", "der"],
                   "description": "default json; pem (or Accept: application/pem-certificate-chain): the certificates"
                                  " and their chains as PEM; der (or Accept: application/pkcs7-mime): a certs-only"
                                  " PKCS #7 bundle"},
    }}


def directory_exists_query() -> dict[str, Any]:
    """GET /v1/directory/exists."""
    return {"type": "object", "required": ["email"], "properties": {"email": _EMAIL}}


def directory_submit_body() -> dict[str, Any]:
    """POST /v1/directory/certificates: a certificate for an address, kept once its owner proves the mailbox."""
    certificate = {"type": "string", "description": "one X.509 certificate: base64 DER, or PEM"}
    return {"type": "object", "required": ["email", "certificate"], "properties": {
        "email": _EMAIL,
        "certificate": certificate,
        "chain": {"type": "array", "items": certificate, "minItems": 0, "maxItems": MAX_CHAIN,
                  "description": "intermediate certificates up to the directory's trust roots"},
    }}


def directory_code_body() -> dict[str, Any]:
    """POST /v1/directory/proofs: the code from the proof mail, typed instead of following its link."""
    return {"type": "object", "required": ["email", "code"], "properties": {
        "email": _EMAIL, "code": {"type": "string", "description": "the eight digits from the mail"}}}


def query_params(req: falcon.Request) -> dict[str, str]:
    """The request's query options; an option given twice is refused rather than one copy picked."""
    params = {}
    for name, value in req.params.items():
        if isinstance(value, list):
            raise InvalidRequest(f"option {name!r} is given more than once")
        params[name] = value
    return params


def read_body(schema: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """The body's fields the schema names, checked, with defaults filled in and base64 decoded.

    Fields the schema does not name are ignored (clients may send more than the box reads).
    """
    return _fields(schema, body, "")


def _fields(schema: dict[str, Any], body: dict[str, Any], prefix: str) -> dict[str, Any]:
    """read_body for an object, top level or nested (``prefix`` names it in errors: "entries[0].")."""
    out: dict[str, Any] = {}
    for name, prop in schema["properties"].items():
        value = body.get(name)
        if value is None:
            value = prop.get("default")
        if value is None:
            if name in schema.get("required", ()):
                raise InvalidRequest(f"missing field {prefix + name!r}")
            continue
        out[name] = _checked(prop, value, prefix + name)
    return out


def read_query(schema: dict[str, Any], params: dict[str, str]) -> dict[str, Any]:
    """The query's options (one value each), converted to the schema's types, with defaults."""
    properties = schema["properties"]
    unknown = sorted(set(params) - set(properties))
    if unknown:
        raise InvalidRequest(f"unknown option(s) {', '.join(unknown)}; use {', '.join(sorted(properties))}")
    out: dict[str, Any] = {}
    for name, prop in properties.items():
        if name in params:
            out[name] = _checked(prop, _from_text(prop["type"], params[name], name), name)
        elif "default" in prop:
            out[name] = prop["default"]
        elif name in schema.get("required", ()):
            raise InvalidRequest(f"missing option {name!r}")
    return out


def _from_text(kind: str, text: str, name: str) -> object:
    if kind == "integer":
        try:
            return int(text)
        except ValueError:
            raise InvalidRequest(f"{name} must be an integer") from None
    if kind == "boolean":
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise InvalidRequest(f"{name} must be true or false")
    return text


def _checked(prop: dict[str, Any], value: object, name: str) -> Any:
    kind = prop["type"]
    if not isinstance(value, _JSON_TYPES[kind]) or (kind != "boolean" and isinstance(value, bool)):
        raise InvalidRequest(f"field {name!r} must be {'an' if kind[0] in 'aeiou' else 'a'} {kind}")
    if "enum" in prop and value not in prop["enum"]:
        raise InvalidRequest(f"unknown {name} {value!r}; use one of {', '.join(map(str, prop['enum']))}")
    if isinstance(value, int) and value < prop.get("minimum", value):
        raise InvalidRequest(f"{name} must be at least {prop['minimum']}")
    if isinstance(value, str) and len(value) > prop.get("maxLength", len(value)):
        raise InvalidRequest(f"{name} holds at most {prop['maxLength']} characters")
    if isinstance(value, int) and value > prop.get("maximum", value):
        raise InvalidRequest(f"{name} must be at most {prop['maximum']}")
    if isinstance(value, list):
        low, high = prop.get("minItems", 0), prop.get("maxItems")
        if len(value) < low or (high is not None and len(value) > high):
            raise InvalidRequest(f"{name} holds {low} to {high} items" if high is not None
                                 else f"{name} holds at least {low} item{'' if low == 1 else 's'}")
        return [_checked(prop["items"], item, f"{name}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, dict) and "properties" in prop:  # a nested object: its fields, read the same way
        return _fields(prop, value, f"{name}.")
    if prop.get("format") == "byte":
        return b64decode(str(value), name)  # the type check above made it a string
    return value
