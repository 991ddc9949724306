"""Everything that touches PKCS#11. Nothing outside this package imports pkcs11."""

from .mechanisms import DIGEST_SIZES, SignatureScheme, UnsupportedDigest, check_digest
from .token import (
    KeyAlgorithm,
    KeyExists,
    KeyInfo,
    KeyNotFound,
    Token,
    TokenConfig,
    TokenError,
    TokenStatus,
    TokenUnavailable,
)

__all__ = [
    "DIGEST_SIZES", "KeyAlgorithm", "KeyExists", "KeyInfo", "KeyNotFound", "SignatureScheme",
    "Token", "TokenConfig", "TokenError", "TokenStatus",
    "TokenUnavailable", "UnsupportedDigest", "check_digest",
]
