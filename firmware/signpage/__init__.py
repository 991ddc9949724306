"""The signing page people outside the LAN open from their invitation (issue 12)."""

from .page import SIGN_PAGE_PREFIX, add_signing_page_routes

__all__ = ["SIGN_PAGE_PREFIX", "add_signing_page_routes"]
