"""The certificate directory: people's e-mail encryption certificates, checked, proven and looked up
by exact address (issue 11). HTTP face: firmware/api/directory.py."""

from .addresses import AddressInvalid, normalise
from .checks import CHECKS, CertificateRefused, CheckedCertificate, check_certificate, fingerprint
from .service import (
    PROOF_PATH,
    DirectoryService,
    NoCertificate,
    ProofInvalid,
    ProofSecret,
    ProofSender,
    RecheckChange,
    UndeliveredProofs,
)
from .store import CertificateRow, DirectoryStore

__all__ = [
    "CHECKS", "PROOF_PATH", "AddressInvalid", "CertificateRefused", "CertificateRow", "CheckedCertificate",
    "DirectoryService", "DirectoryStore", "NoCertificate", "ProofInvalid", "ProofSecret", "ProofSender",
    "RecheckChange", "UndeliveredProofs", "check_certificate", "fingerprint", "normalise",
]
