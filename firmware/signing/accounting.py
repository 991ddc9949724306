"""The one admit → sign → record path every signing service goes through.

A released signature is always an accounted one. The client's quota and rates are checked
(``SignatureLedger.admit``) before the token does any work, so a refused client costs the token
nothing; every signature made is then durably recorded (``SignatureLedger.record``, which charges
the quota exactly and may still refuse) before any of it is returned. Hash, raw and PDF signing
differ only in the token work between the two, so that work is what they hand to ``Accounting.run``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from ..store.ledger import SignatureLedger, SignatureRecord

T = TypeVar("T")


class SigningKey(Protocol):
    """What the ledger records of the key that signed: the token's label and the certificate."""

    @property
    def key_label(self) -> str: ...

    @property
    def cert_serial(self) -> str: ...


@dataclass(frozen=True)
class Signed:
    """One signature made, as the ledger records it; ``digest`` is the hash that was signed."""

    hash_algorithm: str
    digest: bytes
    level: str
    profile: str


class Accounting:
    """Admit, sign, record for one endpoint family (``kind``: "hash", "raw", "pdf")."""

    def __init__(self, ledger: SignatureLedger, signer: SigningKey, kind: str) -> None:
        self._ledger = ledger
        self._signer = signer
        self._kind = kind

    def run(self, client_id: str, count: int, sign: Callable[[], tuple[T, list[Signed]]]) -> T:
        """Admit ``count`` signatures, run ``sign``, record what it signed, then return its result.

        Raises metering.Refusal from the admission (before ``sign`` runs) or from the recording
        (then the result is dropped); whatever ``sign`` raises passes through unrecorded.
        """
        self._ledger.admit(client_id, count)
        result, signed = sign()
        self._ledger.record(
            [
                SignatureRecord(
                    client_id=client_id,
                    kind=self._kind,
                    hash_algorithm=s.hash_algorithm,
                    document_hash=s.digest.hex(),
                    key_label=self._signer.key_label,
                    cert_serial=self._signer.cert_serial,
                    level=s.level,
                    profile=s.profile,
                )
                for s in signed
            ]
        )
        return result
