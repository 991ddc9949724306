"""Facts about keys and certificates, phrased for the console's pages."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from asn1crypto import keys, pem, x509

from firmware.errors import InvalidRequest

WARN_DAYS = 30
_SHORT = {"common_name": "CN", "organization_name": "O", "organizational_unit_name": "OU", "country_name": "C",
          "locality_name": "L", "state_or_province_name": "ST", "email_address": "EMAILADDRESS",
          "serial_number": "SERIALNUMBER"}


def key_description(public_key_info: keys.PublicKeyInfo) -> str:
    if public_key_info.algorithm == "rsa":
        return f"RSA {public_key_info.bit_size}"
    if public_key_info.algorithm == "ec":
        curve = public_key_info.curve[1]
        return {"secp256r1": "EC P-256", "secp384r1": "EC P-384", "secp521r1": "EC P-521"}.get(curve, f"EC {curve}")
    return public_key_info.algorithm.upper()


def subject_text(name: x509.Name) -> str:
    """An x509.Name as 'CN=..,O=..,C=..', most specific first (what firmware.keys.parse_subject reads)."""
    parts = []
    for rdn in reversed(list(name.chosen)):
        for attribute in rdn:
            short = _SHORT.get(attribute["type"].native)
            if short:
                parts.append(f"{short}={attribute['value'].native}")
    return ",".join(parts)


@dataclass(frozen=True)
class CertFacts:
    subject: str
    issuer: str
    serial: str
    not_after: dt.datetime
    days_left: int
    key: str

    @property
    def state(self) -> str:
        if self.days_left < 0:
            return "expired"
        return "warn" if self.days_left <= WARN_DAYS else "ok"


def facts(cert: x509.Certificate, now: dt.datetime | None = None) -> CertFacts:
    now = now or dt.datetime.now(dt.timezone.utc)
    not_after = cert["tbs_certificate"]["validity"]["not_after"].native
    return CertFacts(cert.subject.human_friendly, cert.issuer.human_friendly, format(cert.serial_number, "x"),
                     not_after, (not_after - now).days if not_after > now else -1 - (now - not_after).days,
                     key_description(cert.public_key))


def parse_chain(data: bytes) -> list[x509.Certificate]:
    """PEM (one or more certificates) or a single DER certificate; unreadable input is refused."""
    data = data.strip()
    if not data:
        raise InvalidRequest("no file was sent")
    try:
        if pem.detect(data):
            chain = [x509.Certificate.load(der) for kind, _, der in pem.unarmor(data, multiple=True)
                     if kind == "CERTIFICATE"]
        else:
            chain = [x509.Certificate.load(data)]
        for cert in chain:  # asn1crypto parses lazily: touch what is used later
            cert.subject.human_friendly, cert.public_key.dump(), cert["tbs_certificate"]["validity"].native
    except (ValueError, TypeError, KeyError) as exc:
        raise InvalidRequest("the file is not a certificate chain (PEM with CERTIFICATE blocks, or one DER "
                             "certificate)") from exc
    if not chain:
        raise InvalidRequest("the file holds no certificate")
    return chain


def order_chain(chain: list[x509.Certificate], public_key_info: bytes) -> list[x509.Certificate]:
    """Leaf (the certificate for this key) first, then its issuers, if they are all there."""
    leaf = next((c for c in chain if c.public_key.dump() == keys.PublicKeyInfo.load(public_key_info).dump()), None)
    if leaf is None:
        return chain
    ordered, rest = [leaf], [c for c in chain if c is not leaf]
    while rest:
        parent = next((c for c in rest if c.subject == ordered[-1].issuer), None)
        if parent is None:
            return chain if rest else ordered
        ordered.append(parent)
        rest.remove(parent)
    return ordered


def chain_pem(chain: list[x509.Certificate]) -> bytes:
    return b"".join(pem.armor("CERTIFICATE", c.dump()) for c in chain)
