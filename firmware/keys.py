"""Key life cycle around the token: CSR for a token key, and importing the CA's answer.

The production path: generate the key on the token, send the CSR to a real CA, import the
issued chain. The import refuses a chain whose leaf does not carry the token key's public key,
so a wrong certificate can never be paired with the box's key.
"""

from __future__ import annotations

import hashlib

from asn1crypto import csr, keys, pem, x509

from hsm import SignatureScheme, Token

from .errors import InvalidRequest

_NAME_KEYS = {
    "CN": "common_name", "O": "organization_name", "OU": "organizational_unit_name", "C": "country_name",
    "L": "locality_name", "ST": "state_or_province_name", "EMAILADDRESS": "email_address",
    "SERIALNUMBER": "serial_number",
}


def parse_subject(text: str) -> x509.Name:
    """'CN=Box,O=Example Ltd,C=BE' → Name. Commas inside values are not supported."""
    attributes: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        name = _NAME_KEYS.get(key.strip().upper())
        if not sep or name is None or not value.strip():
            raise InvalidRequest(f"cannot read subject part {part!r}; use e.g. CN=...,O=...,C=..")
        attributes[name] = value.strip()
    if "common_name" not in attributes:
        raise InvalidRequest("the subject needs a CN")
    return x509.Name.build(attributes)


def build_csr(token: Token, key_label: str, subject: x509.Name) -> bytes:
    """A PKCS#10 request signed by the token key; returns PEM."""
    key = token.key(key_label)
    info = csr.CertificationRequestInfo(
        {
            "version": "v1",
            "subject": subject,
            "subject_pk_info": keys.PublicKeyInfo.load(key.public_key_info),
            "attributes": [],
        }
    )
    digest = hashlib.sha256(info.dump()).digest()
    if key.key_type == "ec":
        scheme, algorithm = SignatureScheme.ECDSA, "sha256_ecdsa"
    else:
        scheme, algorithm = SignatureScheme.RSA_PKCS1V15, "sha256_rsa"
    signature = token.sign_digest(key_label, digest, "sha256", scheme)
    request = csr.CertificationRequest(
        {"certification_request_info": info, "signature_algorithm": {"algorithm": algorithm}, "signature": signature}
    )
    return pem.armor("CERTIFICATE REQUEST", request.dump())


def check_chain(token: Token, key_label: str, chain: list[x509.Certificate]) -> None:
    """Refuse a chain that is empty, out of order, or whose leaf is not for the token key."""
    if not chain:
        raise InvalidRequest("the chain holds no certificate")
    if chain[0].public_key.dump() != keys.PublicKeyInfo.load(token.key(key_label).public_key_info).dump():
        raise InvalidRequest(f"the leaf certificate is not for token key {key_label!r}")
    for child, parent in zip(chain, chain[1:]):
        if child.issuer != parent.subject:
            raise InvalidRequest(
                f"certificate {child.subject.human_friendly!r} is not issued by {parent.subject.human_friendly!r}"
            )
