"""PDF test helpers: documents made with pyHanko's writer, and the outside checks of signed ones.

Documents are N pages of text padded to a target size. The padding is a grey-scale image of
random pixels referenced from the first page's resources (but not drawn), so the file is
well-formed for qpdf and pdfsig at any size and random data keeps the size honest (nothing
compresses it away). Signed documents are checked with poppler's pdfsig, qpdf --check and
pyHanko's validator (hard-fail, online or from the DSS alone).
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
from pyhanko.sign.validation import DocumentSecurityStore, validate_pdf_signature
from pyhanko.sign.validation.status import PdfSignatureStatus
from pyhanko_certvalidator import ValidationContext

KB = 1024
MB = 1024 * KB
# The text every page shows; tests flip a byte of it to tamper with a signed range.
PAGE_TEXT = "E-signature Box test document, page"
_IMAGE_WIDTH = 1024


def _page(writer: PdfFileWriter, number: int, resources: generic.DictionaryObject) -> PageObject:
    content = f"BT /F1 14 Tf 72 760 Td ({PAGE_TEXT} {number}) Tj ET".encode("ascii")
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


def make_pdf(pages: int = 1, size: int = 0, seed: int = 0, owner_password: str | None = None) -> bytes:
    """A PDF of ``pages`` text pages, at least ``size`` bytes long; encrypted if a password is given."""
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
    if owner_password is not None:
        writer.encrypt(owner_password, "")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


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
