"""The hash-signing CMS, joined as bytes (firmware/signing/cms_template.py), is the DER asn1crypto
writes for it, and says what was signed: checked on the dev box's token with a real TSA token."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator

import pytest
from asn1crypto import cms
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from firmware.certificates import load_certificates
from firmware.signing import TokenSigner
from firmware.signing.cms_template import DetachedCmsTemplate
from firmware.signing.levels import Profile
from firmware.signing.timestamps import FallbackTimeStamper
from hsm import Token


@pytest.fixture(scope="module")
def signer(box_config) -> Iterator[TokenSigner]:
    token = Token(box_config.token_config())
    yield TokenSigner(token, box_config.key_label, load_certificates(box_config.chain_file))
    token.close()


@pytest.mark.parametrize("profile", list(Profile))
@pytest.mark.parametrize("timestamped", [False, True])
def test_the_cms_is_der_and_carries_what_was_signed(signer, box_config, pki_server, profile, timestamped):
    template = DetachedCmsTemplate(signer)
    digest = hashlib.sha256(f"document {profile} {timestamped}".encode()).digest()
    signed_attrs = template.signed_attributes(digest, "sha256", profile)
    signature = signer.sign_data(signed_attrs.dump(), "sha256")
    token = None
    if timestamped:
        stamper = FallbackTimeStamper(box_config.tsa_urls)
        token = asyncio.run(stamper.async_timestamp(hashlib.sha256(signature).digest(), "sha256"))

    der = template.package("sha256", signed_attrs, signature, token).dump()

    assert cms.ContentInfo.load(der).dump(force=True) == der  # asn1crypto re-encodes it to the same bytes
    signed_data = cms.ContentInfo.load(der)["content"]
    assert signed_data["version"].native == "v1"
    assert signed_data["encap_content_info"]["content"].native is None  # detached
    assert [c.chosen.dump() for c in signed_data["certificates"]] == sorted(c.dump() for c in signer.cert_registry)
    (info,) = signed_data["signer_infos"]
    attrs = {a["type"].native: a["values"][0] for a in info["signed_attrs"]}
    assert attrs["message_digest"].native == digest
    assert ("signing_time" in attrs) is (profile is Profile.CADES)
    assert "signing_certificate_v2" in attrs
    assert info["signature"].native == signature
    public_key = serialization.load_der_public_key(signer.signing_cert.public_key.dump())
    # What the token signed is the attributes as a SET (tag 0x31), not as [0] IMPLICIT in the SignerInfo.
    public_key.verify(signature, info["signed_attrs"].untag().dump(force=True), padding.PKCS1v15(), hashes.SHA256())
    unsigned = info["unsigned_attrs"].native
    if timestamped:
        assert token is not None
        assert [a["type"] for a in unsigned] == ["signature_time_stamp_token"]
        assert info["unsigned_attrs"][0]["values"][0].dump() == token.dump()
    else:
        assert unsigned is None
