"""The Cloud Signature Consortium remote-signing API (v1.0.4 and v2.0) in front of the box's key.

CSC clients log in with their API key for a short-lived access token, ask ``credentials/authorize``
for a SAD bound to the exact hashes they will sign, and trade the SAD for raw signatures
(``signHash``) or, in v2, for CMS signatures made by the box's hash-signing service (``signDoc``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

if TYPE_CHECKING:
    from .routes import CscSessions, add_csc_routes

__all__ = ["CscSessions", "add_csc_routes"]

# The CSC resources share request parsing and errors with firmware.api, which names CSC routes:
# loaded on first use, the two packages do not import each other while initialising.
__getattr__ = lazy_exports(__name__, {"CscSessions": "routes", "add_csc_routes": "routes"})
