"""Reading X.509 certificates and checking a chain against a token key: one loader for every face.

The box reads certificates in several places (its own chain and trust roots at start, a chain a
CA issued for a token key, the certificates of a provisioning bundle, the console's TLS
certificate); they all go through ``read_certificates`` here, so PEM and DER are understood,
and refused, one way. Below the application layer: it knows the token's public keys (hsm) and
nothing of the faces.
"""

from __future__ import annotations

import itertools
from pathlib import Path

from asn1crypto import keys, pem, x509
from cryptography import x509 as pyca_x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm

from hsm import Token

from .config import ConfigError
from .errors import InvalidRequest

__all__ = ["CertificateError", "as_pyca", "check_chain", "check_issuers", "issued_by", "load_certificates",
           "read_certificates"]


class CertificateError(ValueError):
    """Bytes that are not a certificate, or not a list of them."""


def read_certificates(data: bytes, *, pem_only: bool = False) -> list[x509.Certificate]:
    """The certificates in PEM (its CERTIFICATE blocks, in order) or in one DER certificate.

    Each certificate is parsed completely now, so a damaged one is refused here rather than
    when some field is first used. Raises CertificateError when nothing readable is found;
    with ``pem_only`` DER is refused too.
    """
    data = data.strip()
    if not data:
        raise CertificateError("no certificate data")
    try:
        if pem.detect(data):
            certs = [x509.Certificate.load(der) for kind, _, der in pem.unarmor(data, multiple=True)
                     if kind == "CERTIFICATE"]
        elif pem_only:
            raise CertificateError("not PEM")
        else:
            certs = [x509.Certificate.load(data)]
        for cert in certs:
            _ = cert.native  # parse all of it now, not when first used
    except CertificateError:
        raise
    except Exception as exc:  # asn1crypto raises ValueError, TypeError, KeyError, …
        raise CertificateError(str(exc) or type(exc).__name__) from exc
    if not certs:
        raise CertificateError("holds no certificate")
    return certs


def load_certificates(path: Path) -> list[x509.Certificate]:
    """The certificates in a PEM or DER file the box already trusts (its own chain, trust roots)."""
    if not path.exists():
        raise ConfigError(f"certificate file {path} not found")
    try:
        return read_certificates(path.read_bytes())
    except CertificateError as exc:
        raise ConfigError(f"certificate file {path}: {exc}") from exc


def as_pyca(cert: x509.Certificate) -> pyca_x509.Certificate:
    """The same certificate as the ``cryptography`` package sees it (signature checks, TLS)."""
    return pyca_x509.load_der_x509_certificate(cert.dump())


def check_chain(token: Token, key_label: str, chain: list[x509.Certificate]) -> None:
    """Refuse a chain that is empty, out of order, or whose leaf is not for the token key."""
    if not chain:
        raise InvalidRequest("the chain holds no certificate")
    if chain[0].public_key.dump() != keys.PublicKeyInfo.load(token.key(key_label).public_key_info).dump():
        raise InvalidRequest(f"the leaf certificate is not for token key {key_label!r}")
    for child, parent in itertools.pairwise(chain):
        if child.issuer != parent.subject:
            raise InvalidRequest(
                f"certificate {child.subject.human_friendly!r} is not issued by {parent.subject.human_friendly!r}"
            )


def issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    """Whether ``parent``'s key made the signature on ``child``."""
    try:
        as_pyca(child).verify_directly_issued_by(as_pyca(parent))
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def check_issuers(chain: list[x509.Certificate], roots: list[x509.Certificate]) -> None:
    """Refuse a chain (leaf first) whose signatures do not verify link by link, or that ends at a
    certificate no trust root is or issued: what a provisioning stick and the console's set-up
    both check before a chain is kept."""
    for child, parent in itertools.pairwise(chain):
        if not issued_by(child, parent):
            raise InvalidRequest(f"the signature on {child.subject.human_friendly!r} does not verify with its issuer")
    if not roots:
        raise InvalidRequest("no trust roots to check the chain against")
    top = chain[-1]
    if not any(top.dump() == root.dump() or (top.issuer == root.subject and issued_by(top, root)) for root in roots):
        raise InvalidRequest(f"the chain ends at {top.subject.human_friendly!r}, which no trust root issued")
