"""``signatures/timestamp``: an RFC 3161 token for a client's hash from the box's TSAs, as a metered call.

A timestamp costs the box a TSA request (often a paid one), so it is metered like a signature:
admitted against the client's quota and rates before any TSA is asked, then recorded in the audit
log and charged in the same transaction before the token is released (a refused charge releases
nothing). Usage reports list it under the endpoint ``timestamp``.

The CSC client may send its own nonce, which must come back in the token (so it can tell the
token was made for its request), so the request is built here rather than by pyHanko's
``TimeStamper.async_timestamp``, which always picks the nonce itself. The box's FallbackTimeStamper
still sends it (trying each TSA in turn), and its response check applies (token_from_response: the
status, and the nonce, compared by the box since pyHanko's own comparison fails with an AttributeError).
"""

from __future__ import annotations

import asyncio
import secrets

from asn1crypto import algos, cms, tsp
from pyhanko.sign.timestamps.api import TimeStamper

from hsm import check_digest

from ..signing.timestamps import TimestampUnavailable, token_from_response
from ..store.ledger import SignatureLedger


class TimestampService:
    def __init__(self, timestamper: TimeStamper | None, ledger: SignatureLedger) -> None:
        self._timestamper = timestamper
        self._ledger = ledger

    def stamp(self, client_id: str, digest: bytes, hash_algorithm: str, nonce: int | None = None) -> cms.ContentInfo:
        """A timestamp token over ``digest``, charged to the client; raises metering.Refusal, or
        TimestampUnavailable when no TSA delivers one (nothing is charged then)."""
        check_digest(digest, hash_algorithm)
        timestamper = self._timestamper
        if timestamper is None:
            raise TimestampUnavailable("no TSA is configured")
        self._ledger.admit(client_id, 1)
        token = _request(timestamper, digest, hash_algorithm, secrets.randbits(64) if nonce is None else nonce)
        info = token["content"]["encap_content_info"]["content"].parsed
        self._ledger.record_timestamp(client_id, {
            "kind": "timestamp", "hash_algorithm": hash_algorithm, "document_hash": digest.hex(),
            "tsa_serial": format(info["serial_number"].native, "X"), "gen_time": info["gen_time"].native.isoformat(),
        })
        return token


def _request(timestamper: TimeStamper, digest: bytes, hash_algorithm: str, nonce: int) -> cms.ContentInfo:
    request = tsp.TimeStampReq(
        {
            "version": 1,
            "message_imprint": {
                "hash_algorithm": algos.DigestAlgorithm({"algorithm": hash_algorithm}),
                "hashed_message": digest,
            },
            "nonce": nonce,
            "cert_req": True,
        }
    )
    token = token_from_response(asyncio.run(timestamper.async_request_tsa_response(request)), nonce)
    imprint = token["content"]["encap_content_info"]["content"].parsed["message_imprint"]
    if imprint["hashed_message"].native != digest:
        raise TimestampUnavailable("the TSA stamped another hash than the one sent")
    return token
