"""PDF test helpers: documents made with pyHanko's writer, and the outside checks of signed ones.

Documents are N pages of text padded to a target size. The padding is a grey-scale image of
random pixels referenced from the first page's resources (but not drawn), so the file is
well-formed for qpdf and pdfsig at any size and random data keeps the size honest (nothing
compresses it away). Signed documents are checked with poppler's pdfsig, qpdf --check and
pyHanko's validator (hard-fail, online or from the DSS alone). Hostile documents are written
byte by byte (``raw_pdf``), so each says exactly what is wrong with it.
"""

from __future__ import annotations

import hashlib
import io
import random
import subprocess
from pathlib import Path

from asn1crypto import x509
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.generic import pdf_name
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.pdf_utils.writer import PageObject, PdfFileWriter
from pyhanko.sign.fields import FieldMDPAction, FieldMDPSpec, MDPPerm, SigFieldSpec, append_signature_field
from pyhanko.sign.validation import DocumentSecurityStore, validate_pdf_signature
from pyhanko.sign.validation.status import PdfSignatureStatus
from pyhanko_certvalidator import ValidationContext

KB = 1024
MB = 1024 * KB
# The text every page shows; tests flip a byte of it to tamper with a signed range.
PAGE_TEXT = "E-signature Box test document, page"
_IMAGE_WIDTH = 1024


# Text under the place where the stamp tests put their stamp (x 50-300, y 50-120): an opaque
# stamp must hide it.
FOOTER_TEXT = "Footer row that a stamp must cover"


def _page(writer: PdfFileWriter, number: int, resources: generic.DictionaryObject) -> PageObject:
    lines = [f"BT /F1 14 Tf 72 760 Td ({PAGE_TEXT} {number}) Tj ET"]
    lines += [f"BT /F1 12 Tf 55 {y} Td ({FOOTER_TEXT}) Tj ET" for y in range(55, 120, 14)]
    content = "\n".join(lines).encode("ascii")
    stream = writer.add_object(generic.StreamObject(stream_data=content))
    return PageObject(contents=stream, media_box=[0, 0, 595, 842], resources=resources)


def _noise_image(writer: PdfFileWriter, size: int, seed: int) -> generic.IndirectObject:
    height = -(-size // _IMAGE_WIDTH)
    pixels = random.Random(seed).randbytes(_IMAGE_WIDTH * height)
    image = generic.StreamObject(
        {
            pdf_name("/Type"): pdf_name("/XObject"),
            pdf_name("/Subtype"): pdf_name("/Image"),
            pdf_name("/Width"): generic.NumberObject(_IMAGE_WIDTH),
            pdf_name("/Height"): generic.NumberObject(height),
            pdf_name("/ColorSpace"): pdf_name("/DeviceGray"),
            pdf_name("/BitsPerComponent"): generic.NumberObject(8),
        },
        stream_data=pixels,
    )
    return writer.add_object(image)


def make_pdf(
    pages: int = 1,
    size: int = 0,
    seed: int = 0,
    owner_password: str | None = None,
    empty_fields: tuple[SigFieldSpec, ...] = (),
) -> bytes:
    """A PDF of ``pages`` text pages, at least ``size`` bytes long; encrypted if a password is given.

    ``empty_fields``: signature fields to prepare for signing (a form such as acroform_fields.pdf).
    """
    writer = PdfFileWriter()
    font = generic.DictionaryObject(
        {
            pdf_name("/Type"): pdf_name("/Font"),
            pdf_name("/Subtype"): pdf_name("/Type1"),
            pdf_name("/BaseFont"): pdf_name("/Helvetica"),
        }
    )
    fonts = generic.DictionaryObject({pdf_name("/F1"): writer.add_object(font)})
    for number in range(1, pages + 1):
        resources = generic.DictionaryObject({pdf_name("/Font"): fonts})
        if number == 1 and size:
            resources[pdf_name("/XObject")] = generic.DictionaryObject(
                {pdf_name("/Noise"): _noise_image(writer, size, seed)}
            )
        writer.insert_page(_page(writer, number, resources))
    for spec in empty_fields:
        append_signature_field(writer, spec)
    if owner_password is not None:
        writer.encrypt(owner_password, "")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def make_pdf_with_object_stream() -> bytes:
    """A one-page PDF whose page tree root sits in an (uncompressed) object stream."""
    writer = PdfFileWriter(init_page_tree=False)
    object_stream = writer.prepare_object_stream(compress=False)
    pages = generic.DictionaryObject(
        {pdf_name("/Type"): pdf_name("/Pages"), pdf_name("/Count"): generic.NumberObject(0),
         pdf_name("/Kids"): generic.ArrayObject()}
    )
    writer.root[pdf_name("/Pages")] = writer.add_object(pages, obj_stream=object_stream)
    writer.insert_page(_page(writer, 1, generic.DictionaryObject()))
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def raw_pdf(objects: dict[int, bytes], root: int = 1, startxref: int | None = None) -> bytes:
    """A PDF with a classic cross-reference table around hand-written object bodies.

    ``startxref`` overrides where the trailer says the table is (default: where it is).
    """
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = {}
    for number, body in sorted(objects.items()):
        offsets[number] = len(out)
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    size = max(objects) + 1
    table = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % size
    for number in range(1, size):
        out += b"%010d 00000 n \n" % offsets[number] if number in offsets else b"0000000000 65535 f \n"
    out += b"trailer\n<< /Size %d /Root %d 0 R >>\n" % (size, root)
    out += b"startxref\n%d\n%%%%EOF\n" % (table if startxref is None else startxref)
    return bytes(out)


_CATALOG = b"<< /Type /Catalog /Pages 2 0 R >>"
_PAGES = b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>"
_PAGE = b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] >>"


def minimal_pdf() -> bytes:
    """One empty page, nothing else; a classic cross-reference table."""
    return raw_pdf({1: _CATALOG, 2: _PAGES, 3: _PAGE})


def _deep_page_tree(depth: int) -> bytes:
    objects = {1: _CATALOG}
    for level in range(depth):  # object 2 is the root node, each node's only kid the next one
        number = 2 + level
        parent = b"/Parent %d 0 R " % (number - 1) if level else b""
        objects[number] = b"<< /Type /Pages %s/Kids [%d 0 R] /Count 1 >>" % (parent, number + 1)
    leaf = 2 + depth
    objects[leaf] = b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 595 842] >>" % (leaf - 1)
    return raw_pdf(objects)


def _shared_field_kids(levels: int) -> bytes:
    """A form whose every field lists the next one twice as its kid: 2**levels paths, 60-odd objects."""
    objects = {1: b"<< /Type /Catalog /Pages 2 0 R /AcroForm 4 0 R >>", 2: _PAGES, 3: _PAGE, 4: b"<< /Fields [5 0 R] >>"}
    for number in range(5, 5 + levels):
        objects[number] = b"<< /T (f) /Kids [%d 0 R %d 0 R] >>" % (number + 1, number + 1)
    objects[5 + levels] = b"<< /T (s) /FT /Sig >>"
    return raw_pdf(objects)


def hostile_pdfs() -> dict[str, bytes]:
    """Files that once made the box answer 500 (or could): each must be refused as invalid_pdf."""
    valid = minimal_pdf()
    nested = b"[" * 600 + b"]" * 600
    return {
        "600 nested arrays": raw_pdf({1: b"<< /Type /Catalog /Pages 2 0 R /Deep %s >>" % nested, 2: _PAGES, 3: _PAGE}),
        "self-referencing /Root": raw_pdf({1: b"1 0 R"}),
        "/Pages is the catalog": raw_pdf({1: b"<< /Type /Catalog /Pages 1 0 R >>"}),
        "page tree 3,000 levels deep": _deep_page_tree(3000),
        "form fields sharing their kids": _shared_field_kids(64),
        "form field tree with a cycle": raw_pdf(
            {1: b"<< /Type /Catalog /Pages 2 0 R /AcroForm 4 0 R >>", 2: _PAGES, 3: _PAGE, 4: b"<< /Fields [5 0 R] >>",
             5: b"<< /T (f) /Kids [5 0 R] >>"}),
        "page tree with a cycle": raw_pdf({1: _CATALOG, 2: b"<< /Type /Pages /Kids [2 0 R] /Count 1 >>"}),
        "broken object stream": make_pdf_with_object_stream().replace(b"/ObjStm", b"/ObjStn"),
        "startxref on a non-xref object": raw_pdf({1: _CATALOG, 2: _PAGES, 3: _PAGE}, startxref=valid.index(b"2 0 obj")),
        "startxref past the end": raw_pdf({1: _CATALOG, 2: _PAGES, 3: _PAGE}, startxref=10**9),
        "truncated": valid[: len(valid) // 2],
        "only a header": b"%PDF-1.7\n",
        "empty": b"",
        "garbage": bytes(range(256)) * 4,
    }


def signature_field(name: str, page: int = 1, box: tuple[int, int, int, int] | None = (50, 50, 300, 120),
                    lock_all: bool = False) -> SigFieldSpec:
    """An empty signature field (page 1-based; box None: invisible); ``lock_all``: its signature
    will forbid all later changes (a /Lock dictionary with /P 1)."""
    lock = dict(field_mdp_spec=FieldMDPSpec(FieldMDPAction.ALL), doc_mdp_update_value=MDPPerm.NO_CHANGES) if lock_all else {}
    return SigFieldSpec(name, on_page=page - 1, box=box, **lock)


def pdfsig_results(pdf: bytes, tmp_path: Path) -> dict[str, str]:
    """pdfsig's "Signature Validation" line per signature field name."""
    path = tmp_path / f"pdfsig-{hashlib.sha256(pdf).hexdigest()[:12]}.pdf"
    path.write_bytes(pdf)
    out = subprocess.run(["pdfsig", str(path)], capture_output=True, text=True, check=True).stdout
    results, field = {}, None
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("- Signature Field Name:"):
            field = line.split(":", 1)[1].strip()
        elif line.startswith("- Signature Validation:") and field is not None:
            results[field] = line.split(":", 1)[1].strip()
    return results


def assert_well_formed(pdf: bytes, tmp_path: Path) -> None:
    """qpdf --check passes and pdfsig finds every approval/certification signature valid."""
    path = tmp_path / "qpdf-check.pdf"
    path.write_bytes(pdf)
    check = subprocess.run(["qpdf", "--check", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    fields = [sig.field_name for sig in reader(pdf).embedded_regular_signatures]
    results = pdfsig_results(pdf, tmp_path)
    assert fields and all(results.get(f) == "Signature is Valid." for f in fields), results


def reader(pdf: bytes) -> PdfFileReader:
    return PdfFileReader(io.BytesIO(pdf))


def validate(pdf: bytes, roots: list[x509.Certificate], offline: bool = False) -> list[PdfSignatureStatus]:
    """pyHanko's own verdict on every regular signature: hard-fail, online or from the DSS only."""
    doc = reader(pdf)
    statuses = []
    for sig in doc.embedded_regular_signatures:
        settings = {"trust_roots": roots, "revocation_mode": "hard-fail"}
        if offline:
            context = DocumentSecurityStore.read_dss(doc).as_validation_context({**settings, "allow_fetching": False})
        else:
            context = ValidationContext(**settings, allow_fetching=True)
        statuses.append(validate_pdf_signature(sig, context))
    return statuses


def assert_trusted(statuses: list[PdfSignatureStatus]) -> None:
    for status in statuses:
        assert status.intact and status.valid and status.trusted, status.pretty_print_details()


def render_page(pdf: bytes, page: int, tmp_path: Path, artefact: Path | None = None) -> tuple[int, int, bytes]:
    """poppler's rendering of ``page`` (1-based) at 80 dpi: width, height and RGB bytes.

    With ``artefact``, a PNG of the same rendering is kept there for a human to look at.
    """
    path = tmp_path / f"render-{hashlib.sha256(pdf).hexdigest()[:12]}.pdf"
    path.write_bytes(pdf)
    base = ["pdftoppm", "-r", str(RENDER_DPI), "-f", str(page), "-l", str(page), "-singlefile"]
    subprocess.run([*base, str(path), str(tmp_path / "page")], check=True)
    if artefact is not None:
        artefact.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([*base, "-png", str(path), str(artefact.with_suffix(""))], check=True)
    header, _, pixels = (tmp_path / "page.ppm").read_bytes().partition(b"\n255\n")
    width, height = (int(v) for v in header.split()[1:3])
    return width, height, pixels


RENDER_DPI = 80


def pixels_in(rendering: tuple[int, int, bytes], box: tuple[float, float, float, float], page_height: float = 842):
    """The RGB pixels of a rendering inside ``box`` (points, origin bottom left), 3 points inset."""
    width, _, data = rendering
    scale = RENDER_DPI / 72
    x1, y1, x2, y2 = box
    rows = range(round((page_height - y2 + 3) * scale), round((page_height - y1 - 3) * scale))
    columns = range(round((x1 + 3) * scale), round((x2 - 3) * scale))
    return [tuple(data[3 * (row * width + col): 3 * (row * width + col) + 3]) for row in rows for col in columns]
