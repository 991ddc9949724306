"""RFC 3161 timestamps from a list of TSAs, tried in order.

One TSA being down must not stop the box from producing B-T signatures when another is
configured; when all are down the caller gets TimestampUnavailable and no signature is released.
Every answer's genTime is also a reading of the box's clock (see clock.py).

The HTTP exchange runs on a pool of threads kept for the life of the process, over one pool of
connections per timestamper, so connections to a TSA are kept open and reused. pyHanko's
RequestsHTTPTimeStamper, used before, made a new session (and connection) per request on a
thread of the calling event loop's default executor, which each signature's `asyncio.run`
started and stopped: together half a worker's Python time per B-T signature (`make bench
--profile`). The requests still leave the event loop, so the timestamps of a batch overlap.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import requests
from asn1crypto import cms, tsp
from pyhanko.sign.timestamps.api import TimeStamper
from pyhanko.sign.timestamps.common_utils import TimestampRequestError, handle_tsp_response, set_tsp_headers
from requests.adapters import HTTPAdapter

from .clock import ClockWatch

log = logging.getLogger(__name__)

# Timestamp requests in flight at once per process (and connections kept per TSA): a worker's
# waitress threads, each with a batch whose timestamps overlap. Threads start as needed and stay.
_IN_FLIGHT = 32
_EXCHANGES = ThreadPoolExecutor(max_workers=_IN_FLIGHT, thread_name_prefix="tsa")


class TimestampUnavailable(RuntimeError):
    """No configured TSA produced a timestamp."""


def token_from_response(response: tsp.TimeStampResp, nonce: int | None) -> cms.ContentInfo:
    """The timestamp token in a TSA's answer to a request carrying ``nonce``.

    TimestampUnavailable for a refusal, or for a token with another nonce (a replayed or misrouted
    answer). The nonce is compared here: pyHanko's handle_tsp_response, given one, formats its
    mismatch message with ``nonce.hex()`` on the int its own TimeStamper passes, so a wrong nonce
    raised AttributeError (a 500) instead of its TimestampRequestError.
    """
    try:
        token = handle_tsp_response(response, None)  # the status check; the nonce is ours to compare
    except TimestampRequestError as exc:
        raise TimestampUnavailable(f"timestamp refused: {exc}") from exc
    if nonce is not None:
        received = token["content"]["encap_content_info"]["content"].parsed["nonce"].native
        if received != nonce:
            shown = "none" if received is None else f"{received:#x}"
            raise TimestampUnavailable(f"the TSA's token carries another nonce ({shown}) than the request's ({nonce:#x})")
    return token


class FallbackTimeStamper(TimeStamper):
    def __init__(self, urls: list[str], timeout_s: float = 10.0, clock: ClockWatch | None = None) -> None:
        if not urls:
            raise ValueError("at least one TSA URL is needed")
        super().__init__()  # type: ignore[no-untyped-call]  # pyHanko leaves TimeStamper.__init__ unannotated
        self._urls = list(urls)
        self._timeout_s = timeout_s
        self._clock = clock
        # requests' connection pool, shared by the pool threads (urllib3's pools are thread-safe);
        # each thread gets a Session of its own on it (a Session is not), with requests' TLS
        # verification and proxy settings as before
        self._connections = HTTPAdapter(pool_maxsize=_IN_FLIGHT)
        self._sessions = threading.local()

    async def async_request_tsa_response(self, req: tsp.TimeStampReq) -> tsp.TimeStampResp:
        failures = []
        body = req.dump()
        loop = asyncio.get_running_loop()
        for url in self._urls:
            try:
                sent = time.time()
                response = await loop.run_in_executor(_EXCHANGES, self._exchange, url, body)
            except (TimestampRequestError, OSError) as exc:  # requests' errors are OSErrors
                log.warning("TSA %s failed: %s", url, exc)
                failures.append(url)
                continue
            if self._clock is not None and response["status"]["status"].native in ("granted", "granted_with_mods"):
                self._clock.observe(_gen_time(response), sent, time.time(), url)
            return response
        raise TimestampUnavailable(f"no TSA answered (tried {', '.join(failures)})")

    def _exchange(self, url: str, body: bytes) -> tsp.TimeStampResp:
        """One request to one TSA, on a pool thread, over that thread's session."""
        session = getattr(self._sessions, "session", None)
        if session is None:
            session = self._sessions.session = requests.Session()
            for prefix in ("http://", "https://"):
                session.mount(prefix, self._connections)
        answer = session.post(url, data=body, headers=set_tsp_headers({}), timeout=self._timeout_s)
        if answer.headers.get("Content-Type") != "application/timestamp-reply":
            raise TimestampRequestError(f"the TSA answered HTTP {answer.status_code} with no timestamp reply")
        return tsp.TimeStampResp.load(answer.content)

    def probe(self) -> None:
        """One timestamp of nothing in particular, for a fresh clock reading.

        Run in a thread of its own: the caller may be inside a signing request's event loop.
        """
        failure: list[BaseException] = []

        def run() -> None:
            try:
                asyncio.run(self.async_timestamp(os.urandom(32), "sha256"))
            except BaseException as exc:  # handed to the caller below
                failure.append(exc)

        thread = threading.Thread(target=run, name="clock-probe")
        thread.start()
        thread.join()
        if failure:
            raise failure[0]

    async def async_timestamp(self, message_digest: bytes, md_algorithm: str) -> cms.ContentInfo:
        """pyHanko's TimeStamper.async_timestamp, with the answer checked by token_from_response."""
        nonce: int | None
        nonce, request = self.request_cms(message_digest, md_algorithm)  # type: ignore[no-untyped-call]  # unannotated upstream
        return token_from_response(await self.async_request_tsa_response(request), nonce)


def _gen_time(response: tsp.TimeStampResp) -> datetime:
    info = response["time_stamp_token"]["content"]["encap_content_info"]["content"].parsed
    gen_time: datetime = info["gen_time"].native
    return gen_time
