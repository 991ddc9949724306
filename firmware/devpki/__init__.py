"""Development/test PKI: certomancer-issued box certificate plus live TSA, OCSP and CRLs."""

from .pki import DevPki, SoftSigner
from .server import PkiServer, PkiServerError

__all__ = ["DevPki", "PkiServer", "PkiServerError", "SoftSigner"]
