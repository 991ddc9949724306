"""CSC API resources: one class per method, shared by v1 and v2 where only field names differ.

Each resource parses, calls a store or service, and serialises; the base class does what every
CSC method shares: the access-token check (the box's API-key middleware stands aside for these
resources) and ``Cache-Control: no-store`` (tokens, SADs and signatures must not sit in caches).
Failures are shown in CSC's shape by the box's error handlers (api/errors.py); refusals are
audited by the box's RefusalAudit middleware.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import falcon

from hsm import DIGEST_SIZES, check_digest

from ..api.bodies import b64, b64decode, check_length, field, read_json
from ..errors import InvalidRequest
from ..signing.hash_signing import HashSigningService, HashSignRequest
from ..signing.levels import Level, Profile
from ..signing.raw_signing import RawSigningService, digest_algorithm
from ..signing.revocation import ValidationData
from ..store.csc_grants import SadStore
from ..store.metering import require_scope
from .auth import Caller, CscAuth
from .credential import Credential
from .errors import CscError
from .timestamping import TimestampService
from .versions import CscVersion

_MAX_BODY = 1024 * 1024
_CONFORMANCE_LEVELS = {"Ades-B-B": Level.B_B, "Ades-B-T": Level.B_T, "Ades-B-LT": Level.B_LT}
_FORMATS = {"C": Profile.CADES, "P": Profile.PADES}
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


def _digests(body: dict[str, object], name: str) -> list[bytes]:
    values = field(body, name, list)
    if not values or not all(isinstance(v, str) for v in values):
        raise InvalidRequest(f"parameter {name!r} must be a non-empty array of base64 strings")
    return [b64decode(v, f"{name}[{i}]") for i, v in enumerate(values)]


def _sign_algo_params(body: dict[str, object]) -> bytes | None:
    value = field(body, "signAlgoParams", str, required=False)
    return None if value is None else b64decode(value, "signAlgoParams")


def _synchronous_only(body: dict[str, object]) -> None:
    if field(body, "operationMode", str, default="S") != "S":
        raise InvalidRequest("Invalid parameter operationMode: the box signs synchronously only")


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

    def __init__(self, services: CscServices, version: CscVersion) -> None:
        self._csc = services
        self._version = version

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
                signature_formats={"formats": list(_FORMATS), "envelope_properties": list(_ENVELOPES.values())},
                conformance_levels=list(_CONFORMANCE_LEVELS),
            )
        return out

    on_get = CscResource.on_post


class LoginResource(_OpenResource):
    def respond(self, req: falcon.Request) -> dict[str, object]:
        token, ttl = self._csc.auth.login(req)
        return {"access_token": token, "expires_in": ttl}


class OAuthTokenResource(_OpenResource):
    """OAuth2 client-credentials grant: the same client id and API key, OAuth2's way."""

    def respond(self, req: falcon.Request) -> dict[str, object]:
        form = _body(req, form=True)
        if field(form, "grant_type", str) != "client_credentials":
            raise CscError(falcon.HTTP_400, "unsupported_grant_type", "the box grants client_credentials only")
        token, ttl = self._csc.auth.oauth_token(req, form)
        return {"access_token": token, "token_type": "Bearer", "expires_in": ttl}


class RevokeResource(_TokenResource):
    def respond(self, req: falcon.Request, caller: Caller) -> None:
        self._csc.auth.revoke(field(_body(req, form=True), "token", str), caller)


class CredentialsListResource(_TokenResource):
    def respond(self, req: falcon.Request, caller: Caller) -> dict[str, object]:
        body = _body(req)
        if body.get("userID") is not None:
            raise InvalidRequest("userID parameter MUST be null: the access token names the client")
        credential = self._csc.credential
        out: dict[str, object] = {"credentialIDs": [credential.id]}
        if not self._version.is_v1 and field(body, "credentialInfo", bool, default=False):
            info = credential.describe(
                self._version,
                field(body, "certificates", str, default="single"),
                field(body, "certInfo", bool, default=False),
            )
            out["credentialInfos"] = [{"credentialID": credential.id, **info}]
        return out


class CredentialsInfoResource(_TokenResource):
    def respond(self, req: falcon.Request, caller: Caller) -> dict[str, object]:
        body = _body(req)
        self._csc.credential.check_id(field(body, "credentialID", str))
        return self._csc.credential.describe(
            self._version,
            field(body, "certificates", str, default="single"),
            field(body, "certInfo", bool, default=False),
        )


class AuthorizeResource(_TokenResource):
    """A SAD for exactly the hashes listed (SCAL 2): the client says up front what it will sign."""

    scope = "hash"

    def respond(self, req: falcon.Request, caller: Caller) -> dict[str, object]:
        body = _body(req)
        credential = self._csc.credential
        credential.check_id(field(body, "credentialID", str))
        count = field(body, "numSignatures", int)
        if not 1 <= count <= credential.multisign:
            raise InvalidRequest(f"numSignatures must be 1 to {credential.multisign}")
        digests = _digests(body, self._version.hashes_field)
        if len(digests) != count:
            raise InvalidRequest(f"numSignatures is {count} but {len(digests)} hashes were sent; SCAL 2 binds each")
        algorithm = None
        if self._version.is_v1:  # v1 names no hash algorithm: the digest's length must fit one
            if any(len(d) not in DIGEST_SIZES.values() for d in digests):
                raise InvalidRequest("Invalid digest value length")
        else:
            algorithm = digest_algorithm(field(body, self._version.hash_algo_field, str))
            for digest in digests:
                check_digest(digest, algorithm)
        sad, ttl = self._csc.sads.issue(caller.token, credential.id, digests, algorithm)
        return {"SAD": sad, "expiresIn": ttl}


class SignHashResource(_TokenResource):
    """Raw signature values; the client builds the CMS (as pyHanko's CSCSigner does)."""

    scope = "hash"

    def respond(self, req: falcon.Request, caller: Caller) -> dict[str, object]:
        body = _body(req)
        credential = self._csc.credential
        credential.check_id(field(body, "credentialID", str))
        sad = field(body, "SAD", str)
        if not self._version.is_v1:
            _synchronous_only(body)
        raw = self._csc.raw_signing
        algorithm = raw.algorithm(
            field(body, "signAlgo", str),
            field(body, self._version.hash_algo_field, str, required=False),
            _sign_algo_params(body),
        )
        digests = _digests(body, self._version.hashes_field)
        raw.check(algorithm, digests)  # a malformed request does not spend the SAD
        self._csc.sads.consume(sad, caller.token, credential.id, [(algorithm.hash_algorithm, d) for d in digests])
        return {"signatures": [b64(s) for s in raw.sign(caller.client.id, algorithm, digests)]}


class SignDocResource(_TokenResource):
    """v2: AdES signatures (CMS, CAdES or PAdES) over document digests, made by hash signing."""

    scope = "hash"
    v2_only = True

    def respond(self, req: falcon.Request, caller: Caller) -> dict[str, object]:
        body = _body(req)
        credential = self._csc.credential
        credential.check_id(field(body, "credentialID", str))
        sad = field(body, "SAD", str)
        _synchronous_only(body)
        if body.get("documents") is not None:
            raise InvalidRequest("documents are not accepted: send documentDigests (the document stays with you)")
        entries = field(body, "documentDigests", list)
        if not entries:
            raise InvalidRequest("Empty documentDigests")
        requests = [request for entry in entries for request in self._requests(entry)]
        self._csc.sads.consume(sad, caller.token, credential.id, [(r.hash_algorithm, r.digest) for r in requests])
        signatures = self._csc.hash_signing.sign(caller.client.id, requests)
        out: dict[str, object] = {"SignatureObject": [b64(s.cms.dump()) for s in signatures]}
        data = [s.validation_data for s in signatures if s.validation_data is not None]
        if data:
            out["validationInfo"] = _validation_info(data)
        return out

    def _requests(self, entry: object) -> list[HashSignRequest]:
        if not isinstance(entry, dict):
            raise InvalidRequest("Invalid object parameter documentDigests")
        signature_format = field(entry, "signature_format", str)
        if signature_format not in _FORMATS:
            raise InvalidRequest("Invalid parameter signature_format; use C (CAdES) or P (PAdES)")
        level_name = field(entry, "conformance_level", str, default="Ades-B-B")
        level = next((lv for name, lv in _CONFORMANCE_LEVELS.items() if name.lower() == level_name.lower()), None)
        if level is None:
            raise InvalidRequest(f"Invalid parameter conformance_level; use one of {', '.join(_CONFORMANCE_LEVELS)}")
        envelope = field(entry, "signed_envelope_property", str, required=False)
        if envelope is not None and envelope not in _ENVELOPES[signature_format]:
            allowed = ", ".join(_ENVELOPES[signature_format])
            raise InvalidRequest(f"Invalid parameter signed_envelope_property; use one of {allowed}")
        if entry.get("signed_props"):
            raise InvalidRequest("Invalid parameter signed_props: the box sets the signed attributes itself")
        raw = self._csc.raw_signing
        requested = raw.algorithm(
            field(entry, "signAlgo", str),
            field(entry, "hashAlgorithmOID", str, required=False),
            _sign_algo_params(entry),
        )
        made = raw.cms_algorithm(requested.hash_algorithm)
        if requested != made:
            raise InvalidRequest(
                f"signAlgo asks for {requested.scheme.value}; the box's CMS signatures use {made.scheme.value}"
            )
        digests = _digests(entry, "hashes")
        for digest in digests:  # checked before the SAD is spent
            check_digest(digest, requested.hash_algorithm)
        return [HashSignRequest(requested.hash_algorithm, d, level, _FORMATS[signature_format]) for d in digests]


class TimestampResource(_TokenResource):
    """An RFC 3161 token from the box's TSAs; each is one metered call (quota and rates apply)."""

    scope = "timestamp"

    def respond(self, req: falcon.Request, caller: Caller) -> dict[str, object]:
        body = _body(req)
        digest = b64decode(field(body, "hash", str), "hash")
        algorithm = digest_algorithm(field(body, "hashAlgo", str))
        nonce = field(body, "nonce", str, required=False)
        if nonce is not None and not _NONCE.fullmatch(nonce):
            raise InvalidRequest("Invalid parameter nonce: up to 64 hex digits")
        nonce_value = None if nonce is None else int(nonce, 16)
        token = self._csc.timestamps.stamp(caller.client.id, digest, algorithm, nonce_value)
        return {"timestamp": b64(token.dump())}


RESOURCES: dict[str, type[CscResource]] = {
    "info": InfoResource,
    "auth/login": LoginResource,
    "auth/revoke": RevokeResource,
    "oauth2/token": OAuthTokenResource,
    "credentials/list": CredentialsListResource,
    "credentials/info": CredentialsInfoResource,
    "credentials/authorize": AuthorizeResource,
    "signatures/signHash": SignHashResource,
    "signatures/signDoc": SignDocResource,
    "signatures/timestamp": TimestampResource,
}


def served(version: CscVersion) -> dict[str, type[CscResource]]:
    """The resources of ``version``, by CSC method name."""
    return {name: cls for name, cls in RESOURCES.items() if not (cls.v2_only and version.is_v1)}


def methods(version: CscVersion) -> list[str]:
    """What ``info`` lists: the API methods, without info itself and the OAuth2 endpoints."""
    return [name for name in served(version) if name != "info" and not name.startswith("oauth2/")]
