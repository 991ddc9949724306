"""The signature on a webhook: HMAC-SHA256 over a timestamp and the body, in one header.

``Esignbox-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>``. The timestamp
is inside the MAC, so a receiver that refuses timestamps older than a few minutes refuses a
captured request replayed later; within that window it dedupes on ``Esignbox-Event-Id``. The
scheme is the one receivers already know from other services' webhooks, and it needs nothing but
hmac and hashlib to check (README shows the receiver's few lines). ``t`` is taken at each attempt,
so a retry hours later still verifies.
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["EVENT_ID_HEADER", "SIGNATURE_HEADER", "signature_header", "verify"]

SIGNATURE_HEADER = "Esignbox-Signature"
EVENT_ID_HEADER = "Esignbox-Event-Id"


def _mac(secret: bytes, timestamp: int, body: bytes) -> str:
    return hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def signature_header(secret: bytes, timestamp: int, body: bytes) -> str:
    """The value of Esignbox-Signature for ``body`` sent at ``timestamp``."""
    return f"t={timestamp},v1={_mac(secret, timestamp, body)}"


def verify(secret: bytes, header: str, body: bytes, now: float, tolerance_s: int = 300) -> bool:
    """Whether ``header`` signs ``body`` with ``secret`` at a time within ``tolerance_s`` of ``now``;
    a malformed header is simply not a valid one."""
    fields = dict(part.strip().partition("=")[::2] for part in header.split(","))
    try:
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    given = fields.get("v1", "")
    return abs(now - timestamp) <= tolerance_s and hmac.compare_digest(_mac(secret, timestamp, body), given)
