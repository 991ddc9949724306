"""Outside services fail: TSAs are tried in order, revocation data is served from the cache until
its nextUpdate, and a revoked or unverifiable certificate never yields LTV data."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from asn1crypto import x509

from firmware.certificates import load_certificates
from firmware.signing.revocation import (
    CertificateRevoked,
    RevocationCache,
    RevocationService,
    RevocationUnavailable,
)
from firmware.signing.timestamps import FallbackTimeStamper, TimestampUnavailable

from .support import free_port


def test_second_tsa_is_used_when_the_first_is_down(box_config, pki_server):
    dead = f"http://127.0.0.1:{free_port()}/tsa"
    stamper = FallbackTimeStamper([dead, *box_config.tsa_urls], timeout_s=2)
    token = asyncio.run(stamper.async_timestamp(hashlib.sha256(b"x").digest(), "sha256"))
    assert token["content"]["encap_content_info"]["content_type"].native == "tst_info"


def test_all_tsas_down_is_an_error(box_config, pki_outage):
    stamper = FallbackTimeStamper(box_config.tsa_urls, timeout_s=2)
    with pytest.raises(TimestampUnavailable, match="no TSA answered"):
        asyncio.run(stamper.async_timestamp(hashlib.sha256(b"x").digest(), "sha256"))


@pytest.fixture
def keep_alive_tsa(box_config, pki_server) -> Iterator[tuple[str, list[int]]]:
    """The dev TSA behind an HTTP/1.1 front that keeps connections open, as a real TSA's server
    does (the dev one closes each): its URL, and the number of connections it accepted so far."""
    connections = [0]
    upstream = box_config.tsa_urls[0]

    class Front(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            connections[0] += 1

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            answer = requests.post(upstream, data=body, timeout=30, headers={"Content-Type": self.headers["Content-Type"]})
            self.send_response(answer.status_code)
            self.send_header("Content-Type", answer.headers["Content-Type"])
            self.send_header("Content-Length", str(len(answer.content)))
            self.end_headers()
            self.wfile.write(answer.content)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Front)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/tsa", connections
    server.shutdown()
    server.server_close()


def test_timestamps_reuse_the_connection_to_the_tsa(keep_alive_tsa):
    """One signature after another (an event loop each, as the hash-signing service runs them):
    one TCP connection, not a connection and an HTTP client set-up per timestamp."""
    url, connections = keep_alive_tsa
    stamper = FallbackTimeStamper([url], timeout_s=5)
    for n in range(3):
        token = asyncio.run(stamper.async_timestamp(hashlib.sha256(b"%d" % n).digest(), "sha256"))
        assert token["content"]["encap_content_info"]["content_type"].native == "tst_info"
    assert connections[0] == 1


def _box_path(box_config) -> list[tuple[x509.Certificate, list[x509.Certificate]]]:
    chain = load_certificates(box_config.chain_file)
    return [(chain[0], chain[1:])]


def test_revocation_data_is_served_from_the_cache_during_an_outage(box_config, pki_server):
    service = RevocationService(load_certificates(box_config.trust_roots_file))
    first = asyncio.run(service.collect(_box_path(box_config)))
    assert first.ocsps and first.crls
    pki_server.stop()
    try:
        second = asyncio.run(service.collect(_box_path(box_config)))
        with pytest.raises(RevocationUnavailable):
            cold = RevocationService(load_certificates(box_config.trust_roots_file), timeout_s=2)
            asyncio.run(cold.collect(_box_path(box_config)))
    finally:
        pki_server.start()
    assert [o.dump() for o in second.ocsps] == [o.dump() for o in first.ocsps]
    assert [c.dump() for c in second.crls] == [c.dump() for c in first.crls]


def test_a_revoked_certificate_gives_no_ltv_data(box_config, dev_pki, pki_server):
    revoked = x509.Certificate.load(dev_pki.revoked_signer().cert)
    interm = x509.Certificate.load(dev_pki.intermediate_cert())
    service = RevocationService(load_certificates(box_config.trust_roots_file))
    with pytest.raises(CertificateRevoked):
        asyncio.run(service.collect([(revoked, [interm])]))


def test_cache_entries_expire_at_next_update():
    now = [1_000_000.0]
    cache = RevocationCache(clock=lambda: now[0])
    at = lambda seconds: datetime.fromtimestamp(now[0] + seconds, UTC)  # noqa: E731
    cache.put(("ocsp", 1), "fresh", at(60))
    cache.put(("ocsp", 2), "stale", at(-1))
    cache.put(("crl", 3), "no next update", None)
    assert cache.get(("ocsp", 1)) == "fresh"
    assert cache.get(("ocsp", 2)) is None
    now[0] += 61
    assert cache.get(("ocsp", 1)) is None
    assert cache.get(("crl", 3)) == "no next update"  # default TTL is longer than a minute
    now[0] += timedelta(hours=1).total_seconds()
    assert cache.get(("crl", 3)) is None
