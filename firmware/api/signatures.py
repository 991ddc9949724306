"""POST /v1/signatures and /v1/signatures/batch: hash in, detached CMS (+ LTV data) out."""

from __future__ import annotations

import falcon

from ..errors import InvalidRequest
from ..signing.hash_signing import HashSignature, HashSigningService, HashSignRequest
from ..signing.levels import Level, Profile, parse_enum
from .bodies import b64, b64decode, field, read_json


def _options(body: dict, default_level: str) -> tuple[str, Level, Profile]:
    algorithm = field(body, "hash_algorithm", str)
    level = parse_enum(Level, field(body, "level", str, default=default_level), "level")
    profile = parse_enum(Profile, field(body, "profile", str, default="PAdES"), "profile")
    return algorithm, level, profile


def _serialize(signature: HashSignature) -> dict:
    out = {
        "signature": b64(signature.cms.dump()),
        "level": signature.level.value,
        "profile": signature.profile.value,
    }
    if signature.validation_data is not None:
        data = signature.validation_data
        out["validation_info"] = {
            "certificates": [b64(c.dump()) for c in data.certificates],
            "crls": [b64(c.dump()) for c in data.crls],
            "ocsps": [b64(o.dump()) for o in data.ocsps],
        }
    return out


class _HashSigningResource:
    """What the single and the batch endpoint share: options, signing, the 201 response."""

    scope = "hash"

    def __init__(self, service: HashSigningService, default_level: str) -> None:
        """``default_level``: the level of requests that name none ([signing] default_level)."""
        self._service = service
        self._default_level = default_level if default_level != Level.B_LTA.value else Level.B_LT.value

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_json(req)
        algorithm, level, profile = _options(body, self._default_level)
        requests = [HashSignRequest(algorithm, digest, level, profile) for digest in self._digests(body)]
        signatures = self._service.sign(req.context.client.id, requests)
        resp.status = falcon.HTTP_201
        resp.media = self._response([_serialize(s) for s in signatures])

    def _digests(self, body: dict) -> list[bytes]:
        raise NotImplementedError

    def _response(self, signatures: list[dict]) -> dict:
        raise NotImplementedError


class SignatureResource(_HashSigningResource):
    def _digests(self, body: dict) -> list[bytes]:
        return [b64decode(field(body, "hash", str), "hash")]

    def _response(self, signatures: list[dict]) -> dict:
        return signatures[0]


class SignatureBatchResource(_HashSigningResource):
    """Many hashes in one call, for bulk jobs such as a month's bills."""

    def _digests(self, body: dict) -> list[bytes]:
        hashes = field(body, "hashes", list)
        for index, value in enumerate(hashes):
            if not isinstance(value, str):
                raise InvalidRequest(f"hashes[{index}] must be a base64 string, not {type(value).__name__}")
        return [b64decode(h, f"hashes[{i}]") for i, h in enumerate(hashes)]

    def _response(self, signatures: list[dict]) -> dict:
        return {"signatures": signatures}
