"""Development/test PKI: certomancer-issued box certificate plus live TSA, OCSP and CRLs, and the
e-mail certificates of a few people (MAIL_USERS) for the certificate directory."""

from .pki import BOX_MAIL_ADDRESS, MAIL_USERS, DevPki, SoftSigner
from .server import PkiServer, PkiServerError

__all__ = ["BOX_MAIL_ADDRESS", "MAIL_USERS", "DevPki", "PkiServer", "PkiServerError", "SoftSigner"]
