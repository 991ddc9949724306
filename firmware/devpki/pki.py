"""A development/test PKI for the box, described as a certomancer configuration.

Certomancer does not store certificates: it re-issues them from the YAML
configuration each time the configuration is loaded. Everything that goes into
a certificate (dates, serial numbers, keys, URL prefix) is therefore fixed on
disk once, so the box's stored chain and the PKI server's answers agree
byte for byte across restarts. Issuing keys are RSA because PKCS#1 v1.5
signatures are deterministic; ECDSA ones would differ on every load.
"""

from __future__ import annotations

import json
import os
import string
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import NamedTuple

from certomancer.registry import (
    ArchLabel,
    CertLabel,
    CertomancerConfig,
    PKIArchitecture,
    ServiceLabel,
)
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

__all__ = ["ARCH", "MAIL_USERS", "ROOT_CRL_REPO", "DevPki", "SoftSigner"]

ARCH = "esignbox-dev"
"""Certomancer architecture label; the first path segment of every service URL."""

ROOT_CRL_REPO = "root"
INTERM_CRL_REPO = "interm"
OCSP_SERVICE = "interm"
TSA_SERVICE = "tsa"

CONFIG_FILE = "certomancer.yml"
STATE_FILE = "state.json"
BOX_KEY_FILE = "box.pub.pem"
BOX_MAIL_KEY_FILE = "box-mail.pub.pem"
SIGNER_CA_KEY_FILE = "signer-ca.pub.pem"
BOX_MAIL_ADDRESS = "esignbox@esignbox.dev"  # the rfc822Name of the box's mail certificate

# Back-dated so that a box whose clock lags a little still sees valid certs.
BACKDATE = timedelta(days=1)
CA_LIFETIME = timedelta(days=3652)
SERVICE_LIFETIME = timedelta(days=1826)
SIGNER_LIFETIME = timedelta(days=730)
# A CRL lists revocations up to its thisUpdate, which certomancer puts a whole
# number of update periods (one day) after the issuer's valid-from; revoking an
# hour after valid-from ("yesterday") keeps the revoked signer on every CRL.
REVOKED_AFTER = timedelta(hours=1)

# E-mail encryption certificates for the certificate directory, by user: the address in each
# one's rfc822Name SAN (grace's names another address on purpose; see template.yml).
MAIL_USERS: dict[str, str] = {
    "alice": "alice@example.com",  # RSA-2048, keyEncipherment: what the directory keeps
    "alice-renewed": "alice@example.com",  # alice's next certificate, issued later
    "dave": "dave@example.com",  # EC P-256, keyAgreement
    "carol": "carol@example.com",  # revoked
    "erin": "erin@example.com",  # no emailProtection EKU
    "frank": "frank@example.com",  # signing only: no encryption key usage
    "grace": "mallory@example.com",  # submitted for grace@example.com: another address
    "heidi": "heidi@example.com",  # expired
    "judy": "judy@example.com",  # good until DevPki.revoke("judy")
}
# Users whose revocation is not fixed in the template: DevPki.revoke() may add it.
REVOCABLE = ("alice", "alice-renewed", "dave", "judy")
MAIL_CERTS = tuple(f"mail-{name}" for name in MAIL_USERS)

BOX_CERT, BOX_MAIL_CERT, SIGNER_CA_CERT = "box-signer", "box-mail-signer", "signer-ca"
ALL_CERTS = ("root", "interm", "tsa", "interm-ocsp", BOX_CERT, BOX_MAIL_CERT, SIGNER_CA_CERT, "revoked-signer",
             *MAIL_CERTS)
# alice's renewed certificate is issued this long after the first.
RENEWED_AFTER = timedelta(hours=2)
# heidi's certificate expired this long after the CA's valid-from, i.e. before the PKI was made.
EXPIRED_AFTER = timedelta(hours=12)


def _rsa_2048() -> PrivateKeyTypes:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _ec_p256() -> PrivateKeyTypes:
    return ec.generate_private_key(ec.SECP256R1())

_SOFTWARE_KEYS: dict[str, Callable[[], PrivateKeyTypes]] = {
    "root": lambda: rsa.generate_private_key(public_exponent=65537, key_size=3072),
    "interm": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
    # These never sign certificates, so a randomised signature scheme is fine.
    "tsa": lambda: ec.generate_private_key(ec.SECP256R1()),
    "interm-ocsp": lambda: ec.generate_private_key(ec.SECP256R1()),
    "revoked-signer": lambda: ec.generate_private_key(ec.SECP256R1()),
    # People's keys never sign certificates either.
    **{f"mail-{name}": (_ec_p256 if name == "dave" else _rsa_2048) for name in MAIL_USERS},
}


class SoftSigner(NamedTuple):
    """A certificate whose private key is a plain PEM file (test signers)."""

    cert: bytes
    key_path: Path


@dataclass(frozen=True)
class _State:
    """Everything variable that goes into the certificates, fixed on first use."""

    url_prefix: str
    ca_from: datetime
    box_from: datetime
    serials: dict[str, int] = field(default_factory=dict)
    revoked: tuple[str, ...] = ()  # mail users revoked by DevPki.revoke(), sorted

    @classmethod
    def fresh(cls, url_prefix: str, now: datetime) -> _State:
        start = now - BACKDATE
        return cls(url_prefix, start, start, {c: x509.random_serial_number() for c in ALL_CERTS})

    @classmethod
    def from_json(cls, text: str) -> _State:
        raw = json.loads(text)
        return cls(
            url_prefix=raw["url_prefix"],
            ca_from=datetime.fromisoformat(raw["ca_from"]),
            box_from=datetime.fromisoformat(raw["box_from"]),
            serials=raw["serials"],
            revoked=tuple(raw.get("revoked", ())),
        )

    def to_json(self) -> str:
        raw = {
            "url_prefix": self.url_prefix,
            "ca_from": self.ca_from.isoformat(),
            "box_from": self.box_from.isoformat(),
            "serials": self.serials,
        }
        if self.revoked:  # absent when empty: an older PKI's state file stays as it was
            raw["revoked"] = list(self.revoked)
        return json.dumps(raw, indent=2, sort_keys=True) + "\n"

    def with_url_prefix(self, url_prefix: str) -> _State:
        """Re-serial every cert carrying URLs: same issuer+serial must mean same bytes."""
        serials = {
            c: (s if c == "root" else x509.random_serial_number()) for c, s in self.serials.items()
        }
        return replace(self, url_prefix=url_prefix, serials=serials)

    def with_missing_serials(self) -> _State:
        """Serials for certificates added to the template since the state was written; the
        existing ones are kept, so their certificates stay byte-identical."""
        missing = [c for c in ALL_CERTS if c not in self.serials]
        if not missing:
            return self
        return replace(self, serials={**self.serials, **{c: x509.random_serial_number() for c in missing}})

    def with_revoked(self, user: str) -> _State:
        return replace(self, revoked=tuple(sorted({*self.revoked, user})))

    def with_new_box_cert(self, now: datetime) -> _State:
        serials = {**self.serials, BOX_CERT: x509.random_serial_number()}
        return replace(self, box_from=now - BACKDATE, serials=serials)

    def with_new_cert(self, label: str) -> _State:
        """A new serial for one of the box's other certificates (mail, signer CA) only: the
        signing certificate, which a box's chain file holds, stays byte-identical."""
        return replace(self, serials={**self.serials, label: x509.random_serial_number()})

    def render(self) -> str:
        template = resources.files(__package__).joinpath("template.yml").read_text()
        return string.Template(template).substitute(
            arch=ARCH,
            url_prefix=self.url_prefix,
            ca_from=self.ca_from.isoformat(),
            ca_to=(self.ca_from + CA_LIFETIME).isoformat(),
            service_to=(self.ca_from + SERVICE_LIFETIME).isoformat(),
            box_from=self.box_from.isoformat(),
            box_mail_address=BOX_MAIL_ADDRESS,
            box_to=(self.box_from + SIGNER_LIFETIME).isoformat(),
            revoked_since=(self.ca_from + REVOKED_AFTER).isoformat(),
            revoked_to=(self.ca_from + SIGNER_LIFETIME).isoformat(),
            mail_to=(self.ca_from + SIGNER_LIFETIME).isoformat(),
            renewed_from=(self.ca_from + RENEWED_AFTER).isoformat(),
            renewed_to=(self.ca_from + RENEWED_AFTER + SIGNER_LIFETIME).isoformat(),
            expired_to=(self.ca_from + EXPIRED_AFTER).isoformat(),
            **{f"serial_{c.replace('-', '_')}": self.serials[c] for c in ALL_CERTS},
            **{f"revocation_mail_{u.replace('-', '_')}": self._revocation(u) for u in REVOCABLE},
        )

    def _revocation(self, user: str) -> str:
        """The YAML revocation block of a revocable user's certificate: empty unless revoked.

        Dated like revoked-signer's (an hour after the CA's valid-from), so that every CRL lists
        it, not only those issued after the revocation: the date is a test fixture's, not history.
        """
        if user not in self.revoked:
            return ""
        return (f'        revocation:\n          revoked-since: "{(self.ca_from + REVOKED_AFTER).isoformat()}"\n'
                "          reason: key_compromise")


class DevPki:
    """The dev PKI stored in ``directory``; service URLs start with ``url_prefix``."""

    def __init__(self, directory: Path, url_prefix: str) -> None:
        self.directory = Path(directory)
        self.url_prefix = url_prefix.rstrip("/")
        self._arch_cache: PKIArchitecture | None = None

    @property
    def config_path(self) -> Path:
        return self.directory / CONFIG_FILE

    def ensure(
        self, box_public_key_der: bytes, mail_public_key_der: bytes | None = None,
        signer_ca_public_key_der: bytes | None = None,
    ) -> None:
        """Create the PKI, or bring it up to date; writes nothing if nothing changed.

        A new box key (or mail key, or signer CA key) gets new box certificates (new serials);
        everything else keeps its dates and serials so certificates stay byte-identical. The
        box's mail certificate is for ``mail_public_key_der``, its signer CA certificate for
        ``signer_ca_public_key_der``, each for the box key when there is none.
        """
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        for name, generate in _SOFTWARE_KEYS.items():
            key_path = self._key_path(name)
            if not key_path.exists():
                _write_file(key_path, _private_pem(generate()), mode=0o600)

        now = datetime.now(UTC).replace(microsecond=0)
        state_path = self.directory / STATE_FILE
        state = _State.from_json(state_path.read_text()) if state_path.exists() else _State.fresh(self.url_prefix, now)
        state = state.with_missing_serials()
        if state.url_prefix != self.url_prefix:
            state = state.with_url_prefix(self.url_prefix)

        keys = (
            (BOX_KEY_FILE, BOX_CERT, box_public_key_der),
            (BOX_MAIL_KEY_FILE, BOX_MAIL_CERT, mail_public_key_der or box_public_key_der),
            (SIGNER_CA_KEY_FILE, SIGNER_CA_CERT, signer_ca_public_key_der or box_public_key_der),
        )
        for name, cert, der in keys:
            key_path, key_pem = self.directory / name, _public_pem(der)
            if not key_path.exists() or key_path.read_bytes() != key_pem:
                state = state.with_new_box_cert(now) if cert == BOX_CERT else state.with_new_cert(cert)
                _write_file(key_path, key_pem)

        _write_if_changed(state_path, state.to_json().encode())
        _write_if_changed(self.config_path, state.render().encode())
        self._arch_cache = None

    def root_cert(self) -> bytes:
        return self._cert_der("root")

    def intermediate_cert(self) -> bytes:
        return self._cert_der("interm")

    def box_cert(self) -> bytes:
        return self._cert_der(BOX_CERT)

    def box_chain(self) -> list[bytes]:
        """Box certificate, intermediate, root: the order a signer embeds them."""
        return [self.box_cert(), self.intermediate_cert(), self.root_cert()]

    def mail_chain(self) -> list[bytes]:
        """The box's mail certificate, intermediate, root."""
        return [self._cert_der(BOX_MAIL_CERT), self.intermediate_cert(), self.root_cert()]

    def signer_ca_chain(self) -> list[bytes]:
        """The box's signer CA certificate (CA, path length 0), intermediate, root."""
        return [self._cert_der(SIGNER_CA_CERT), self.intermediate_cert(), self.root_cert()]

    def revoked_signer(self) -> SoftSigner:
        return SoftSigner(self._cert_der("revoked-signer"), self._key_path("revoked-signer"))

    def mail_user(self, name: str) -> SoftSigner:
        """A person's e-mail encryption certificate (DER) and private key file; names: MAIL_USERS."""
        if name not in MAIL_USERS:
            raise KeyError(f"no mail user {name!r} in the dev PKI (known: {', '.join(MAIL_USERS)})")
        return SoftSigner(self._cert_der(f"mail-{name}"), self._key_path(f"mail-{name}"))

    def revoke(self, name: str) -> None:
        """Revoke a mail user's certificate (REVOCABLE): its serial goes on the intermediate's CRL
        and OCSP answers "revoked". Nothing else changes; a running PkiServer serves it once
        restarted (certomancer reads its configuration at start)."""
        if name not in REVOCABLE:
            raise KeyError(f"{name!r} cannot be revoked (revocable: {', '.join(REVOCABLE)})")
        state_path = self.directory / STATE_FILE
        state = _State.from_json(state_path.read_text()).with_revoked(name)
        _write_if_changed(state_path, state.to_json().encode())
        _write_if_changed(self.config_path, state.render().encode())
        self._arch_cache = None

    def tsa_url(self) -> str:
        return self._arch().service_registry.get_tsa_info(ServiceLabel(TSA_SERVICE)).url

    def ocsp_url(self) -> str:
        return self._arch().service_registry.get_ocsp_info(ServiceLabel(OCSP_SERVICE)).url

    def crl_urls(self) -> list[str]:
        """Latest-CRL URLs of the root and the intermediate, in that order."""
        registry = self._arch().service_registry
        return [
            registry.get_crl_repo_info(ServiceLabel(repo)).latest_external_url
            for repo in (ROOT_CRL_REPO, INTERM_CRL_REPO)
        ]

    def _key_path(self, name: str) -> Path:
        return self.directory / f"{name}.key.pem"

    def _cert_der(self, label: str) -> bytes:
        der: bytes = self._arch().get_cert(CertLabel(label)).dump()
        return der

    def _arch(self) -> PKIArchitecture:
        if self._arch_cache is None:
            if not self.config_path.exists():
                raise FileNotFoundError(f"{self.config_path} missing: call DevPki.ensure() first")
            config = CertomancerConfig.from_file(str(self.config_path))
            self._arch_cache = config.get_pki_arch(ArchLabel(ARCH))
        return self._arch_cache


def _private_pem(key: PrivateKeyTypes) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _public_pem(spki_der: bytes) -> bytes:
    """Normalise the token's SubjectPublicKeyInfo so equal keys compare equal."""
    key = serialization.load_der_public_key(spki_der)
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _write_if_changed(path: Path, data: bytes) -> None:
    if not path.exists() or path.read_bytes() != data:
        _write_file(path, data)


def _write_file(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write atomically, so a PKI server loading the directory never sees half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
