"""The box's signer CA: a short-lived certificate for each contract party, and the CA's own CRL,
both signed with the signer CA's key on the token.

cryptography's CertificateBuilder and CertificateRevocationListBuilder want a private key object
they can call; this key never leaves the token. So the TBS structures are built with asn1crypto
and signed through TokenSigner, the digest-then-token path every other signature of the box takes
(and that refuses to sign while the box's clock is known to be off).

What a party certificate says: CN = the validated name; emailAddress and an rfc822Name SAN = the
validated address; a certificatePolicies userNotice "identity validated by <method> at <time>",
so the validation travels with the signature to any verifier. Lifetime: ``lifetime`` from the
signing, back-dated five minutes for clocks that lag a little.

Revocation, and why each party certificate names a CRL distribution point. pyhanko-certvalidator's
"hard-fail" mode (the box's and pyHanko's usual one) is CHECK_IF_DECLARED
(pyhanko_certvalidator/policy_decl.py): a certificate naming neither a CRL distribution point nor
an OCSP responder is not checked for revocation at all, and CRLs handed to the ValidationContext
are ignored for it (validate._check_revocation checks CRLs only when the certificate declares
some, or the policy is 'require'). Without a CDP a party signature would still validate, but the
CRL in the PDF's DSS would prove nothing, and a verifier whose policy requires revocation data
(pyHanko's 'require', Adobe's LTV check) would find none for it. So every party certificate names
``crl_url`` (where the box publishes this CRL) as its CDP. revinfo.validate_crl.verify_crl tries
the CRLs already in the context first and fetches only when they are not conclusive, so neither
signing nor offline validation from the DSS ever goes to that URL. No OCSP: the box runs no
responder for the signer CA, and a party key is destroyed minutes after its one signature.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from asn1crypto import crl, keys, x509

from hsm import Token

from ..errors import InvalidRequest
from .clock import ClockWatch
from .token_signer import TokenSigner

__all__ = ["BACKDATE", "PartyIdentity", "SignerCa", "validation_note"]

BACKDATE = timedelta(minutes=5)
_DIGEST = "sha256"
_MAX_NOTE = 200  # RFC 5280: explicitText is at most 200 characters


@dataclass(frozen=True)
class PartyIdentity:
    """Who a party was found to be, and how: what its certificate and signature state."""

    name: str
    email: str
    method: str  # "email-code", "access-code", "totp", ...
    validated_at: datetime


def validation_note(identity: PartyIdentity) -> str:
    """The one wording of a validation, for the certificate and the signature's reason alike."""
    when = identity.validated_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"identity validated by {identity.method} at {when}"


def _check(identity: PartyIdentity) -> None:
    if not identity.name.strip() or not identity.name.isprintable() or len(identity.name) > 64:
        raise InvalidRequest("a party's name is 1-64 printable characters")
    local, _, domain = identity.email.partition("@")
    if not local or "." not in domain or not identity.email.isascii() or len(identity.email) > 128 \
            or any(c.isspace() for c in identity.email):
        raise InvalidRequest("a party's e-mail address must be an ASCII address like name@example.com")
    if not identity.method.isprintable() or len(validation_note(identity)) > _MAX_NOTE:
        raise InvalidRequest("a validation method is a short printable name")
    if identity.validated_at.tzinfo is None:
        raise InvalidRequest("a validation time must carry its time zone")


def _time(moment: datetime) -> x509.Time:
    """UTCTime up to 2049, GeneralizedTime after, as RFC 5280 asks."""
    moment = moment.astimezone(UTC).replace(microsecond=0)
    return x509.Time({"utc_time" if moment.year < 2050 else "general_time": moment})


def _extension(extn_id: str, value: object, critical: bool = False) -> x509.Extension:
    return x509.Extension({"extn_id": extn_id, "critical": critical, "extn_value": value})


class SignerCa:
    """Issues party certificates and CRLs with the key ``label`` whose chain is ``chain``."""

    def __init__(
        self,
        token: Token,
        label: str,
        chain: list[x509.Certificate],
        crl_url: str,
        clock: ClockWatch | None = None,
        lifetime: timedelta = timedelta(hours=1),
        crl_lifetime: timedelta = timedelta(days=3),
    ) -> None:
        ca = chain[0]
        if not ca.ca or ca.max_path_length != 0 or not {"key_cert_sign", "crl_sign"} <= set(ca.key_usage_value.native):
            raise InvalidRequest(
                f"the certificate for {label!r} is not a signer CA: it must be a CA certificate with path"
                " length 0 and key usage keyCertSign and cRLSign"
            )
        self._signer = TokenSigner(token, label, chain, clock=clock)
        self._chain = chain
        self._crl_url = crl_url
        self._lifetime = lifetime
        self._crl_lifetime = crl_lifetime
        self._lock = threading.Lock()
        self._crl: crl.CertificateList | None = None

    @property
    def chain(self) -> list[x509.Certificate]:
        return self._chain

    def _authority_key_id(self) -> dict[str, bytes]:
        ca = self._chain[0]
        return {"key_identifier": ca.key_identifier or ca.public_key.sha1}

    def issue(self, public_key_info: bytes, identity: PartyIdentity, now: datetime) -> x509.Certificate:
        """A certificate for the party key ``public_key_info`` (DER SubjectPublicKeyInfo)."""
        _check(identity)
        spki = keys.PublicKeyInfo.load(public_key_info)
        name_attributes = {"common_name": identity.name, "email_address": identity.email}
        notice = {"explicit_text": {"utf8_string": validation_note(identity)}}
        algorithm = self._signer.get_signature_mechanism_for_digest(_DIGEST)
        tbs = x509.TbsCertificate({
            "version": "v3",
            "serial_number": secrets.randbits(127) | 1 << 126,  # positive, 16 bytes, unpredictable
            "signature": algorithm,
            "issuer": self._chain[0].subject,
            "validity": {"not_before": _time(now - BACKDATE), "not_after": _time(now + self._lifetime)},
            "subject": x509.Name.build(name_attributes),
            "subject_public_key_info": spki,
            "extensions": [
                _extension("basic_constraints", {"ca": False}, critical=True),
                _extension("key_usage", {"digital_signature", "non_repudiation"}, critical=True),
                _extension("subject_alt_name", [x509.GeneralName({"rfc822_name": identity.email})]),
                _extension("key_identifier", spki.sha1),
                _extension("authority_key_identifier", self._authority_key_id()),
                _extension("crl_distribution_points", [
                    {"distribution_point": {"full_name": [
                        x509.GeneralName({"uniform_resource_identifier": self._crl_url}),
                    ]}},
                ]),
                _extension("certificate_policies", [
                    {"policy_identifier": "any_policy",
                     "policy_qualifiers": [{"policy_qualifier_id": "user_notice", "qualifier": notice}]},
                ]),
            ],
        })
        return x509.Certificate({
            "tbs_certificate": tbs,
            "signature_algorithm": algorithm,
            "signature_value": self._signer.sign_data(tbs.dump(), _DIGEST),
        })

    def crl(self, now: datetime) -> crl.CertificateList:
        """The signer CA's CRL, issued afresh once half its life is gone. It lists nothing: a party
        certificate lives an hour and its key is destroyed after one signature, so there is never
        a key left to compromise; the CRL exists so verifiers have revocation data to check."""
        with self._lock:
            current = self._crl
            if current is not None:
                issued: datetime = current["tbs_cert_list"]["this_update"].native
                if now < issued + self._crl_lifetime / 2:
                    return current
            algorithm = self._signer.get_signature_mechanism_for_digest(_DIGEST)
            tbs = crl.TbsCertList({
                "version": "v2",
                "signature": algorithm,
                "issuer": self._chain[0].subject,
                "this_update": _time(now),
                "next_update": _time(now + self._crl_lifetime),
                "crl_extensions": [
                    {"extn_id": "authority_key_identifier", "critical": False, "extn_value": self._authority_key_id()},
                    # increasing across processes and restarts without any shared state
                    {"extn_id": "crl_number", "critical": False, "extn_value": int(now.timestamp() * 1000)},
                ],
            })
            self._crl = crl.CertificateList({
                "tbs_cert_list": tbs,
                "signature_algorithm": algorithm,
                "signature": self._signer.sign_data(tbs.dump(), _DIGEST),
            })
            return self._crl
