"""Public, read-only facts about the box: is it able to sign, and with which certificate."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import falcon
from asn1crypto import pem

from hsm import KeyNotFound, Token, TokenError, TokenStatus, TokenUnavailable

from ..signing.clock import ClockWatch
from ..signing.token_signer import TokenSigner

PROBE_TTL_S = 1.0  # monitors poll health from many places; the token is asked at most this often


def _probe(token: Token, key_label: str) -> str:
    """Ask the token for the signing key: proves a session, the login and the key are there."""
    try:
        token.key(key_label)
    except KeyNotFound:
        return "signing_key_missing"
    except TokenUnavailable:
        return "token_unavailable"
    except TokenError:
        return "token_error"
    return "ok"


def _token_report(status: TokenStatus) -> dict[str, object]:
    if status.state == "ok":
        return {"state": "ok"}
    down_for = time.monotonic() - status.since if status.since is not None else 0.0
    return {"state": status.state, "reason": status.reason, "unavailable_for_s": round(down_for, 1)}


class HealthResource:
    """Can the box sign now? 200 if so, 503 with the token's state and the reason if not.

    The answer comes from a probe of the token, cached for ``PROBE_TTL_S`` unless the token's
    state changed meanwhile. While the token is away a probe is also a reconnection attempt
    (rate-limited by the token), so a polled health check brings signing back as a request would.
    """

    public = True

    def __init__(self, token: Token, signer: TokenSigner, clock: ClockWatch,
                 parts: dict[str, Callable[[], dict[str, object]]] | None = None) -> None:
        self._token = token
        self._clock = clock
        self._parts = parts if parts is not None else {}
        self._key_label = signer.key_label
        self._lock = threading.Lock()
        self._probed_at = float("-inf")
        self._outcome = "ok"
        self._seen: TokenStatus | None = None

    def _check(self) -> tuple[str, TokenStatus]:
        with self._lock:
            fresh = time.monotonic() - self._probed_at < PROBE_TTL_S
            if not fresh or self._token.status() is not self._seen:
                self._outcome = _probe(self._token, self._key_label)
                self._seen = self._token.status()
                self._probed_at = time.monotonic()
            assert self._seen is not None
            return self._outcome, self._seen

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        outcome, status = self._check()
        clock = self._clock.status()
        if outcome == "ok" and not clock["ok"]:
            outcome = "clock_skewed"  # the token could sign, but the box refuses to (see signing.clock)
        resp.status = falcon.HTTP_200 if outcome == "ok" else falcon.HTTP_503
        resp.media = {
            "status": outcome,
            "token_present": status.state == "ok" or outcome == "signing_key_missing",
            "token": _token_report(status),
            "clock": clock,
            # Parts of the box beside the signing path (the admin console's front): reported, but
            # they do not make the signing API unhealthy.
            **{name: report() for name, report in self._parts.items()},
        }


class CertificateResource:
    """The signing certificate chain, leaf first, as PEM (clients embed it or pin it)."""

    public = True

    def __init__(self, signer: TokenSigner) -> None:
        cert = signer.signing_cert
        assert cert is not None  # a TokenSigner is built from its certificate
        chain = [cert, *(c for c in signer.cert_registry if c != cert)]
        self._pem = b"".join(pem.armor("CERTIFICATE", c.dump()) for c in chain)
        self._subject = cert.subject.human_friendly
        self._serial = signer.cert_serial

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        if req.client_accepts("application/pem-certificate-chain") and not req.client_accepts_json:
            resp.content_type = "application/pem-certificate-chain"
            resp.data = self._pem
            return
        resp.media = {"subject": self._subject, "serial": self._serial, "chain_pem": self._pem.decode()}
