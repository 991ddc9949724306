"""Posting queued events to the business system: one HTTP POST per attempt, signed afresh.

2xx is delivered. Anything else is a failed attempt that counts toward ``max_attempts``: 4xx and
5xx alike (a receiver that is being redeployed answers 404 or 502 for a while), and 3xx too,
because a redirect is not followed: the URL was fixed when the envelope was made, and following
a Location would post signed contract data to a place nobody checked. The answer's body is read
up to 64 KiB (a receiver cannot make the box read without end) and only for the error message.
HTTP goes through `requests`, so the [outbound] proxy applies (firmware/outbound.py).

A receiver that is down never blocks an envelope: the contract's state change committed with its
event, and only the event waits here.

Where the box connects is checked at the connection itself (`_CheckedConnection`): the host name
is resolved there, every address it resolves to is checked with `destination_refusal`, and the
socket is opened to the checked address — the name is not looked up a second time, so a name that
answers a LAN address to a check and 127.0.0.1 to the connection (DNS rebinding) has no second
answer to give. A refused destination is a failed attempt like any other (last_error says why,
retried, then given up and audited): it never blocks the envelope. Through the [outbound] proxy
the proxy resolves and connects, from its own host, under the organisation's policy; the box's
own loopback is out of its reach.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from ..config import WebhookSettings
from ..store import Database
from .queue import Claimed, WebhookQueue
from .signature import EVENT_ID_HEADER, SIGNATURE_HEADER, signature_header
from .urls import destination_refusal

__all__ = ["MAX_ANSWER_BYTES", "DeliveryFailed", "DestinationRefused", "WebhookSender", "post_event"]

log = logging.getLogger(__name__)

MAX_ANSWER_BYTES = 64 * 1024
# How long a claimed event is left to its sender before another may take it over: well past one
# attempt's worst case (connect, send, the answer's head, its body within 2 timeouts), or a slow
# receiver could get the event twice.
_LEASE_TIMEOUTS = 6


class DeliveryFailed(Exception):
    """The receiver did not answer 2xx (or not at all); the message says what happened."""


class DestinationRefused(Exception):
    """The host resolves to an address the box must not post to. Not an OSError: urllib3 and
    requests let it through unwrapped, so the message reaches last_error as written."""


def _checked_addresses(host: str, port: int, allow_loopback: bool) -> list[str]:
    """The addresses ``host`` resolves to, in the resolver's order, once every one is allowed."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return [host]  # the connection reports the failed lookup as usual
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    for address in addresses:
        refusal = destination_refusal(address, allow_loopback)
        if refusal is not None:
            raise DestinationRefused(f"destination refused: {host} resolves to {refusal}")
    return addresses


def _checked(base: type[HTTPConnection], allow_loopback: bool) -> type[HTTPConnection]:
    class Checked(base):  # type: ignore[valid-type, misc]
        """Connects only to checked addresses, each tried in turn as a plain connection would; TLS
        still verifies the certificate for the URL's host (``self.host``, not the address)."""

        def _new_conn(self) -> socket.socket:
            addresses = _checked_addresses(self._dns_host, self.port, allow_loopback)  # type: ignore[has-type]
            for address in addresses[:-1]:
                self._dns_host = address
                try:
                    return super()._new_conn()  # type: ignore[no-any-return]
                except (NewConnectionError, ConnectTimeoutError):
                    continue
            self._dns_host = addresses[-1]
            return super()._new_conn()  # type: ignore[no-any-return]

    return Checked


class _CheckedAdapter(HTTPAdapter):
    """requests' adapter whose direct connections are `_checked`."""

    def __init__(self, allow_loopback: bool) -> None:
        self._allow_loopback = allow_loopback
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        http = type("CheckedPool", (HTTPConnectionPool,),
                    {"ConnectionCls": _checked(HTTPConnection, self._allow_loopback)})
        https = type("CheckedTlsPool", (HTTPSConnectionPool,),
                     {"ConnectionCls": _checked(HTTPSConnection, self._allow_loopback)})
        self.poolmanager.pool_classes_by_scheme = {"http": http, "https": https}


def post_event(url: str, headers: dict[str, str], body: bytes, timeout_s: float, allow_loopback: bool) -> None:
    """One POST; returns on a 2xx answer, else raises DeliveryFailed."""
    with requests.Session() as session:
        adapter = _CheckedAdapter(allow_loopback)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        try:
            with session.post(url, data=body, headers=headers, timeout=(timeout_s, timeout_s), allow_redirects=False,
                              stream=True) as response:
                answer = _bounded_answer(response, time.monotonic() + 2 * timeout_s)
        except DestinationRefused as exc:
            raise DeliveryFailed(str(exc)) from exc
        except requests.RequestException as exc:
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from exc
    status = response.status_code
    if 200 <= status < 300:
        return
    if 300 <= status < 400:
        raise DeliveryFailed(f"HTTP {status}: redirect to {response.headers.get('Location', '?')} not followed")
    raise DeliveryFailed(f"HTTP {status}: {answer[:200].decode(errors='replace')}")


def _bounded_answer(response: requests.Response, deadline: float) -> bytes:
    answer = b""
    for chunk in response.iter_content(8192):
        answer += chunk
        if len(answer) >= MAX_ANSWER_BYTES or time.monotonic() > deadline:
            break
    return answer[:MAX_ANSWER_BYTES]


class WebhookSender:
    """Delivers due events: ``deliver_due`` once, or a daemon thread (``start``) that polls every
    ``poll_s`` seconds and at once on ``wake``. Several senders, in threads or worker processes,
    may run on one database: each event is claimed by one of them at a time."""

    def __init__(self, db: Database, settings: WebhookSettings, clock: Callable[[], float] = time.time,
                 poll_s: float = 5.0) -> None:
        self._queue = WebhookQueue(db)
        self._settings = settings
        self._clock = clock
        self._poll_s = poll_s
        self._lease_s = _LEASE_TIMEOUTS * settings.timeout_seconds
        self._wakeup = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="webhook-sender", daemon=True)

    def deliver_due(self) -> int:
        """Attempt every event due now, each once; the number of attempts made."""
        attempts = 0
        while (item := self._queue.claim(self._lease_s, self._clock())) is not None:
            attempts += 1
            self._attempt(item)
        return attempts

    def _attempt(self, item: Claimed) -> None:
        headers = {"Content-Type": "application/json", EVENT_ID_HEADER: item.id,
                   SIGNATURE_HEADER: signature_header(item.secret, int(self._clock()), item.body)}
        try:
            post_event(item.url, headers, item.body, self._settings.timeout_seconds, self._settings.allow_loopback)
        except DeliveryFailed as exc:
            again = self._queue.retry_or_fail(item, str(exc), self._settings, self._clock())
            log.warning("webhook %s to %s not delivered (%s): %s", item.id, item.host,
                        "will retry" if again else "given up", exc)
            return
        if not self._queue.delivered(item):
            log.warning("webhook %s to %s delivered after its lease ran out; another sender has it", item.id, item.host)

    def wake(self) -> None:
        """Deliver now (call after committing an `enqueue`) rather than at the next poll."""
        self._wakeup.set()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wakeup.set()
        self._thread.join(timeout=self._lease_s)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wakeup.clear()
            try:
                self.deliver_due()
            except Exception:  # the database or a bug: log it and keep the thread alive for the next round
                log.exception("webhook delivery round failed")
            self._wakeup.wait(self._poll_s)
