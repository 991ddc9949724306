"""The key life cycle around the token, one set of rules for the console, the CLI and provisioning.

The production path: generate the key on the token, send its CSR to a real CA, install the
issued chain, activate the key. Installing refuses a chain whose leaf does not carry the token
key's public key (or that has expired), so a wrong certificate can never be paired with a key;
each key's chain is kept in ``<state>/chains/<label>.pem``. Activating checks the installed chain
against the key again and returns the configuration change ([signing] key_label, chain_file and
previous_key_label) for firmware/operations/configstore.py to write; the outgoing key keeps its chain in
chains/, so rolling back is an activation of ``previous_key_label``. Who applies the change
decides when it takes effect: the console restarts the signing service in-process
(firmware/operations/live.py), the command line says to restart the service.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from asn1crypto import csr, keys, pem, x509

from hsm import KEY_ALGORITHMS, KeyAlgorithm, KeyExists, KeyInfo, KeyNotFound, SignatureScheme, Token, TokenError

from ..certificates import CertificateError, check_chain, load_certificates, read_certificates
from ..config import BoxConfig
from ..durable import write_durable
from ..errors import InvalidRequest

__all__ = [
    "KEY_ALGORITHMS", "LABEL", "Activation", "KeyExists", "KeyNotFound", "KeyState", "TokenError", "TokenPresence",
    "activation", "build_csr", "chain_details", "chain_path", "chain_pem", "generate", "install_chain", "inventory",
    "parse_subject", "rollback_activation", "token_presence",
]

LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
CHAINS = "chains"

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
    armored: bytes = pem.armor("CERTIFICATE REQUEST", request.dump())
    return armored


def parse_chain(data: bytes) -> list[x509.Certificate]:
    """PEM (one or more certificates) or a single DER certificate; unreadable input is refused."""
    if not data.strip():
        raise InvalidRequest("no file was sent")
    try:
        return read_certificates(data)
    except CertificateError as exc:
        raise InvalidRequest("the file is not a certificate chain (PEM with CERTIFICATE blocks, or one DER "
                             "certificate)") from exc


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


def chain_path(state_dir: Path, label: str) -> Path:
    """Where the chain of token key ``label`` is kept once installed."""
    if not LABEL.match(label):
        raise InvalidRequest(f"key label {label!r} cannot name a file; use letters, digits, '.', '_' and '-'")
    return Path(state_dir) / CHAINS / f"{label}.pem"


def generate(token: Token, label: str, algorithm: KeyAlgorithm | str) -> tuple[KeyInfo, dict[str, Any]]:
    """A new key pair on the token; returns it and the details its audit entry (key.generate) records.

    Raises InvalidRequest (label or algorithm), KeyExists or TokenError.
    """
    if not LABEL.match(label):
        raise InvalidRequest("a key label is 1–64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    if algorithm not in KEY_ALGORITHMS:
        raise InvalidRequest(f"the algorithm is one of {', '.join(KEY_ALGORITHMS)}")
    algorithm = KeyAlgorithm(algorithm)
    info = token.generate_key(label, algorithm)
    return info, {"label": label, "algorithm": algorithm.value,
                  "public_key_sha256": keys.PublicKeyInfo.load(info.public_key_info).sha256.hex()}


def _not_after(cert: x509.Certificate) -> datetime:
    not_after: datetime = cert["tbs_certificate"]["validity"]["not_after"].native
    return not_after


def chain_details(label: str, chain: list[x509.Certificate]) -> dict[str, Any]:
    """What the audit entry of an installed chain (chain.import) records."""
    leaf = chain[0]
    return {"label": label, "subject": leaf.subject.human_friendly, "serial": format(leaf.serial_number, "x"),
            "not_after": _not_after(leaf).isoformat(), "certificates": len(chain)}


def install_chain(state_dir: Path, token: Token, label: str, data: bytes,
                  check: Callable[[list[x509.Certificate]], None] | None = None) -> list[x509.Certificate]:
    """Check the CA's answer (PEM in any order, or one DER certificate) against key ``label``; keep it.

    Raises InvalidRequest (unreadable, not for the key, out of order, expired, or what ``check``
    raises for the ordered chain) or KeyNotFound; nothing is written then. Returns the chain,
    leaf first, as written.
    """
    path = chain_path(state_dir, label)
    chain = order_chain(parse_chain(data), token.key(label).public_key_info)
    check_chain(token, label, chain)
    if check is not None:
        check(chain)
    expiry = _not_after(chain[0])
    if expiry < datetime.now(UTC):
        raise InvalidRequest(f"the certificate expired on {expiry:%Y-%m-%d}")
    path.parent.mkdir(exist_ok=True)
    write_durable(path, chain_pem(chain))
    return chain


@dataclass(frozen=True)
class Activation:
    """Making a key the signing key: the box.toml change and what its audit entry records."""

    label: str
    previous: str
    serial: str  # of the leaf certificate the box will sign with
    changes: dict[str, dict[str, Any]]

    @property
    def details(self) -> dict[str, Any]:
        return {"label": self.label, "previous": self.previous, "serial": self.serial}


def activation(config: BoxConfig, token: Token, label: str) -> Activation:
    """The change that makes token key ``label`` (with its installed chain) the signing key.

    Refused (InvalidRequest, KeyNotFound) unless the chain in chains/ is there and is for the key.
    The outgoing key's chain is copied to chains/ if it is not there yet, so it can come back.
    """
    path = chain_path(config.state_dir, label)
    if not path.exists():
        raise InvalidRequest(f"key {label!r} has no certificate chain yet: install the CA's chain first "
                             f"(`esignbox import-chain FILE --label {label}`, or the console's Keys page)")
    chain = load_certificates(path)
    check_chain(token, label, chain)
    previous = config.key_label
    if label == previous and path.resolve() == config.chain_file:
        raise InvalidRequest(f"key {label!r} is already the signing key with this chain")
    if label != previous and LABEL.match(previous) and config.chain_file.exists():
        kept = chain_path(config.state_dir, previous)
        if not kept.exists():
            kept.parent.mkdir(exist_ok=True)
            write_durable(kept, config.chain_file.read_bytes())
    signing = {"key_label": label, "chain_file": f"{CHAINS}/{label}.pem",
               "previous_key_label": previous if label != previous else config.previous_key_label}
    return Activation(label, previous, format(chain[0].serial_number, "x"), {"signing": signing})


def rollback_activation(config: BoxConfig, token: Token) -> Activation:
    """The change back to the key that was the signing key before the last activation."""
    if not config.previous_key_label:
        raise InvalidRequest("no previous signing key to go back to: no key was activated since "
                             "[signing] previous_key_label was last cleared")
    return activation(config, token, config.previous_key_label)


@dataclass(frozen=True)
class TokenPresence:
    """Whether the token answers and holds the signing key; ``detail`` says why not."""

    label: str
    present: bool
    detail: str = ""


def token_presence(config: BoxConfig, token: Token) -> TokenPresence:
    label = config.token.label if config.token is not None else ""
    try:
        token.key(config.key_label)
        return TokenPresence(str(token.info().get("label") or label), True)
    except TokenError as exc:
        return TokenPresence(label, False, str(exc))


@dataclass(frozen=True)
class KeyState:
    """A key on the token and where it stands in its life cycle."""

    label: str
    public_key: keys.PublicKeyInfo
    active: bool  # the signing key
    leaf: x509.Certificate | None  # of its chain in chains/ (or of the active chain); None: no chain yet
    can_activate: bool  # a chain in chains/ that is not the one signing now
    pending: bool  # the active key with a new chain installed but not yet activated


def inventory(config: BoxConfig, token: Token) -> list[KeyState]:
    """Every key on the token, the signing key first, then by label. Raises TokenError if it does not answer."""
    active_chain = config.chain_file.read_bytes() if config.chain_file.exists() else b""
    states = []
    for key in token.keys():  # noqa: SIM118 -- a Token is not a mapping: keys() asks it for its key pairs
        active = key.label == config.key_label
        stored = chain_path(config.state_dir, key.label) if LABEL.match(key.label) else None
        leaf, can_activate = None, False
        if stored is not None and stored.exists():
            leaf = load_certificates(stored)[0]
            can_activate = not active or stored.read_bytes() != active_chain
        elif active and active_chain:
            leaf = load_certificates(config.chain_file)[0]
        states.append(KeyState(key.label, keys.PublicKeyInfo.load(key.public_key_info), active, leaf,
                               can_activate, active and can_activate))
    return sorted(states, key=lambda state: (not state.active, state.label))
