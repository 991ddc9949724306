"""CSC API resources: one class per method, shared by v1 and v2 where only field names differ.

Each resource reads its parameters by its method's body schema (schema.py, also what the OpenAPI
document shows), calls a store or service, and serialises; the base class does what every
CSC method shares: the access-token check (the box's API-key middleware stands aside for these
resources) and ``Cache-Control: no-store`` (tokens, SADs and signatures must not sit in caches).
Failures are shown in CSC's shape by the box's error handlers (api/errors.py); refusals are
audited by the box's RefusalAudit middleware.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import falcon

from hsm import DIGEST_SIZES, check_digest

from ..api.bodies import b64, check_length, read_json
from ..api.schema import read_body
from ..errors import InvalidRequest
from ..signing.hash_signing import HashSigningService, HashSignRequest
from ..signing.raw_signing import RawSigningService, digest_algorithm
from ..signing.revocation import ValidationData
from ..store.csc_grants import SadStore
from ..store.metering import require_scope
from .auth import Caller, CscAuth
from .credential import Credential
from .errors import CscError
from .schema import CONFORMANCE_LEVELS, FORM_METHODS, SIGNATURE_FORMATS, body_schema
from .timestamping import TimestampService
from .versions import CscVersion

_MAX_BODY = 1024 * 1024
# From a digest the box makes a detached CMS; a PAdES one serves either kind of PDF signature.
_ENVELOPES = {"C": ("Detached",), "P": ("Certification", "Revision")}
_NONCE = re.compile(r"[0-9a-fA-F]{1,64}")


@dataclass(frozen=True)
class CscServices:
    """What the CSC resources work with; one set, shared by both versions."""

    auth: CscAuth
    credential: Credential
    sads: SadStore
    raw_signing: RawSigningService
    hash_signing: HashSigningService
    timestamps: TimestampService


def _body(req: falcon.Request, form: bool = False) -> dict[str, object]:
    """The request's parameters; CSC clients send no body at all where every parameter is optional."""
    if not req.content_length:
        return {}
    if form and (req.content_type or "").startswith(falcon.MEDIA_URLENCODED):
        check_length(req, _MAX_BODY)
        parameters: dict[str, object] = req.get_media()  # falcon's URL-encoded handler: a dict
        return parameters
    return read_json(req)


class _Der(Protocol):
    """An asn1crypto value: what ``validationInfo`` carries, base64 of its DER."""

    def dump(self) -> bytes: ...


def _validation_info(data: list[ValidationData]) -> dict[str, list[str]]:
    """CSC ``validationInfo``: everything a DSS or a B-LT CMS needs, each item once."""

    def unique(items: Iterable[_Der]) -> list[str]:
        return list(dict.fromkeys(b64(item.dump()) for item in items))

    return {
        "ocsp": unique(o for d in data for o in d.ocsps),
        "crl": unique(c for d in data for c in d.crls),
        "certificates": unique(c for d in data for c in d.certificates),
    }


class CscResource:
    public = True  # to the box's API-key middleware: CSC calls carry CSC access tokens, checked here
    audit_refusals = True  # ... but refusals are audited like everywhere else (api.auth.RefusalAudit)
    requires_token = True
    scope: str | None = None  # the client scope a method needs, as on the box's own endpoints
    v2_only = False
    method: ClassVar[str]  # the CSC method name, e.g. "signatures/signHash": its route and its body schema

    def __init__(self, services: CscServices, version: CscVersion) -> None:
        self._csc = services
        self._version = version

    def _read(self, body: dict[str, object]) -> dict[str, Any]:
        """The method's parameters from ``body``, as its schema (csc/schema.py) describes them."""
        return read_body(body_schema(self._version, self.method), body)

    def _parameters(self, req: falcon.Request) -> dict[str, Any]:
        return self._read(_body(req, form=self.method in FORM_METHODS))

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.cache_control = ["no-store"]
        result = self._answer(req)
        if result is None:
            resp.status = falcon.HTTP_204
        else:
            resp.media = result

    def _answer(self, req: falcon.Request) -> dict[str, object] | None:
        """The method's answer (None: 204), after the access-token check where one is required."""
        raise NotImplementedError


class _OpenResource(CscResource):
    """A method called without an access token (info, and those that issue tokens)."""

    requires_token = False

    def _answer(self, req: falcon.Request) -> dict[str, object] | None:
        return self.respond(req)

    def respond(self, req: falcon.Request) -> dict[str, object] | None:
        raise NotImplementedError


class _TokenResource(CscResource):
    """A method of an authenticated client: its access token is checked, and its scope."""

    def _answer(self, req: falcon.Request) -> dict[str, object] | None:
        caller = self._csc.auth.caller(req)
        req.context.client = caller.client  # for the refusal audit
        if self.scope is not None:
            require_scope(caller.client.scopes, self.scope)
        return self.respond(req, caller)

    def respond(self, req: falcon.Request, caller: Caller) -> dict[str, object] | None:
        raise NotImplementedError


class InfoResource(_OpenResource):
    method = "info"

    def respond(self, req: falcon.Request) -> dict[str, object]:
        out: dict[str, object] = {
            "specs": self._version.specs,
            "name": "E-signature Box",
            "logo": "",
            "region": "",
            "lang": "en-US",
            "description": "Remote signing with a key that never leaves the box's PKCS#11 token",
            "authType": ["basic", "oauth2client"],
            "oauth2": f"{req.prefix}{self._version.root}",
            "methods": methods(self._version),
        }
        if not self._version.is_v1:
            out.update(
                asynchronousOperationMode=False,
                validationInfo=False,  # only where required: signDoc at AdES-B-LT
                signAlgorithms={"algos": self._csc.raw_signing.supported_algorithms()},
                signature_formats={"formats": list(SIGNATURE_FORMATS),
                                   "envelope_properties": list(_ENVELOPES.values())},
                conformance_levels=list(CONFORMANCE_LEVELS),
            )
        return out

    on_get = CscResource.on_post


class LoginResource(_OpenResource):
    method = "auth/login"

    def respond(self, req: falcon.Request) -> dict[str, object]:
        token, ttl = self._csc.auth.login(req)
        return {"access_token": token, "expires_in": ttl}


class OAuthTokenResource(_OpenResource):
    """OAuth2 client-credentials grant: the same client id and API key, OAuth2's way."""

    method = "oauth2/token"

    def respond(self, req: falcon.Request) -> dict[str, object]:
        form = self._parameters(req)
        if form["grant_type"] != "client_credentials":
            raise CscError(falcon.HTTP_400, "unsupported_grant_type", "the box grants client_credentials only")
        token, ttl = self._csc.auth.oauth_token(req, form.get("client_id"), form.get("client_secret"))
        return {"access_token": token, "token_type": "Bearer", "expires_in": ttl}


class RevokeResource(_TokenResource):
    method = "auth/revoke"

    def respond(self, req: falcon.Request, caller: Caller) -> None:
        self._csc.auth.revoke(self._parameters(req)["token"], caller)


class CredentialsListResource(_TokenResource):
    method = "credentials/list"

    def respond(self, req: falcon.Request, caller: Caller) -> dict[str, object]:
        body = _body(req)
        if body.get("userID") is not None:
            raise InvalidRequest("userID parameter MUST be null: the access token names the client")
        parameters = self._read(body)
        credential = self._csc.credential
        out: dict[str, object] = {"credentialIDs": [credential.id]}
        if parameters.get("credentialInfo"):  # v2 only: v1's schema names no such field
            info = credential.describe(self._version, parameters["certificates"], parameters["certInfo"])
            out["credentialInfos"] = [{"credentialID": credential.id, **info}]
        return out


class CredentialsInfoResource(_TokenResource):
    method = "credentials/info"

    def respond(self, req: falcon.Request, caller: Caller) -> dict[str, object]:
        parameters = self._parameters(req)
        self._csc.credential.check_id(parameters["credentialID"])
        return self._csc.credential.describe(self._version, parameters["certificates"], parameters["certInfo"])


class AuthorizeResource(_TokenResource):
    """A SAD for exactly the hashes listed (SCAL 2): the client says up front what it will sign."""

    scope = "hash"
    method = "credentials/authorize"

    def respond(self, req: falcon.Request, caller: Caller) -> dict[str, object]:
        parameters = self._parameters(req)
        credential = self._csc.credential
        credential.check_id(parameters["credentialID"])
        count: int = parameters["numSignatures"]
        if not 1 <= count <= credential.multisign:
            raise InvalidRequest(f"numSignatures must be 1 to {credential.multisign}")
        digests: list[bytes] = parameters[self._version.hashes_field]
        if len(digests) != count:
            raise InvalidRequest(f"numSignatures is {count} but {len(digests)} hashes were sent; SCAL 2 binds each")
        algorithm = None
        if self._version.is_v1:  # v1 names no hash algorithm: the digest's length must fit one
            if any(len(d) not in DIGEST_SIZES.values() for d in digests):
                raise InvalidRequest("Invalid digest value length")
        else:
            algorithm = digest_algorithm(parameters[self._version.hash_algo_field])
            for digest in digests:
                check_digest(digest, algorithm)
        sad, ttl = self._csc.sads.issue(caller.token, credential.id, digests, algorithm)
        return {"SAD": sad, "expiresIn": ttl}


class SignHashResource(_TokenResource):
    """Raw signature values; the client builds the CMS (as pyHanko's CSCSigner does)."""

    scope = "hash"
    method = "signatures/signHash"

    def respond(self, req: falcon.Request, caller: Caller) -> dict[str, object]:
        parameters = self._parameters(req)  # v2's operationMode: "S" only, by its schema
        credential = self._csc.credential
        credential.check_id(parameters["credentialID"])
        sad: str = parameters["SAD"]
        raw = self._csc.raw_signing
        algorithm = raw.algorithm(
            parameters["signAlgo"], parameters.get(self._version.hash_algo_field), parameters.get("signAlgoParams"))
        digests: list[bytes] = parameters[self._version.hashes_field]
        raw.check(algorithm, digests)  # a malformed request does not spend the SAD
        self._csc.sads.consume(sad, caller.token, credential.id, [(algorithm.hash_algorithm, d) for d in digests])
        return {"signatures": [b64(s) for s in raw.sign(caller.client.id, algorithm, digests)]}


class SignDocResource(_TokenResource):
    """v2: AdES signatures (CMS, CAdES or PAdES) over document digests, made by hash signing."""

    scope = "hash"
    v2_only = True
    method = "signatures/signDoc"

    def respond(self, req: falcon.Request, caller: Caller) -> dict[str, object]:
        body = _body(req)
        if body.get("documents") is not None:
            raise InvalidRequest("documents are not accepted: send documentDigests (the document stays with you)")
        parameters = self._read(body)  # operationMode: "S" only, by the schema
        raw_entries = body["documentDigests"]  # the schema made it a non-empty list of objects
        assert isinstance(raw_entries, list)
        if any(entry.get("signed_props") for entry in raw_entries):
            raise InvalidRequest("Invalid parameter signed_props: the box sets the signed attributes itself")
        credential = self._csc.credential
        credential.check_id(parameters["credentialID"])
        sad: str = parameters["SAD"]
        requests = [request for entry in parameters["documentDigests"] for request in self._requests(entry)]
        self._csc.sads.consume(sad, caller.token, credential.id, [(r.hash_algorithm, r.digest) for r in requests])
        signatures = self._csc.hash_signing.sign(caller.client.id, requests)
        out: dict[str, object] = {"SignatureObject": [b64(s.cms.dump()) for s in signatures]}
        data = [s.validation_data for s in signatures if s.validation_data is not None]
        if data:
            out["validationInfo"] = _validation_info(data)
        return out

    def _requests(self, entry: dict[str, Any]) -> list[HashSignRequest]:
        """One documentDigests entry, as its schema read it: one request per hash."""
        signature_format: str = entry["signature_format"]  # C or P, by the schema
        level_name: str = entry["conformance_level"]
        level = next((lv for name, lv in CONFORMANCE_LEVELS.items() if name.lower() == level_name.lower()), None)
        if level is None:
            raise InvalidRequest(f"Invalid parameter conformance_level; use one of {', '.join(CONFORMANCE_LEVELS)}")
        envelope = entry.get("signed_envelope_property")
        if envelope is not None and envelope not in _ENVELOPES[signature_format]:
            allowed = ", ".join(_ENVELOPES[signature_format])
            raise InvalidRequest(f"Invalid parameter signed_envelope_property; use one of {allowed}")
        raw = self._csc.raw_signing
        requested = raw.algorithm(entry["signAlgo"], entry.get("hashAlgorithmOID"), entry.get("signAlgoParams"))
        made = raw.cms_algorithm(requested.hash_algorithm)
        if requested != made:
            raise InvalidRequest(
                f"signAlgo asks for {requested.scheme.value}; the box's CMS signatures use {made.scheme.value}"
            )
        digests: list[bytes] = entry["hashes"]
        for digest in digests:  # checked before the SAD is spent
            check_digest(digest, requested.hash_algorithm)
        return [HashSignRequest(requested.hash_algorithm, d, level, SIGNATURE_FORMATS[signature_format])
                for d in digests]


class TimestampResource(_TokenResource):
    """An RFC 3161 token from the box's TSAs; each is one metered call (quota and rates apply)."""

    scope = "timestamp"
    method = "signatures/timestamp"

    def respond(self, req: falcon.Request, caller: Caller) -> dict[str, object]:
        parameters = self._parameters(req)
        digest: bytes = parameters["hash"]
        algorithm = digest_algorithm(parameters["hashAlgo"])
        nonce: str | None = parameters.get("nonce")
        if nonce is not None and not _NONCE.fullmatch(nonce):
            raise InvalidRequest("Invalid parameter nonce: up to 64 hex digits")
        nonce_value = None if nonce is None else int(nonce, 16)
        token = self._csc.timestamps.stamp(caller.client.id, digest, algorithm, nonce_value)
        return {"timestamp": b64(token.dump())}


RESOURCES: dict[str, type[CscResource]] = {
    cls.method: cls
    for cls in (
        InfoResource,
        LoginResource,
        RevokeResource,
        OAuthTokenResource,
        CredentialsListResource,
        CredentialsInfoResource,
        AuthorizeResource,
        SignHashResource,
        SignDocResource,
        TimestampResource,
    )
}


def served(version: CscVersion) -> dict[str, type[CscResource]]:
    """The resources of ``version``, by CSC method name."""
    return {name: cls for name, cls in RESOURCES.items() if not (cls.v2_only and version.is_v1)}


def methods(version: CscVersion) -> list[str]:
    """What ``info`` lists: the API methods, without info itself and the OAuth2 endpoints."""
    return [name for name in served(version) if name != "info" and not name.startswith("oauth2/")]
