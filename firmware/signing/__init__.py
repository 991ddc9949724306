"""The signing core: CMS and PDF signatures made with the token key, timestamps and LTV data.

The levels (module ``levels``) are light and imported at once: the configuration checks them. The
services load pyHanko, so they are imported when first named (PEP 562), not with the package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports
from .levels import DEFAULT_LEVEL, HASH_LEVELS, Level, Profile, hash_level, parse_enum

if TYPE_CHECKING:
    from .hash_signing import HashSigningService
    from .pdf_signing import PdfSigningService, check_stamp_text
    from .raw_signing import RawSigningService
    from .token_signer import TokenSigner

__all__ = [
    "DEFAULT_LEVEL", "HASH_LEVELS", "HashSigningService", "Level", "PdfSigningService", "Profile", "RawSigningService",
    "TokenSigner", "check_stamp_text", "hash_level", "parse_enum",
]

_HEAVY = {"HashSigningService": "hash_signing", "PdfSigningService": "pdf_signing", "check_stamp_text": "pdf_signing",
          "RawSigningService": "raw_signing", "TokenSigner": "token_signer"}

__getattr__ = lazy_exports(__name__, _HEAVY)
