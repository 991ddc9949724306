"""Party signatures against the real parts: the session's SoftHSM2 token (signer CA key and the
ephemeral party keys), the dev PKI served by certomancer (signer CA certificate, TSA, OCSP, CRLs)
and the session box (the organisation's certification signature). The result is judged by tools
nobody here wrote: poppler's pdfsig, qpdf and pyHanko's validator from the PDF's own data."""

from __future__ import annotations

import asyncio
import io
import secrets
from datetime import UTC, datetime

import pytest
from asn1crypto import x509
from PIL import Image
from pyhanko.sign.validation import DocumentSecurityStore, validate_pdf_signature

from firmware.certificates import load_certificates
from firmware.devbox import DEV_MAIL_KEY_LABEL
from firmware.signing.levels import Level
from firmware.signing.party_signatures import PartyIdentity, PartyMark, PartySigner, add_signature_fields
from firmware.signing.pdf_verify import read_pdf, signatures_offline
from firmware.signing.revocation import RevocationService
from firmware.signing.timestamps import FallbackTimeStamper
from hsm import KeyAlgorithm, Token

from .pdfs import assert_trusted, assert_well_formed, make_pdf, pdfsig_results, reader, validate
from .support import Api

MAX_PDF = 10 * 1024 * 1024
# Nothing listens here: the party certificates name it as their CDP, and validation must use
# the signer CA's CRL in the context / DSS instead of fetching it.
CRL_URL = "http://127.0.0.1:9/signer-ca.crl"
FIELDS = [("Alice", 1, (50.0, 150.0, 280.0, 220.0)), ("Bob", 1, (310.0, 150.0, 540.0, 220.0))]


class WatchingTimeStamper(FallbackTimeStamper):
    """The box's timestamper, noting the party keys on the token at the moment a party signs."""

    def __init__(self, urls: list[str], token: Token) -> None:
        super().__init__(urls)
        self._token = token
        self.seen: dict[str, dict[str, bool]] = {}

    async def async_timestamp(self, message_digest, md_algorithm):
        for label in _party_labels(self._token):
            self.seen[label] = self._token.private_key_attributes(label)
        return await super().async_timestamp(message_digest, md_algorithm)


def _png(colour: tuple[int, int, int]) -> bytes:
    image = Image.new("RGBA", (120, 40), (0, 0, 0, 0))
    for x in range(10, 110):
        image.putpixel((x, 20 + (x % 7) - 3), (*colour, 255))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _party_labels(token: Token) -> set[str]:
    listed = token.keys()
    return {info.label for info in listed if info.label.startswith("party-")}


@pytest.fixture(scope="module")
def token(box_config) -> Token:
    return Token(box_config.token_config())


@pytest.fixture(scope="module")
def signer_ca(token, dev_pki, pki_server, box_config) -> tuple[str, list[x509.Certificate]]:
    """A signer CA key on the token, certified by the dev PKI (which keeps the box's other certificates)."""
    label = f"signer-ca-{secrets.token_hex(3)}"
    key = token.generate_key(label, KeyAlgorithm.EC_P256)
    dev_pki.ensure(token.key(box_config.key_label).public_key_info, token.key(DEV_MAIL_KEY_LABEL).public_key_info,
                   key.public_key_info)
    pki_server.stop()  # certomancer reads its configuration at start: its OCSP must know the new CA
    pki_server.start()
    return label, [x509.Certificate.load(der) for der in dev_pki.signer_ca_chain()]


@pytest.fixture(scope="module")
def parts(token, signer_ca, dev_pki, box_config) -> tuple[PartySigner, WatchingTimeStamper, RevocationService]:
    revocation = RevocationService(load_certificates(box_config.trust_roots_file))
    timestamper = WatchingTimeStamper([dev_pki.tsa_url()], token)
    label, chain = signer_ca
    return PartySigner(token, label, chain, timestamper, revocation, CRL_URL, MAX_PDF), timestamper, revocation


def test_signer_ca_certificate_is_a_ca_for_end_entities_only(signer_ca):
    ca = signer_ca[1][0]
    assert ca.ca and ca.max_path_length == 0
    assert set(ca.key_usage_value.native) == {"digital_signature", "key_cert_sign", "crl_sign"}
    assert ca.issuer == signer_ca[1][1].subject


def test_two_parties_sign_a_certified_contract_and_it_finishes_b_lta(api: Api, token, parts, tmp_path):
    signer, timestamper, revocation = parts
    prepared = add_signature_fields(make_pdf(), FIELDS, MAX_PDF)
    certified = api.post("/v1/pdf/sign", data=prepared, headers={"Content-Type": "application/pdf"},
                         params={"level": "B-T", "certify": "true", "docmdp": "2", "field": "Organisation"})
    assert certified.status_code == 200, certified.text
    validated = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    pdf = certified.content
    for name, method in (("Alice", "email-code"), ("Bob", "access-code")):
        identity = PartyIdentity(f"{name} Example", f"{name.lower()}@example.com", method, validated)
        pdf = signer.sign(pdf, identity, PartyMark(name, _png((20, 40, 160))))
    final = signer.finish(pdf)

    # Each party key existed only while signing, on the token, sensitive and never extractable.
    assert len(timestamper.seen) == 2, timestamper.seen
    assert all(attrs == {"sensitive": True, "extractable": False, "always_sensitive": True,
                         "never_extractable": True, "local": True} for attrs in timestamper.seen.values())
    assert _party_labels(token) == set()

    # Outside tools: qpdf --check, pdfsig finds all three signatures valid.
    assert_well_formed(final, tmp_path)
    results = pdfsig_results(final, tmp_path)
    assert {"Organisation", "Alice", "Bob"} <= set(results)
    assert all(results[f] == "Signature is Valid." for f in ("Organisation", "Alice", "Bob")), results

    # pyHanko, from the PDF's own data only: every signature intact and trusted; all B-LTA.
    roots = revocation.trust_roots
    assert_trusted(validate(final, roots, offline=True))
    reports = asyncio.run(signatures_offline(read_pdf(final, MAX_PDF), revocation))
    signatures = [r for r in reports if r.kind == "signature"]
    assert [r.field for r in signatures] == ["Organisation", "Alice", "Bob"]
    assert all(r.intact and r.valid and r.trusted and r.ltv and r.level is Level.B_LTA for r in signatures), reports
    assert reports[-1].kind == "document_timestamp" and reports[-1].bottom_line
    assert signatures[0].certification == 2

    # The party certificates carry the validated identity; the signer CA's CRL (from the DSS,
    # never fetched) answers for them even under a policy that requires revocation data.
    doc = reader(final)
    strict = DocumentSecurityStore.read_dss(doc).as_validation_context(
        {"trust_roots": roots, "allow_fetching": False, "revocation_mode": "require"}
    )
    for sig in doc.embedded_regular_signatures:
        if sig.field_name == "Organisation":
            continue
        name = sig.field_name
        cert = sig.signer_cert
        assert cert.subject.native == {"common_name": f"{name} Example", "email_address": f"{name.lower()}@example.com"}
        assert cert.subject_alt_name_value.native == [f"{name.lower()}@example.com"]
        method = "email-code" if name == "Alice" else "access-code"
        notice = cert.certificate_policies_value[0]["policy_qualifiers"][0]["qualifier"]["explicit_text"].native
        assert notice == f"identity validated by {method} at 2025-01-02T03:04:05Z"
        assert sig.sig_object["/Reason"] == notice
        assert cert.crl_distribution_points_value[0]["distribution_point"].native == [CRL_URL]
        status = validate_pdf_signature(sig, strict)
        assert status.intact and status.valid and status.trusted, status.pretty_print_details()


def test_cleanup_destroys_only_old_party_keys(token, parts):
    signer = parts[0]
    old = "party-1000-0123456789abcdef"
    fresh = f"party-{int(datetime.now(UTC).timestamp())}-fedcba9876543210"
    token.generate_key(old, KeyAlgorithm.EC_P256)
    token.generate_key(fresh, KeyAlgorithm.EC_P256)
    try:
        assert signer.cleanup() == 1
        assert _party_labels(token) == {fresh}  # perhaps another worker's, mid-signature
    finally:
        token.destroy_key(fresh)
