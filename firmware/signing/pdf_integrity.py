"""The last check before a signed PDF leaves the box: every signature that was already in the
document is still intact, and what was appended after it is within what it permits (DocMDP,
field locks, pyHanko's rules for changes after a certification or approval signature).

Every path that releases a PDF calls `check_earlier_signatures` (POST /v1/pdf/sign today).
It judges integrity and modification level only, never trust or revocation, so it needs no
network at any level, B-B included. A document with no earlier signature costs nothing. When an
earlier signature fails, the same check on the document as received tells whether the caller
sent it broken or signing broke it; either way nothing is released.
"""

from __future__ import annotations

import io

from pyhanko.pdf_utils.misc import PdfError
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.diff_analysis import DiffResult, SuspiciousModification
from pyhanko.sign.fields import enumerate_sig_fields
from pyhanko.sign.general import find_unique_cms_attribute
from pyhanko.sign.validation import EmbeddedPdfSignature
from pyhanko.sign.validation.errors import SignatureValidationError

__all__ = ["EarlierSignatureBroken", "check_earlier_signatures"]


class EarlierSignatureBroken(RuntimeError):
    """A signature that was in the document is broken, or signing would break it: nothing released."""


def _intact(sig: EmbeddedPdfSignature) -> bool:
    """The signed byte ranges still hash to what the signature (or document timestamp) commits to.

    The signature value itself is not re-verified: appending to a file cannot change it, and
    the verify endpoint is where a signature's cryptography and trust are judged.
    """
    if sig.sig_object_type == "/DocTimeStamp":
        imprint = sig.signed_data["encap_content_info"]["content"].parsed["message_imprint"]
        stamped: bytes = imprint["hashed_message"].native
        return stamped == sig.compute_digest(imprint["hash_algorithm"]["algorithm"].native)
    committed: bytes = find_unique_cms_attribute(sig.signer_info["signed_attrs"], "message_digest").native
    return committed == sig.compute_digest()


def _problem(sig: EmbeddedPdfSignature) -> str | None:
    """Why ``sig`` no longer holds, or None if it does."""
    try:
        if not _intact(sig):
            return "its signed bytes no longer match its signature"
        sig.compute_integrity_info()  # type: ignore[no-untyped-call]  # pyHanko leaves it unannotated
        info = sig.summarise_integrity_info()
    except (ValueError, KeyError, PdfError, SignatureValidationError) as exc:
        return f"it cannot be evaluated: {exc}"
    diff = info["diff_result"]
    if isinstance(diff, SuspiciousModification):
        return f"the changes after it are not permitted: {diff}"
    if not info["docmdp_ok"]:
        level = diff.modification_level.name if isinstance(diff, DiffResult) else "unknown"
        permitted = sig.docmdp_level.value if sig.docmdp_level is not None else "none"
        return f"the changes after it ({level}) exceed what it permits (DocMDP {permitted})"
    return None


def _broken(reader: PdfFileReader, fields: set[str]) -> dict[str, str]:
    """Only the named signatures are read: reading a signature's /Contents is most of the cost."""
    problems = {}
    for name, _, ref in enumerate_sig_fields(reader, filled_status=True):
        if name in fields:
            problem = _problem(EmbeddedPdfSignature(reader, ref.get_object(), name))
            if problem is not None:
                problems[name] = problem
    return problems


def check_earlier_signatures(original: bytes, signed: io.BytesIO) -> None:
    """Raise EarlierSignatureBroken unless every signature of ``original`` holds in ``signed``.

    ``original`` is read afresh: a reader that pyHanko's incremental writer worked from has the
    new signature's objects in its cache.
    """
    before = PdfFileReader(io.BytesIO(original), strict=True)
    earlier = {name for name, _, _ in enumerate_sig_fields(before, filled_status=True)}
    if not earlier:
        return
    broken = _broken(PdfFileReader(signed, strict=True), earlier)
    if not broken:
        return
    already = _broken(before, set(broken))
    name, problem = next(iter(already.items()), None) or next(iter(broken.items()))
    if name in already:
        raise EarlierSignatureBroken(
            f"signature '{name}' of the PDF sent is already broken ({problem}); the box adds no signature"
            " to a document whose signatures do not hold"
        )
    raise EarlierSignatureBroken(f"signing would break signature '{name}' ({problem}); no PDF was released")
