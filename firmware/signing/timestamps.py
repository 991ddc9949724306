"""RFC 3161 timestamps from a list of TSAs, tried in order.

One TSA being down must not stop the box from producing B-T signatures when another is
configured; when all are down the caller gets TimestampUnavailable and no signature is released.
"""

from __future__ import annotations

import logging

from asn1crypto import tsp
from pyhanko.sign.timestamps.api import TimeStamper
from pyhanko.sign.timestamps.common_utils import TimestampRequestError
from pyhanko.sign.timestamps.requests_client import RequestsHTTPTimeStamper

log = logging.getLogger(__name__)


class TimestampUnavailable(RuntimeError):
    """No configured TSA produced a timestamp."""


class FallbackTimeStamper(TimeStamper):
    def __init__(self, urls: list[str], timeout_s: float = 10.0) -> None:
        if not urls:
            raise ValueError("at least one TSA URL is needed")
        super().__init__()
        self._stampers = [RequestsHTTPTimeStamper(url, timeout=timeout_s) for url in urls]

    async def async_request_tsa_response(self, req: tsp.TimeStampReq) -> tsp.TimeStampResp:
        failures = []
        for stamper in self._stampers:
            try:
                return await stamper.async_request_tsa_response(req)
            except (TimestampRequestError, OSError) as exc:
                log.warning("TSA %s failed: %s", stamper.url, exc)
                failures.append(stamper.url)
        raise TimestampUnavailable(f"no TSA answered (tried {', '.join(failures)})")

    async def async_timestamp(self, message_digest: bytes, md_algorithm: str):
        try:
            return await super().async_timestamp(message_digest, md_algorithm)
        except TimestampRequestError as exc:  # a TSA answered, but with a refusal or garbage
            raise TimestampUnavailable(f"timestamp refused: {exc}") from exc
