"""The CSC API's request bodies: one description per method and version, from which the resources
read their parameters and the OpenAPI document shows them (api/openapi.py).

The schemas are the native API's subset of JSON Schema (api/schema.py), read by its one reader,
``read_body``: fields checked by type, defaults filled in, base64 decoded, fields the box does not
read ignored (CSC clients send more than the box needs). A failure is an InvalidRequest, which a
CSC route shows as ``invalid_request`` with an ``error_description`` naming the field.

What the subset cannot say stays in the resources, next to the rule it enforces: the values of
conformance_level (matched case-insensitively, as clients spell them variously), the envelope
property a signature format allows, numSignatures against the credential's multisign, the nonce's
hex digits, and the parameters that must not be sent (userID, documents, signed_props).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..signing.levels import Level, Profile
from .credential import CERTIFICATE_CHOICES
from .versions import CscVersion

__all__ = ["CONFORMANCE_LEVELS", "FORM_METHODS", "SIGNATURE_FORMATS", "body_schema"]

CONFORMANCE_LEVELS = {"Ades-B-B": Level.B_B, "Ades-B-T": Level.B_T, "Ades-B-LT": Level.B_LT}
SIGNATURE_FORMATS = {"C": Profile.CADES, "P": Profile.PADES}
# Methods that also take an application/x-www-form-urlencoded body (OAuth2's way, RFC 6749/7009).
FORM_METHODS = frozenset({"oauth2/token", "auth/revoke"})

_B64 = {"type": "string", "format": "byte"}
_CREDENTIAL_ID = {"type": "string", "description": "the box's one credential (credentials/list)"}
_SAD = {"type": "string", "description": "from credentials/authorize, for exactly these hashes"}
_OPERATION_MODE = {"type": "string", "enum": ["S"], "default": "S", "description": "the box signs synchronously only"}
_SIGN_ALGO = {"type": "string", "description": "signature algorithm OID"}
_SIGN_ALGO_PARAMS = {**_B64, "description": "DER of the algorithm's parameters (RSASSA-PSS)"}
_CERTIFICATES = {"type": "string", "enum": list(CERTIFICATE_CHOICES), "default": "single"}
_CERT_INFO = {"type": "boolean", "default": False}


def _object(properties: dict[str, dict[str, Any]], *required: str) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    return {**schema, "required": list(required)} if required else schema  # OpenAPI 3.0: no empty list


def _hashes(description: str) -> dict[str, Any]:
    return {"type": "array", "items": _B64, "minItems": 1, "description": description}


def _no_body(version: CscVersion) -> dict[str, Any]:
    """info, auth/login: nothing the box reads (v1's lang, rememberMe ... are ignored)."""
    return _object({})


def _revoke(version: CscVersion) -> dict[str, Any]:
    return _object({"token": {"type": "string", "description": "the access token to revoke"}}, "token")


def _oauth_token(version: CscVersion) -> dict[str, Any]:
    return _object({
        "grant_type": {"type": "string", "description": "client_credentials (others: unsupported_grant_type)"},
        "client_id": {"type": "string", "description": "without HTTP Basic credentials: the client id"},
        "client_secret": {"type": "string", "description": "without HTTP Basic credentials: the API key"},
    }, "grant_type")


def _credentials_list(version: CscVersion) -> dict[str, Any]:
    if version.is_v1:
        return _object({})  # userID must be null (checked by the resource): the token names the client
    return _object({
        "credentialInfo": {"type": "boolean", "default": False, "description": "also each credential's info"},
        "certificates": _CERTIFICATES,
        "certInfo": _CERT_INFO,
    })


def _credentials_info(version: CscVersion) -> dict[str, Any]:
    return _object({"credentialID": _CREDENTIAL_ID, "certificates": _CERTIFICATES, "certInfo": _CERT_INFO},
                   "credentialID")


def _authorize(version: CscVersion) -> dict[str, Any]:
    properties: dict[str, dict[str, Any]] = {
        "credentialID": _CREDENTIAL_ID,
        "numSignatures": {"type": "integer", "minimum": 1, "description": "as many as hashes; at most multisign"},
        version.hashes_field: _hashes("the digests the SAD will sign, and no others (SCAL 2)"),
    }
    if version.is_v1:  # v1 names no hash algorithm: the digests' length must fit one
        return _object(properties, "credentialID", "numSignatures", version.hashes_field)
    properties[version.hash_algo_field] = {"type": "string", "description": "the digests' algorithm OID"}
    return _object(properties, "credentialID", "numSignatures", version.hashes_field, version.hash_algo_field)


def _sign_hash(version: CscVersion) -> dict[str, Any]:
    properties: dict[str, dict[str, Any]] = {
        "credentialID": _CREDENTIAL_ID,
        "SAD": _SAD,
        version.hashes_field: _hashes("the digests to sign"),
        version.hash_algo_field: {"type": "string", "description": "digest algorithm OID; needed where signAlgo "
                                                                   "names none (rsaEncryption, ECDSA)"},
        "signAlgo": _SIGN_ALGO,
        "signAlgoParams": _SIGN_ALGO_PARAMS,
    }
    if not version.is_v1:
        properties["operationMode"] = _OPERATION_MODE
    return _object(properties, "credentialID", "SAD", version.hashes_field, "signAlgo")


def _sign_doc(version: CscVersion) -> dict[str, Any]:
    """v2 only: AdES signatures over document digests (the documents stay with the client)."""
    levels = ", ".join(CONFORMANCE_LEVELS)
    entry = _object({
        "hashes": _hashes("the documents' digests"),
        "hashAlgorithmOID": {"type": "string", "description": "the digests' algorithm OID"},
        "signature_format": {"type": "string", "enum": list(SIGNATURE_FORMATS), "description": "C CAdES, P PAdES"},
        "conformance_level": {"type": "string", "default": "Ades-B-B",
                              "description": f"one of {levels} (any letter case)"},
        "signed_envelope_property": {"type": "string", "description": "C: Detached; P: Certification or Revision"},
        "signAlgo": _SIGN_ALGO,
        "signAlgoParams": _SIGN_ALGO_PARAMS,
    }, "hashes", "signature_format", "signAlgo")
    return _object({
        "credentialID": _CREDENTIAL_ID,
        "SAD": _SAD,
        "operationMode": _OPERATION_MODE,
        "documentDigests": {"type": "array", "items": entry, "minItems": 1},
    }, "credentialID", "SAD", "documentDigests")


def _timestamp(version: CscVersion) -> dict[str, Any]:
    return _object({
        "hash": {**_B64, "description": "the digest to timestamp"},
        "hashAlgo": {"type": "string", "description": "its algorithm OID"},
        "nonce": {"type": "string", "description": "up to 64 hex digits; the token carries it back"},
    }, "hash", "hashAlgo")


_BODIES: dict[str, Callable[[CscVersion], dict[str, Any]]] = {
    "info": _no_body,
    "auth/login": _no_body,
    "auth/revoke": _revoke,
    "oauth2/token": _oauth_token,
    "credentials/list": _credentials_list,
    "credentials/info": _credentials_info,
    "credentials/authorize": _authorize,
    "signatures/signHash": _sign_hash,
    "signatures/signDoc": _sign_doc,
    "signatures/timestamp": _timestamp,
}


def body_schema(version: CscVersion, method: str) -> dict[str, Any]:
    """The JSON body of CSC ``method`` (e.g. "signatures/signHash") in ``version``."""
    return _BODIES[method](version)
