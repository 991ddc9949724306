"""Revocation data (OCSP, CRL) for the box's certificates, fetched once and cached until stale.

Two jobs: (1) a ValidationContext whose fetchers share one process-wide cache, so B-LT signing
is not one OCSP/CRL round trip per signature; (2) `collect`, which validates a certificate path
in hard-fail mode and returns exactly the certificates, CRLs and OCSP responses that proved it —
the LTV data a PDF's DSS or a CAdES B-LT needs. Hard-fail is the point: if revocation data
cannot be had, no one gets a signature that claims B-LT.

``[revocation]`` of box.toml (ocsp_urls, crl_urls) names responders and CRLs asked instead of
those the certificates name, for a box that reaches its CA only through an internal mirror.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeAlias

from asn1crypto import cms, crl, ocsp, x509
from pyhanko_certvalidator import CertificateValidator, ValidationContext
from pyhanko_certvalidator.authority import Authority
from pyhanko_certvalidator.errors import PathBuildingError, PathValidationError, RevokedError
from pyhanko_certvalidator.fetchers.api import CRLFetcher, Fetchers, OCSPFetcher
from pyhanko_certvalidator.fetchers.common_utils import (
    crl_job_results_as_completed,
    format_ocsp_request,
    ocsp_job_get_earliest,
)
from pyhanko_certvalidator.fetchers.requests_fetchers import RequestsFetcherBackend
from pyhanko_certvalidator.fetchers.requests_fetchers.crl_client import RequestsCRLFetcher
from pyhanko_certvalidator.fetchers.requests_fetchers.ocsp_client import RequestsOCSPFetcher

# Revocation data without a nextUpdate is reused for at most this long.
DEFAULT_TTL_S = 300.0


# What pyHanko-certvalidator's fetchers are asked about.
_Certificate: TypeAlias = x509.Certificate | cms.AttributeCertificateV2


class RevocationUnavailable(RuntimeError):
    """Revocation data for a certificate on the path could not be obtained or did not validate."""


class CertificateRevoked(RuntimeError):
    """A certificate on the signing path is revoked: the box must not sign with it."""


@dataclass
class ValidationData:
    """What a verifier needs to check a signature's certificates long after they expire."""

    certificates: list[x509.Certificate] = field(default_factory=list)
    crls: list[crl.CertificateList] = field(default_factory=list)
    ocsps: list[ocsp.OCSPResponse] = field(default_factory=list)


class RevocationCache:
    """Process-wide store of fetched revocation data, each entry kept until its nextUpdate."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, Any], tuple[float, Any]] = {}

    def get(self, key: tuple[str, Any]) -> Any | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[0] <= self._clock():
                self._entries.pop(key, None)
                return None
            return entry[1]

    def put(self, key: tuple[str, Any], value: Any, next_update: datetime | None) -> None:
        now = self._clock()
        expires = now + DEFAULT_TTL_S
        if next_update is not None:
            expires = min(expires, next_update.timestamp()) if next_update.timestamp() > now else now
        if expires > now:
            with self._lock:
                self._entries[key] = (expires, value)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def _ocsp_next_update(response: ocsp.OCSPResponse) -> datetime | None:
    single = response["response_bytes"]["response"].parsed["tbs_response_data"]["responses"][0]
    value = single["next_update"].native
    return value.astimezone(UTC) if value else None


def _crl_next_update(crls: Iterable[crl.CertificateList]) -> datetime | None:
    updates = [c["tbs_cert_list"]["next_update"].native for c in crls]
    updates = [u for u in updates if u is not None]
    return min(updates) if updates else None


class _CachingOCSPFetcher(OCSPFetcher):
    def __init__(self, inner: OCSPFetcher, cache: RevocationCache) -> None:
        self._inner, self._cache = inner, cache
        self._fetched: dict[Any, ocsp.OCSPResponse] = {}

    async def fetch(self, cert: _Certificate, authority: Authority) -> ocsp.OCSPResponse:
        key = ("ocsp", cert.issuer_serial)
        response = self._cache.get(key)
        if response is None:
            response = await self._inner.fetch(cert, authority)
            self._cache.put(key, response, _ocsp_next_update(response))
        self._fetched[cert.issuer_serial] = response
        return response

    def fetched_responses(self) -> Iterable[ocsp.OCSPResponse]:
        return list(self._fetched.values())

    def fetched_responses_for_cert(self, cert: _Certificate) -> Iterable[ocsp.OCSPResponse]:
        response = self._fetched.get(cert.issuer_serial)
        return [response] if response is not None else []


class _CachingCRLFetcher(CRLFetcher):
    def __init__(self, inner: CRLFetcher, cache: RevocationCache) -> None:
        self._inner, self._cache = inner, cache
        self._fetched: dict[Any, list[crl.CertificateList]] = {}

    async def fetch(self, cert: _Certificate, *, use_deltas: bool | None = None) -> Iterable[crl.CertificateList]:
        key = ("crl", cert.issuer_serial)
        crls = self._cache.get(key)
        if crls is None:
            crls = list(await self._inner.fetch(cert, use_deltas=use_deltas))
            self._cache.put(key, crls, _crl_next_update(crls))
        self._fetched[cert.issuer_serial] = crls
        return crls

    def fetched_crls(self) -> Iterable[crl.CertificateList]:
        unique: dict[bytes, crl.CertificateList] = {}
        for crls in self._fetched.values():
            for item in crls:
                unique[item.dump()] = item
        return list(unique.values())

    def fetched_crls_for_cert(self, cert: _Certificate) -> Iterable[crl.CertificateList]:
        return self._fetched[cert.issuer_serial]


class _ConfiguredOCSPFetcher(RequestsOCSPFetcher):
    """Asks the responders of [revocation] ocsp_urls (the first good answer wins), not the certificate's."""

    def __init__(self, urls: tuple[str, ...], timeout_s: float) -> None:
        super().__init__(per_request_timeout=timeout_s)
        self._urls = urls

    async def _fetch(self, cert: _Certificate, authority: Authority) -> ocsp.OCSPResponse:
        request = format_ocsp_request(cert, authority, certid_hash_algo=self.certid_hash_algo,
                                      request_nonces=self.request_nonces)
        # pyHanko-certvalidator leaves both unannotated
        jobs = (self._fetch_single(url, request) for url in self._urls)  # type: ignore[no-untyped-call]
        response: ocsp.OCSPResponse = await ocsp_job_get_earliest(jobs)  # type: ignore[no-untyped-call]
        return response


class _ConfiguredCRLFetcher(RequestsCRLFetcher):
    """Fetches the CRLs of [revocation] crl_urls, not the certificate's distribution points."""

    def __init__(self, urls: tuple[str, ...], timeout_s: float) -> None:
        super().__init__(per_request_timeout=timeout_s)  # type: ignore[no-untyped-call]  # unannotated upstream
        self._urls = urls

    async def _fetch(self, cert: x509.Certificate, *, use_deltas: bool | None) -> AsyncIterator[crl.CertificateList]:
        # pyHanko-certvalidator leaves both unannotated
        jobs = (self._fetch_single(url) for url in self._urls)  # type: ignore[no-untyped-call]
        async for fetched in crl_job_results_as_completed(jobs):  # type: ignore[no-untyped-call]
            yield fetched


class RevocationService:
    def __init__(
        self,
        trust_roots: list[x509.Certificate],
        cache: RevocationCache | None = None,
        timeout_s: float = 10.0,
        ocsp_urls: tuple[str, ...] = (),
        crl_urls: tuple[str, ...] = (),
    ) -> None:
        self._trust_roots = trust_roots
        self._cache = cache or RevocationCache()
        self._backend = RequestsFetcherBackend(per_request_timeout=timeout_s)
        self._timeout_s = timeout_s
        self._ocsp_urls, self._crl_urls = ocsp_urls, crl_urls

    @property
    def trust_roots(self) -> list[x509.Certificate]:
        return self._trust_roots

    def with_trust_roots(self, trust_roots: list[x509.Certificate]) -> RevocationService:
        """A service for other roots (the certificate directory's) sharing this one's cache.

        The [revocation] URLs are not carried over: they stand in for the box's own CA, whose
        mirror need not know other CAs; certificates under other roots are checked where they say.
        """
        return RevocationService(trust_roots, self._cache, self._timeout_s)

    def validation_context(
        self, other_certs: Iterable[x509.Certificate] = (), crls: Iterable[crl.CertificateList] = ()
    ) -> ValidationContext:
        """A hard-fail context whose fetchers go through the shared cache.

        ``crls``: CRLs the box has at hand (its signer CA's own); they are used before any fetch
        and, like everything the context holds, go into a B-LT signature's DSS.
        """
        inner = self._backend.get_fetchers()
        ocsp_fetcher = _ConfiguredOCSPFetcher(self._ocsp_urls, self._timeout_s) if self._ocsp_urls else inner.ocsp_fetcher
        crl_fetcher = _ConfiguredCRLFetcher(self._crl_urls, self._timeout_s) if self._crl_urls else inner.crl_fetcher
        fetchers = Fetchers(
            ocsp_fetcher=_CachingOCSPFetcher(ocsp_fetcher, self._cache),
            crl_fetcher=_CachingCRLFetcher(crl_fetcher, self._cache),
            cert_fetcher=inner.cert_fetcher,
        )
        return ValidationContext(
            trust_roots=self._trust_roots,
            other_certs=list(other_certs),
            crls=list(crls),
            allow_fetching=True,
            fetchers=fetchers,
            revocation_mode="hard-fail",
        )

    async def collect(
        self, paths: list[tuple[x509.Certificate, list[x509.Certificate]]]
    ) -> ValidationData:
        """Validate each (leaf, intermediates) and return the data that proved it.

        Raises CertificateRevoked or RevocationUnavailable; never returns partial data.
        """
        context = self.validation_context()
        data = ValidationData()
        seen: set[bytes] = set()
        for leaf, intermediates in paths:
            validator = CertificateValidator(leaf, intermediate_certs=intermediates, validation_context=context)
            try:
                # pyHanko-certvalidator leaves it unannotated
                path = await validator.async_validate_usage(key_usage=set())  # type: ignore[no-untyped-call]
            except RevokedError as exc:
                raise CertificateRevoked(f"certificate {leaf.subject.human_friendly!r} is revoked") from exc
            except (PathBuildingError, PathValidationError) as exc:
                raise RevocationUnavailable(
                    f"cannot establish revocation status of {leaf.subject.human_friendly!r}: {exc}"
                ) from exc
            for cert in path:
                if cert.dump() not in seen:
                    seen.add(cert.dump())
                    data.certificates.append(cert)
        data.crls = list(context.crls)
        data.ocsps = list(context.ocsps)
        return data
