"""Every check a bundle must pass before any of it is applied; the first failure is the reason.

Order: signed at all → by the trusted key → signature over the digest list → manifest valid →
meant for this box → not a replay → not created in the future → not expired → its files parse. The manifest is parsed only
after the signature checked out, so nothing unauthenticated is interpreted beyond the framing.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from asn1crypto import x509

from firmware.certificates import CertificateError, read_certificates

from . import keys as pkeys
from . import manifest as manifest_mod
from .bundle import SIGNATURE_FORMAT, RawBundle
from .errors import ProvisioningRefused
from .manifest import Manifest
from .state import Record

__all__ = ["CLOCK_SKEW", "AlreadyApplied", "ProvisioningRefused", "VerifiedBundle", "load_pem_certificates", "verify"]

# How far the admin PC's clock may run ahead of the box's. A bundle "created" further in the future
# is refused: a forged date would otherwise stretch its validity window at will.
CLOCK_SKEW = timedelta(minutes=10)


class AlreadyApplied(ProvisioningRefused):
    """This exact bundle is the one last applied: nothing to do, and not an attack."""

    def __init__(self, counter: int) -> None:
        super().__init__("already-applied", f"this bundle (counter {counter}) is already applied")


@dataclass(frozen=True)
class VerifiedBundle:
    raw: RawBundle
    manifest: Manifest
    key_id: str
    certificates: dict[str, list[x509.Certificate]]  # file name → parsed certificates


def load_pem_certificates(data: bytes, name: str) -> list[x509.Certificate]:
    """A bundle's certificate file: PEM only (firmware.certificates reads it), refused as invalid content."""
    try:
        return read_certificates(data, pem_only=True)
    except CertificateError as exc:
        raise ProvisioningRefused("invalid-content", f"files/{name} is not PEM certificates: {exc}") from exc


def _signature(raw: RawBundle) -> tuple[str, str, bytes]:
    if raw.signature is None:
        raise ProvisioningRefused("unsigned", "the bundle is not signed (no manifest.sig)")
    try:
        doc = json.loads(raw.signature.decode("utf-8"))
        if not isinstance(doc, dict) or doc.get("format") != SIGNATURE_FORMAT:
            raise ValueError(f"format is not {SIGNATURE_FORMAT}")
        algorithm, key_id = doc["algorithm"], doc["key_id"]
        if not isinstance(algorithm, str) or not isinstance(key_id, str):
            raise ValueError("algorithm and key_id must be text")
        signature = base64.b64decode(doc["signature"], validate=True)
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise ProvisioningRefused("malformed", f"manifest.sig is unreadable: {exc}") from exc
    return algorithm, key_id, signature


def verify(
    raw: RawBundle,
    trusted: pkeys.PublicKey,
    last: Record | None,
    box_serial: Callable[[], str],
    now: datetime | None = None,
) -> VerifiedBundle:
    algorithm, key_id, signature = _signature(raw)
    trusted_id = pkeys.key_id(trusted)
    if key_id != trusted_id:
        raise ProvisioningRefused(
            "untrusted-signer",
            f"signed by key {key_id[:16]}…, but this box trusts only {trusted_id[:16]}…",
        )
    if algorithm != pkeys.algorithm(trusted) or not pkeys.verify(trusted, signature, raw.digest_list()):
        raise ProvisioningRefused(
            "bad-signature", "the signature does not match the bundle's contents (tampered or damaged)"
        )
    manifest = manifest_mod.parse(raw.manifest, set(raw.files))

    if manifest.box_serial is not None:
        serial = box_serial()
        if manifest.box_serial != serial:
            raise ProvisioningRefused(
                "wrong-box", f"the bundle is for box {manifest.box_serial!r}; this box is {serial!r}"
            )
    if last is not None and manifest.counter <= last.counter:
        if raw.digest == last.bundle_digest:
            raise AlreadyApplied(manifest.counter)
        raise ProvisioningRefused(
            "replay", f"counter {manifest.counter} is not above the last applied counter {last.counter}"
        )
    now = now or datetime.now(UTC)
    if manifest.created_at > now + CLOCK_SKEW:
        raise ProvisioningRefused(
            "not-yet-valid",
            f"the bundle says it was created at {manifest.created_at.isoformat()}, but the box clock reads "
            f"{now.isoformat(timespec='seconds')}: either the bundle is forged in time or the box clock is wrong "
            "(set the clock, e.g. let it synchronise by NTP, then try again)",
        )
    if now >= manifest.expires_at:
        raise ProvisioningRefused("expired", f"the bundle expired at {manifest.expires_at.isoformat()}")

    certificates = {}
    if manifest.trust_roots:
        certificates[manifest.trust_roots] = load_pem_certificates(raw.files[manifest.trust_roots], manifest.trust_roots)
    if manifest.signing_chain:
        name = manifest.signing_chain.file
        certificates[name] = load_pem_certificates(raw.files[name], name)
    return VerifiedBundle(raw, manifest, key_id, certificates)
