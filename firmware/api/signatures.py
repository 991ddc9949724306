"""POST /v1/signatures and /v1/signatures/batch: hash in, detached CMS (+ LTV data) out."""

from __future__ import annotations

import falcon

from ..signing.hash_signing import HashSignature, HashSigningService, HashSignRequest
from ..signing.levels import Level, Profile
from .bodies import b64, read_json
from .schema import hash_body, read_body


def _serialize(signature: HashSignature) -> dict[str, object]:
    out: dict[str, object] = {
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
    """What the single and the batch endpoint share: the body's schema, signing, the 201 response."""

    scope = "hash"
    batch = False

    def __init__(self, service: HashSigningService, default_level: str) -> None:
        """``default_level``: the level of requests that name none ([signing] default_level)."""
        self._service = service
        self._schema = hash_body(Level(default_level), self.batch)

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_body(self._schema, read_json(req))
        level, profile = Level(body["level"]), Profile(body["profile"])
        digests = body["hashes"] if self.batch else [body["hash"]]
        requests = [HashSignRequest(body["hash_algorithm"], digest, level, profile) for digest in digests]
        signatures = [_serialize(s) for s in self._service.sign(req.context.client.id, requests)]
        resp.status = falcon.HTTP_201
        resp.media = {"signatures": signatures} if self.batch else signatures[0]


class SignatureResource(_HashSigningResource):
    """One hash, one signature."""


class SignatureBatchResource(_HashSigningResource):
    """Many hashes in one call, for bulk jobs such as a month's bills."""

    batch = True
