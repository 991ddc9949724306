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

# What Token.generate_key accepts, by name: the choices every face offers (CLI, console, bundles).
KEY_ALGORITHMS: tuple[str, ...] = tuple(algorithm.value for algorithm in KeyAlgorithm)

__all__ = [
    "DIGEST_SIZES", "KEY_ALGORITHMS", "KeyAlgorithm", "KeyExists", "KeyInfo", "KeyNotFound", "SignatureScheme",
    "Token", "TokenConfig", "TokenError", "TokenStatus",
    "TokenUnavailable", "UnsupportedDigest", "check_digest",
]
