"""Can the box reach its TSAs, OCSP responders and CRLs? Probed for real, cached briefly.

Each probe is the request the signing service makes: a timestamp request to each TSA, an OCSP
request for each certificate of the signing chain to the responder it names, a download of each
CRL it names. Results (reachable or not, latency, what went wrong) are cached for `ttl_s`, so
the dashboard costs at most one round of probes a minute; probes run in parallel with a short
timeout.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

import requests
from asn1crypto import algos, crl, ocsp, tsp, x509


@dataclass(frozen=True)
class ProbeResult:
    kind: str  # "TSA", "OCSP", "CRL"
    url: str
    ok: bool
    latency_ms: float | None
    detail: str
    checked_at: float


def _tsa(url: str, timeout: float) -> str:
    request = tsp.TimeStampReq({
        "version": "v1",
        "message_imprint": {"hash_algorithm": {"algorithm": "sha256"},
                            "hashed_message": hashlib.sha256(os.urandom(16)).digest()},
        "nonce": int.from_bytes(os.urandom(8), "big"),
        "cert_req": False,
    })
    response = requests.post(url, data=request.dump(), timeout=timeout,
                             headers={"Content-Type": "application/timestamp-query"})
    response.raise_for_status()
    status = tsp.TimeStampResp.load(response.content)["status"]["status"].native
    if status not in ("granted", "granted_with_mods"):
        raise ValueError(f"TSA answered {status}")
    return "timestamp granted"


def _ocsp_request(cert: x509.Certificate, issuer: x509.Certificate) -> bytes:
    cert_id = ocsp.CertId({
        "hash_algorithm": algos.DigestAlgorithm({"algorithm": "sha1"}),
        "issuer_name_hash": hashlib.sha1(cert.issuer.dump()).digest(),
        "issuer_key_hash": hashlib.sha1(issuer.public_key["public_key"].contents[1:]).digest(),
        "serial_number": cert.serial_number,
    })
    request: bytes = ocsp.OCSPRequest({"tbs_request": {"request_list": [{"req_cert": cert_id}]}}).dump()
    return request


def _ocsp(url: str, body: bytes, timeout: float) -> str:
    response = requests.post(url, data=body, timeout=timeout, headers={"Content-Type": "application/ocsp-request"})
    response.raise_for_status()
    status = ocsp.OCSPResponse.load(response.content)["response_status"].native
    if status != "successful":
        raise ValueError(f"responder answered {status}")
    return "response successful"


def _crl(url: str, timeout: float) -> str:
    response = requests.get(url, timeout=timeout)
    response.raise_for_status()
    listed = crl.CertificateList.load(response.content)
    return f"{len(listed['tbs_cert_list']['revoked_certificates'] or [])} revoked"


Probe = tuple[str, str, Callable[[], str]]  # kind, url, the request (returns what the service answered)


def probe_plan(chain: list[x509.Certificate], tsa_urls: list[str], timeout: float,
               ocsp_urls: tuple[str, ...] = (), crl_urls: tuple[str, ...] = ()) -> list[Probe]:
    """(kind, url, zero-argument callable) for every service the signing path depends on.

    ``ocsp_urls``/``crl_urls`` are box.toml's [revocation]: set, the signing service asks them
    instead of the responders and CRLs the certificates name, so they are what is probed, each
    OCSP responder with a request for the box's own certificate.
    """
    plan: list[Probe] = [("TSA", url, partial(_tsa, url, timeout)) for url in tsa_urls]
    seen: set[tuple[str, str]] = set()
    for number, (cert, issuer) in enumerate(itertools.pairwise(chain)):
        for url in (ocsp_urls if number == 0 else ()) if ocsp_urls else cert.ocsp_urls:
            body = _ocsp_request(cert, issuer)
            if ("OCSP", url) not in seen:
                seen.add(("OCSP", url))
                plan.append(("OCSP", url, partial(_ocsp, url, body, timeout)))
        for url in crl_urls or [point.url for point in cert.crl_distribution_points]:
            if url and ("CRL", url) not in seen:
                seen.add(("CRL", url))
                plan.append(("CRL", url, partial(_crl, url, timeout)))
    return plan


class Prober:
    def __init__(self, ttl_s: float = 60.0, timeout_s: float = 3.0, clock: Callable[[], float] = time.time) -> None:
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self._clock = clock
        self._lock = threading.Lock()
        self._cached: tuple[float, tuple[tuple[bytes, ...], tuple[str, ...]], list[ProbeResult]] | None = None

    def results(self, chain: list[x509.Certificate], tsa_urls: list[str], ocsp_urls: tuple[str, ...] = (),
                crl_urls: tuple[str, ...] = ()) -> list[ProbeResult]:
        key = (tuple(c.sha256 for c in chain), (*tsa_urls, "|", *ocsp_urls, "|", *crl_urls))
        with self._lock:
            cached = self._cached
            if cached and cached[1] == key and cached[0] > self._clock() - self.ttl_s:
                return cached[2]
            results = self._run(probe_plan(chain, tsa_urls, self.timeout_s, ocsp_urls, crl_urls))
            self._cached = (self._clock(), key, results)
            return results

    def _run(self, plan: list[Probe]) -> list[ProbeResult]:
        def one(item: Probe) -> ProbeResult:
            kind, url, call = item
            start = time.perf_counter()
            try:
                detail = call()
                return ProbeResult(kind, url, True, (time.perf_counter() - start) * 1000, detail, self._clock())
            except Exception as exc:  # any failure is the answer: unreachable, refused, garbage
                return ProbeResult(kind, url, False, None, f"{type(exc).__name__}: {exc}"[:200], self._clock())

        if not plan:
            return []
        with ThreadPoolExecutor(max_workers=min(8, len(plan))) as pool:
            return list(pool.map(one, plan))
