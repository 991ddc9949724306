"""The token layer against a real SoftHSM2 token: key protection, every sign scheme, threads,
fork, reconnect after the token's sessions vanish, and CSR → CA → chain import."""

from __future__ import annotations

import ctypes
import datetime
import hashlib
import logging
import os
import subprocess
import sys
import threading
import time

import pkcs11
import pytest
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from firmware.certificates import check_chain
from firmware.errors import InvalidRequest
from firmware.operations.keys import build_csr, parse_subject
from hsm import (
    KeyAlgorithm,
    KeyExists,
    KeyNotFound,
    SignatureScheme,
    Token,
    UnsupportedDigest,
)
from hsm.module import load_module

HASHES = {"sha256": hashes.SHA256(), "sha384": hashes.SHA384(), "sha512": hashes.SHA512()}


@pytest.fixture(scope="module")
def token(box_config) -> Token:
    return Token(box_config.token_config())


@pytest.fixture(scope="module")
def keys(token: Token) -> dict[KeyAlgorithm, str]:
    labels = {}
    for algorithm in KeyAlgorithm:
        label = f"test-{algorithm.value}"
        token.generate_key(label, algorithm)
        labels[algorithm] = label
    return labels


def _public(token: Token, label: str):
    return serialization.load_der_public_key(token.key(label).public_key_info)


def _labels(token: Token) -> set[str]:
    listed = token.keys()
    return {info.label for info in listed}


def _verify(public_key, signature: bytes, message: bytes, algorithm: str, scheme: SignatureScheme) -> None:
    h = HASHES[algorithm]
    if scheme is SignatureScheme.ECDSA:
        public_key.verify(signature, message, ec.ECDSA(h))
    elif scheme is SignatureScheme.RSA_PSS:
        public_key.verify(signature, message, padding.PSS(padding.MGF1(h), h.digest_size), h)
    else:
        public_key.verify(signature, message, padding.PKCS1v15(), h)


def test_private_keys_are_generated_on_the_token_and_never_extractable(token, keys):
    for label in keys.values():
        assert token.private_key_attributes(label) == {
            "sensitive": True, "extractable": False, "always_sensitive": True,
            "never_extractable": True, "local": True,
        }


def test_private_key_material_cannot_be_read_out(box_config, token, keys):
    config = box_config.token_config()
    session = load_module(config.module).get_token(token_label=config.token_label).open()
    try:
        rsa_key = session.get_key(object_class=pkcs11.ObjectClass.PRIVATE_KEY, label=keys[KeyAlgorithm.RSA_2048])
        with pytest.raises(pkcs11.exceptions.AttributeSensitive):
            rsa_key[pkcs11.Attribute.PRIVATE_EXPONENT]
        ec_key = session.get_key(object_class=pkcs11.ObjectClass.PRIVATE_KEY, label=keys[KeyAlgorithm.EC_P256])
        with pytest.raises(pkcs11.exceptions.AttributeSensitive):
            ec_key[pkcs11.Attribute.VALUE]
    finally:
        session.close()


@pytest.mark.parametrize("algorithm", ["sha256", "sha384", "sha512"])
@pytest.mark.parametrize(
    "key_algorithm,scheme",
    [
        (KeyAlgorithm.RSA_2048, SignatureScheme.RSA_PKCS1V15),
        (KeyAlgorithm.RSA_3072, SignatureScheme.RSA_PSS),
        (KeyAlgorithm.EC_P256, SignatureScheme.ECDSA),
        (KeyAlgorithm.EC_P384, SignatureScheme.ECDSA),
    ],
)
def test_sign_digest_verifies_with_the_public_key(token, keys, key_algorithm, scheme, algorithm):
    message = b"document " + algorithm.encode()
    digest = hashlib.new(algorithm, message).digest()
    signature = token.sign_digest(keys[key_algorithm], digest, algorithm, scheme)
    _verify(_public(token, keys[key_algorithm]), signature, message, algorithm, scheme)


def test_bad_digests_are_refused_before_the_token(token, keys):
    label = keys[KeyAlgorithm.RSA_2048]
    with pytest.raises(UnsupportedDigest, match="32 bytes"):
        token.sign_digest(label, b"\0" * 31, "sha256", SignatureScheme.RSA_PKCS1V15)
    with pytest.raises(UnsupportedDigest, match="unsupported hash algorithm"):
        token.sign_digest(label, b"\0" * 16, "md5", SignatureScheme.RSA_PKCS1V15)


def test_unknown_key_and_duplicate_label(token, keys):
    with pytest.raises(KeyNotFound):
        token.sign_digest("no-such-key", b"\0" * 32, "sha256", SignatureScheme.RSA_PKCS1V15)
    with pytest.raises(KeyExists):
        token.generate_key(keys[KeyAlgorithm.EC_P256], KeyAlgorithm.EC_P256)


def test_destroyed_key_is_gone_and_its_label_is_free_again(token, caplog):
    """Both halves go; a session that signed with the old key signs with the new one of the
    same label (no stale cached handle, which would cost a reconnection), and destroying what
    is not there says so."""
    caplog.set_level(logging.INFO, logger="hsm.token")
    label = "test-destroy"
    first = token.generate_key(label, KeyAlgorithm.EC_P256)
    for _ in range(token.info()["sessions"] + 1):  # every pooled session caches its handle
        token.sign_digest(label, b"\0" * 32, "sha256", SignatureScheme.ECDSA)
    token.destroy_key(label)
    assert label not in _labels(token)
    with pytest.raises(KeyNotFound):
        token.sign_digest(label, b"\0" * 32, "sha256", SignatureScheme.ECDSA)
    with pytest.raises(KeyNotFound):
        token.destroy_key(label)
    second = token.generate_key(label, KeyAlgorithm.EC_P256)
    assert second.public_key_info != first.public_key_info
    message = b"signed by the second key"
    for _ in range(token.info()["sessions"] + 1):
        signature = token.sign_digest(label, hashlib.sha256(message).digest(), "sha256", SignatureScheme.ECDSA)
        _verify(_public(token, label), signature, message, "sha256", SignatureScheme.ECDSA)
    token.destroy_key(label)
    assert label not in _labels(token)
    assert not [r.getMessage() for r in caplog.records if "reconnect" in r.getMessage()]


def test_refused_operations_give_their_session_back(token, keys):
    """Each refusal borrows a pooled session; more refusals than sessions must leave the pool whole."""
    for _ in range(token.info()["sessions"] + 1):
        with pytest.raises(KeyExists):
            token.generate_key(keys[KeyAlgorithm.EC_P256], KeyAlgorithm.EC_P256)
        with pytest.raises(KeyNotFound):
            token.key("no-such-key")
    started = time.monotonic()
    token.sign_digest(keys[KeyAlgorithm.EC_P256], b"\0" * 32, "sha256", SignatureScheme.ECDSA)
    assert time.monotonic() - started < 1.0


def test_eight_threads_share_the_session_pool_safely(token, keys):
    label = keys[KeyAlgorithm.RSA_2048]
    public = _public(token, label)
    failures: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(60):
                message = f"{n}-{i}".encode()
                signature = token.sign_digest(label, hashlib.sha256(message).digest(), "sha256",
                                              SignatureScheme.RSA_PKCS1V15)
                _verify(public, signature, message, "sha256", SignatureScheme.RSA_PKCS1V15)
        except BaseException as exc:  # collected and asserted below
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert token.thread_safe and token.info()["sessions"] == 2


def test_token_reconnects_after_its_sessions_vanish(token, keys, box_config):
    """What a pulled and re-inserted token looks like to the host: every session handle is gone."""
    label = keys[KeyAlgorithm.EC_P256]
    digest = hashlib.sha256(b"before").digest()
    token.sign_digest(label, digest, "sha256", SignatureScheme.ECDSA)
    dll = ctypes.CDLL(box_config.token.module)
    slot = load_module(box_config.token.module).get_token(token_label=box_config.token.label).slot.slot_id
    assert dll.C_CloseAllSessions(ctypes.c_ulong(slot)) == 0
    message = b"after"
    signature = token.sign_digest(label, hashlib.sha256(message).digest(), "sha256", SignatureScheme.ECDSA)
    _verify(_public(token, label), signature, message, "sha256", SignatureScheme.ECDSA)


def test_a_forked_child_initialises_the_module_again(token, keys):
    label = keys[KeyAlgorithm.EC_P256]
    token.sign_digest(label, hashlib.sha256(b"parent").digest(), "sha256", SignatureScheme.ECDSA)
    pid = os.fork()
    if pid == 0:  # child: must sign on its own sessions, then leave without running pytest's atexit
        code = 1
        try:
            message = b"child"
            signature = token.sign_digest(label, hashlib.sha256(message).digest(), "sha256", SignatureScheme.ECDSA)
            _verify(_public(token, label), signature, message, "sha256", SignatureScheme.ECDSA)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    token.sign_digest(label, hashlib.sha256(b"parent again").digest(), "sha256", SignatureScheme.ECDSA)


def test_wrong_pin_and_missing_token(box_config):
    """In a fresh process: login state is per process and this one is already logged in."""
    config = box_config.token_config()
    script = (
        "import sys\n"
        "from hsm import Token, TokenConfig, TokenError, TokenUnavailable\n"
        "module, label, pin = sys.argv[1:4]\n"
        "try:\n"
        "    Token(TokenConfig(module, 'no-such-token', pin))\n"
        "except TokenUnavailable:\n"
        "    pass\n"
        "else:\n"
        "    sys.exit('missing token not detected')\n"
        "try:\n"
        "    Token(TokenConfig(module, label, '0000wrong'))\n"
        "except TokenError as exc:\n"
        "    print(exc)\n"
        "else:\n"
        "    sys.exit('wrong PIN accepted')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, config.module, config.token_label, config.pin],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    assert "PIN rejected" in result.stdout
    assert "0000wrong" not in result.stdout + result.stderr


def test_pin_is_not_in_the_token_config_repr(box_config):
    config = box_config.token_config()
    assert config.pin not in repr(config)


def _test_ca() -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "CSR Test CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


@pytest.mark.parametrize("algorithm", [KeyAlgorithm.RSA_2048, KeyAlgorithm.EC_P256])
def test_csr_from_token_key_is_issued_by_a_ca_and_the_chain_imports(token, keys, algorithm):
    label = keys[algorithm]
    request = x509.load_pem_x509_csr(build_csr(token, label, parse_subject("CN=Signing Box,O=Example Ltd,C=BE")))
    assert request.is_signature_valid
    assert request.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Signing Box"

    ca_key, ca_cert = _test_ca()
    now = datetime.datetime.now(datetime.UTC)
    issued = (
        x509.CertificateBuilder().subject_name(request.subject).issuer_name(ca_cert.subject)
        .public_key(request.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=30))
        .sign(ca_key, hashes.SHA256())
    )
    chain = [asn1_x509.Certificate.load(c.public_bytes(serialization.Encoding.DER)) for c in (issued, ca_cert)]
    check_chain(token, label, chain)

    other = keys[KeyAlgorithm.EC_P384]
    with pytest.raises(InvalidRequest, match="not for token key"):
        check_chain(token, other, chain)
    with pytest.raises(InvalidRequest, match="not issued by"):
        check_chain(token, label, [chain[0], chain[0]])


def test_subject_parsing_refuses_nonsense():
    with pytest.raises(InvalidRequest):
        parse_subject("O=No Common Name")
    with pytest.raises(InvalidRequest):
        parse_subject("CN=Box,XX=what")
