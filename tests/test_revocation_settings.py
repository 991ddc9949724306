"""[revocation] of box.toml applied: the signing services ask the responders and CRLs it names (firmware/signing/revocation.py)."""

from __future__ import annotations

import asyncio

import pytest
from asn1crypto import x509

from firmware.config import BoxConfig
from firmware.devpki import DevPki, PkiServer
from firmware.signing.revocation import RevocationService, RevocationUnavailable

NOWHERE = "http://127.0.0.1:9/"  # the discard port: nothing answers


def _collect(dev_pki: DevPki, **urls: tuple[str, ...]):
    leaf, *intermediates = [x509.Certificate.load(der) for der in dev_pki.box_chain()]
    roots = [x509.Certificate.load(dev_pki.root_cert())]
    return asyncio.run(RevocationService(roots, timeout_s=2, **urls).collect([(leaf, intermediates)]))


def test_configured_urls_are_asked_instead_of_the_certificates(box_config: BoxConfig, dev_pki: DevPki,
                                                              pki_server: PkiServer):
    data = _collect(dev_pki, ocsp_urls=(dev_pki.ocsp_url(),), crl_urls=tuple(dev_pki.crl_urls()))
    assert data.ocsps or data.crls
    assert _collect(dev_pki).ocsps  # unset: the certificates' own responders
    with pytest.raises(RevocationUnavailable):  # the certificates' own URLs would answer: they are not asked
        _collect(dev_pki, ocsp_urls=(NOWHERE + "ocsp",), crl_urls=(NOWHERE + "ca.crl",))
