"""The dev PKI against a real certomancer Animator: CRL, OCSP, TSA, path validation."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from asn1crypto import crl as asn1_crl
from asn1crypto import ocsp as asn1_ocsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID
from pyhanko.sign.timestamps import HTTPTimeStamper
from pyhanko_certvalidator import CertificateValidator, ValidationContext
from pyhanko_certvalidator.errors import RevokedError

from firmware.devpki import DevPki, PkiServer, PkiServerError


def _spki(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in directory.iterdir()}


@pytest.fixture(scope="module")
def box_key() -> ec.EllipticCurvePrivateKey:
    """Stands in for the key on the box's token."""
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def served_pki(
    tmp_path_factory: pytest.TempPathFactory, box_key: ec.EllipticCurvePrivateKey
) -> Iterator[tuple[DevPki, PkiServer]]:
    port = _free_port()
    pki = DevPki(tmp_path_factory.mktemp("pki"), f"http://127.0.0.1:{port}")
    pki.ensure(_spki(box_key))
    server = PkiServer(pki, port)
    server.start()
    try:
        yield pki, server
    finally:
        server.stop()


def _ocsp_status(pki: DevPki, cert_der: bytes) -> str:
    """Ask the responder named in the cert's AIA; returns good/revoked/unknown.

    The reply is parsed with asn1crypto: certomancer writes producedAt with
    fractional seconds, which cryptography's strict parser refuses.
    """
    cert = x509.load_der_x509_certificate(cert_der)
    issuer = x509.load_der_x509_certificate(pki.intermediate_cert())
    request = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA256()).build()
    url = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value[0]
    assert url.access_method == AuthorityInformationAccessOID.OCSP
    reply = requests.post(
        url.access_location.value,
        data=request.public_bytes(serialization.Encoding.DER),
        headers={"Content-Type": "application/ocsp-request"},
        timeout=5,
    )
    reply.raise_for_status()
    response = asn1_ocsp.OCSPResponse.load(reply.content)
    assert response["response_status"].native == "successful"
    (single,) = response.basic_ocsp_response["tbs_response_data"]["responses"]
    assert single["cert_id"]["serial_number"].native == cert.serial_number
    status: str = single["cert_status"].name
    return status


def _validate(pki: DevPki, chain: list[bytes]) -> None:
    end_entity, *others = (asn1_x509.Certificate.load(der) for der in chain)
    context = ValidationContext(
        trust_roots=[asn1_x509.Certificate.load(pki.root_cert())],
        allow_fetching=True,
        revocation_mode="hard-fail",
    )
    validator = CertificateValidator(end_entity, others, validation_context=context)

    async def validate() -> None:
        try:
            await validator.async_validate_usage({"non_repudiation"})
        finally:
            await context.aclose()

    asyncio.run(validate())


def test_ensure_is_idempotent(tmp_path: Path, box_key: ec.EllipticCurvePrivateKey) -> None:
    pki = DevPki(tmp_path, "http://127.0.0.1:9180")
    pki.ensure(_spki(box_key))
    chain = pki.box_chain()
    before = _snapshot(tmp_path)

    again = DevPki(tmp_path, "http://127.0.0.1:9180")
    again.ensure(_spki(box_key))

    assert _snapshot(tmp_path) == before
    assert again.box_chain() == chain
    assert all(
        (tmp_path / f"{name}.key.pem").stat().st_mode & 0o777 == 0o600
        for name in ("root", "interm", "tsa", "interm-ocsp", "revoked-signer")
    )


def test_new_key_reissues_only_the_box_cert(
    tmp_path: Path, box_key: ec.EllipticCurvePrivateKey
) -> None:
    pki = DevPki(tmp_path, "http://127.0.0.1:9180")
    pki.ensure(_spki(box_key))
    old_box, old_interm, old_root = pki.box_chain()

    new_key = ec.generate_private_key(ec.SECP384R1())
    pki.ensure(_spki(new_key))

    new_box = x509.load_der_x509_certificate(pki.box_cert())
    assert new_box.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == _spki(new_key)
    assert new_box.serial_number != x509.load_der_x509_certificate(old_box).serial_number
    assert pki.intermediate_cert() == old_interm
    assert pki.root_cert() == old_root


def test_new_url_prefix_reissues_all_but_the_root(
    tmp_path: Path, box_key: ec.EllipticCurvePrivateKey
) -> None:
    old = DevPki(tmp_path, "http://127.0.0.1:9180")
    old.ensure(_spki(box_key))
    old_box, old_interm, old_root = old.box_chain()
    moved = DevPki(tmp_path, "http://127.0.0.1:9181")
    moved.ensure(_spki(box_key))

    assert moved.root_cert() == old_root
    assert moved.ocsp_url().startswith("http://127.0.0.1:9181/")
    new_box, new_interm, _ = moved.box_chain()
    for before, after in ((old_box, new_box), (old_interm, new_interm)):
        assert x509.load_der_x509_certificate(before).serial_number != (
            x509.load_der_x509_certificate(after).serial_number
        )


def test_box_cert_profile(served_pki: tuple[DevPki, PkiServer]) -> None:
    pki, _ = served_pki
    cert = x509.load_der_x509_certificate(pki.box_cert())
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.content_commitment
    assert "E-signature Box (development)" in cert.subject.rfc4514_string()
    assert pki.ocsp_url().startswith(pki.url_prefix)
    assert pki.tsa_url().startswith(pki.url_prefix)


def test_server_serves_the_stored_certificates(served_pki: tuple[DevPki, PkiServer]) -> None:
    """The server re-signs every cert on load; it must give the bytes the box stored."""
    pki, server = served_pki
    served = requests.get(
        f"{server.base_url}/esignbox-dev/certs/interm/issued/box-signer.crt", timeout=5
    )
    served.raise_for_status()
    assert served.content == pki.box_cert()


def test_crl_from_distribution_point(served_pki: tuple[DevPki, PkiServer]) -> None:
    pki, _ = served_pki
    box = x509.load_der_x509_certificate(pki.box_cert())
    points = box.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    url = points[0].full_name[0].value
    assert url == pki.crl_urls()[1]

    reply = requests.get(url, timeout=5)
    reply.raise_for_status()
    crl = asn1_crl.CertificateList.load(reply.content)
    interm = asn1_x509.Certificate.load(pki.intermediate_cert())
    assert crl.issuer == interm.subject
    revoked = {
        entry["user_certificate"].native for entry in crl["tbs_cert_list"]["revoked_certificates"]
    }
    assert x509.load_der_x509_certificate(pki.revoked_signer().cert).serial_number in revoked
    assert box.serial_number not in revoked


def test_ocsp_good_for_box(served_pki: tuple[DevPki, PkiServer]) -> None:
    pki, _ = served_pki
    assert _ocsp_status(pki, pki.box_cert()) == "good"


def test_ocsp_revoked_for_revoked_signer(served_pki: tuple[DevPki, PkiServer]) -> None:
    pki, _ = served_pki
    assert _ocsp_status(pki, pki.revoked_signer().cert) == "revoked"


def test_timestamp_granted(served_pki: tuple[DevPki, PkiServer]) -> None:
    pki, _ = served_pki
    digest = hashlib.sha256(b"document").digest()
    token = asyncio.run(HTTPTimeStamper(pki.tsa_url()).async_timestamp(digest, "sha256"))
    tst_info = token["content"]["encap_content_info"]["content"].parsed
    assert tst_info["message_imprint"]["hashed_message"].native == digest


def test_box_chain_validates_with_live_revocation(served_pki: tuple[DevPki, PkiServer]) -> None:
    pki, _ = served_pki
    _validate(pki, pki.box_chain())


def test_revoked_signer_fails_validation(served_pki: tuple[DevPki, PkiServer]) -> None:
    pki, _ = served_pki
    with pytest.raises(RevokedError):
        _validate(pki, [pki.revoked_signer().cert, pki.intermediate_cert()])
    assert pki.revoked_signer().key_path.exists()


def test_server_refuses_a_busy_port(served_pki: tuple[DevPki, PkiServer]) -> None:
    pki, server = served_pki
    with pytest.raises(PkiServerError, match="in use"):
        PkiServer(pki, server.port).start()


def test_server_failure_reports_certomancer_output(tmp_path: Path) -> None:
    never_ensured = DevPki(tmp_path, "http://127.0.0.1:1")
    with pytest.raises(PkiServerError, match=r"certomancer\.yml"):
        PkiServer(never_ensured, _free_port()).start()


def test_a_server_of_two_processes_answers_while_one_is_held(tmp_path: Path, box_key) -> None:
    """One process is held by a client that never ends its request's head; the other still
    stamps (one `certomancer animate` would wait for the rest). Stopped, none is left on the port."""
    port = _free_port()
    pki = DevPki(tmp_path, f"http://127.0.0.1:{port}")
    pki.ensure(_spki(box_key))
    server = PkiServer(pki, port, processes=2)
    server.start()
    try:
        with socket.create_connection(("127.0.0.1", port)) as held:
            held.sendall(b"POST /never HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            time.sleep(0.5)  # a process has taken it and waits for the rest of the head
            digest = hashlib.sha256(b"while one is held").digest()
            token = asyncio.run(HTTPTimeStamper(pki.tsa_url(), timeout=10).async_timestamp(digest, "sha256"))
            assert token["content"]["encap_content_info"]["content"].parsed["message_imprint"]["hashed_message"].native \
                == digest
    finally:
        server.stop()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))  # every process has exited: the port is free
