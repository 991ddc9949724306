"""Facts about keys and certificates, phrased for the console's pages."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from asn1crypto import keys, x509

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
    algorithm: str = public_key_info.algorithm
    return algorithm.upper()


def subject_text(name: x509.Name) -> str:
    """An x509.Name as 'CN=..,O=..,C=..', most specific first (what firmware.operations.keys.parse_subject reads)."""
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
    now = now or dt.datetime.now(dt.UTC)
    not_after = cert["tbs_certificate"]["validity"]["not_after"].native
    return CertFacts(cert.subject.human_friendly, cert.issuer.human_friendly, format(cert.serial_number, "x"),
                     not_after, (not_after - now).days if not_after > now else -1 - (now - not_after).days,
                     key_description(cert.public_key))
