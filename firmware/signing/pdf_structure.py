"""The skeleton of a PDF, checked before pyHanko walks it: page tree and form field tree.

pyHanko walks both trees recursively and follows every path: a page tree thousands of levels
deep ends in a RecursionError, and a form whose sixty fields each list the next one twice as a
kid makes 2**60 paths, a worker that never finishes. Both trees have exactly one parent per node
(ISO 32000-1, 7.7.3.2 and 12.7.3.1), so a node reached twice is refused, as is a tree deeper than
any real document's. Each walk visits a node once, level by level, without recursion.

The field tree is walked whole: pyHanko enumerates every field anyway and keeps what it parsed,
so the walk costs nothing extra. The page tree is followed down its first branch only (the way
pyHanko goes to put a signature widget on page 1): parsing every page object would cost seconds
for a document of thousands of pages, which pyHanko never reads.
"""

from __future__ import annotations

from collections.abc import Callable

from pyhanko.pdf_utils import generic

# Real page trees are balanced (a few levels for thousands of pages), field trees follow a form's
# naming (a.b.c); pyHanko's recursion stays far below the interpreter's limit at this depth.
MAX_TREE_DEPTH = 100


def _resolved(dictionary: generic.PdfObject | None, key: str) -> generic.PdfObject | None:
    """``dictionary[key]`` with references followed (pyHanko's ``get`` leaves them), or None."""
    if not isinstance(dictionary, generic.DictionaryObject) or key not in dictionary:
        return None
    value: generic.PdfObject = dictionary[key]
    return value


def _target(reference: generic.Dereferenceable) -> generic.PdfObject:
    """The object behind an IndirectObject (typed through the interface pyHanko annotates)."""
    return reference.get_object()


def _first_page_kid(node: generic.PdfObject) -> generic.ArrayObject | None:
    # pyHanko descends into nodes of /Type /Pages
    node_type = _resolved(node, "/Type")
    kids = _resolved(node, "/Kids") if isinstance(node_type, str) and node_type == "/Pages" else None
    return generic.ArrayObject([kids.raw_get(0)]) if isinstance(kids, generic.ArrayObject) and kids else None


def _field_kids(node: generic.PdfObject) -> generic.PdfObject | None:
    # pyHanko descends into fields with a name (/T); bare widgets end a branch
    return _resolved(node, "/Kids") if _resolved(node, "/T") is not None else None


def _tree_fault(
    top: generic.PdfObject | None, kids: Callable[[generic.PdfObject], generic.PdfObject | None], name: str
) -> str | None:
    """Walk the tree under the array ``top``; what is wrong with it, or None."""
    seen: set[generic.Reference] = set()
    level, depth = [top], 0
    while level:
        depth += 1
        if depth > MAX_TREE_DEPTH:
            return f"its {name} is more than {MAX_TREE_DEPTH} levels deep"
        below = []
        for array in level:
            if not isinstance(array, generic.ArrayObject):
                continue  # pyHanko refuses or skips what is no array of kids
            for entry in array:  # iterating an ArrayObject yields references unresolved
                if not isinstance(entry, generic.IndirectObject):
                    continue
                if entry.reference in seen:
                    return f"object {entry.idnum} is reached twice in its {name}"
                seen.add(entry.reference)
                below.append(kids(_target(entry)))
        level = below
    return None


def structure_fault(root: generic.DictionaryObject) -> str | None:
    """What in the document catalog ``root`` the box will not hand to pyHanko, or None."""
    pages = root.raw_get("/Pages") if "/Pages" in root else None
    if not isinstance(pages, generic.IndirectObject) or _first_page_kid(_target(pages)) is None:
        return "it has no page tree"
    return _tree_fault(generic.ArrayObject([pages]), _first_page_kid, "page tree") or _tree_fault(
        _resolved(_resolved(root, "/AcroForm"), "/Fields"), _field_kids, "form field tree"
    )
