"""Contract signing (issue 12): envelopes with several parties, their trail and its certificate.

The certificate and the previews load pyHanko, so they are imported when first named (PEP 562),
not with the package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports
from .trail import CompletionTrail, TrailEvent, TrailParty

if TYPE_CHECKING:
    from .completion import completion_pdf
    from .preview import PreviewUnavailable, page_count, render_page

__all__ = [
    "CompletionTrail", "PreviewUnavailable", "TrailEvent", "TrailParty", "completion_pdf", "page_count", "render_page",
]

_HEAVY = {"completion_pdf": "completion", "PreviewUnavailable": "preview", "page_count": "preview",
          "render_page": "preview"}

__getattr__ = lazy_exports(__name__, _HEAVY)
