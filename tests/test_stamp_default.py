"""The stamp look of a signer without box.toml (the local agent): box.toml's defaults.

Regression: once BoxConfig's settings became properties over its sections, StampLook.default()
read ``BoxConfig.stamp_background`` off the class — a property object, not a colour — and
signing into a document's own empty visible field with no look configured crashed.
"""

from __future__ import annotations

import asyncio
import datetime

from asn1crypto import x509
from cryptography import x509 as pyca_x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from firmware.agent.local import _prepare
from firmware.signing.levels import Level
from firmware.signing.pdf_signing import PdfSignOptions
from firmware.signing.stamp_look import StampLook, parse_colour

from .pdfs import make_pdf, signature_field


def _self_signed() -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = pyca_x509.Name([pyca_x509.NameAttribute(NameOID.COMMON_NAME, "stamp default test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        pyca_x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(pyca_x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))


def test_default_look_is_box_tomls_defaults():
    look = StampLook.default()
    assert look.text == "" and look.logo is None
    for colour in (look.background, look.border):
        assert len(colour) == 3 and all(0.0 <= c <= 1.0 for c in colour)
    assert look.background == parse_colour("#eef3f8")  # [signing] stamp_background's documented default


def test_agent_signs_into_an_existing_visible_field_without_a_look():
    """The agent passes no look: the document's empty visible field gets the default one."""
    pdf = make_pdf(empty_fields=(signature_field("Sig1"),))
    options = PdfSignOptions(level=Level.B_B, field_name="Sig1")
    prepared = asyncio.run(_prepare(pdf, options, [_self_signed()], timestamp_room=0))
    assert prepared.output.getvalue().startswith(b"%PDF")
