"""``signatures/timestamp``: an RFC 3161 token for a client's hash from the box's TSAs.

The CSC client may send its own nonce, which must come back in the token (so it can tell the
token was made for its request), so the request is built here rather than by pyHanko's
``TimeStamper.async_timestamp``, which always picks the nonce itself. The box's FallbackTimeStamper
still sends it (trying each TSA in turn), and pyHanko's response check still applies.
"""

from __future__ import annotations

import asyncio
import secrets

from asn1crypto import algos, cms, tsp
from pyhanko.sign.timestamps.api import TimeStamper
from pyhanko.sign.timestamps.common_utils import TimestampRequestError, handle_tsp_response

from hsm import check_digest

from ..signing.timestamps import TimestampUnavailable


def timestamp_token(
    timestamper: TimeStamper | None, digest: bytes, hash_algorithm: str, nonce: int | None = None
) -> cms.ContentInfo:
    """A timestamp token over ``digest``; raises TimestampUnavailable when no TSA delivers one."""
    check_digest(digest, hash_algorithm)
    if timestamper is None:
        raise TimestampUnavailable("no TSA is configured")
    nonce = secrets.randbits(64) if nonce is None else nonce
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
    response = asyncio.run(timestamper.async_request_tsa_response(request))
    try:
        token = handle_tsp_response(response, nonce)
    except TimestampRequestError as exc:
        raise TimestampUnavailable(f"timestamp refused: {exc}") from exc
    imprint = token["content"]["encap_content_info"]["content"].parsed["message_imprint"]
    if imprint["hashed_message"].native != digest:
        raise TimestampUnavailable("the TSA stamped another hash than the one sent")
    return token
