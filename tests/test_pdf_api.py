"""POST /v1/pdf/sign and /v1/pdf/verify end to end: waitress process, SoftHSM2 token, certomancer PKI.

Signed PDFs are judged by tools nobody here wrote: poppler's pdfsig, qpdf --check and pyHanko's
validator with the dev root as the only trust anchor.
"""

from __future__ import annotations

import io
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from asn1crypto import cms
from lxml import etree
from PIL import Image
from pyhanko.sign.diff_analysis import ModificationLevel
from pyhanko.sign.fields import enumerate_sig_fields

from firmware.certificates import load_certificates
from firmware.signing.stamp_logo import install_stamp_logo, remove_stamp_logo
from firmware.store.db import Database

from .pdfs import (
    KB,
    MB,
    PAGE_TEXT,
    assert_trusted,
    assert_well_formed,
    make_pdf,
    pixels_in,
    reader,
    render_page,
    signature_field,
    validate,
)
from .support import Api, BoxProcess, box_toml_with

PDF = {"Content-Type": "application/pdf"}
ARTIFACTS = Path(__file__).parent / "artifacts" / "pdf"
# The stamp's default background ([signing] stamp_background), as poppler renders it.
STAMP_BACKGROUND = (0xEE, 0xF3, 0xF8)


def sign(api: Api, pdf: bytes, **params):
    return api.post("/v1/pdf/sign", params=params, data=pdf, headers=PDF)


def verify(api: Api, pdf: bytes) -> dict:
    response = api.post("/v1/pdf/verify", data=pdf, headers=PDF)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(scope="module")
def roots(box_config):
    return load_certificates(box_config.trust_roots_file)


@pytest.fixture(scope="module")
def client_id(clients, api_key) -> str:
    return clients.authenticate(api_key).id


@pytest.fixture(scope="module")
def ledger(box_config):
    """This client's recorded signatures, oldest first, straight from the box's database."""
    db = Database(box_config.database)

    def rows(client: str) -> list[tuple[str, str, str, str]]:
        query = "SELECT kind, hash_algorithm, document_hash, level FROM signatures WHERE client_id = ? ORDER BY id"
        return [tuple(row) for row in db.connect().execute(query, (client,))]

    return rows


@pytest.fixture(scope="module")
def document() -> bytes:
    return make_pdf(pages=2, size=10 * KB)


@pytest.mark.parametrize("level", ["B-B", "B-T", "B-LT", "B-LTA"])
def test_each_level_is_valid_for_pdfsig_qpdf_and_pyhanko(api, document, roots, client_id, ledger, tmp_path, level):
    before = len(ledger(client_id))
    response = sign(api, document, level=level, reason="Invoice approved", location="Brussels")
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/pdf"
    assert response.headers["X-Signature-Level"] == level
    assert response.headers["X-Signature-Field"] == "Signature1"
    signed = response.content

    assert_well_formed(signed, tmp_path)
    assert_trusted(validate(signed, roots))
    doc = reader(signed)
    [sig] = doc.embedded_regular_signatures
    assert len(doc.embedded_timestamp_signatures) == (1 if level == "B-LTA" else 0)
    assert ("/DSS" in doc.root) == (level in ("B-LT", "B-LTA"))
    assert sig.sig_object["/Reason"] == "Invoice approved"

    # /Contents is sized from a dry run: enough for the CMS, not wildly more.
    used, reserved = len(cms.ContentInfo.load(sig.pkcs7_content).dump()), len(sig.pkcs7_content)
    assert used < reserved < 3 * used

    rows = ledger(client_id)
    assert len(rows) == before + 1
    assert rows[-1] == ("pdf", "sha256", sig.compute_digest().hex(), level)

    [report] = [s for s in verify(api, signed)["signatures"] if s["kind"] == "signature"]
    assert report["level"] == level and report["bottom_line"] and report["trusted"]


def test_b_lt_validates_with_pki_servers_down(api, document, roots, request):
    signed = {level: sign(api, document, level=level).content for level in ("B-LT", "B-LTA")}
    request.getfixturevalue("pki_outage")
    for level, pdf in signed.items():
        assert_trusted(validate(pdf, roots, offline=True))
        report = verify(api, pdf)
        [sig] = [s for s in report["signatures"] if s["kind"] == "signature"]
        assert report["dss"] and sig["ltv"] and sig["trusted"] and sig["level"] == level, sig


def test_certification_signature_with_docmdp(api, document, roots, tmp_path):
    locked = sign(api, document, level="B-T", certify="true", docmdp="1")
    assert locked.status_code == 200, locked.text
    assert_well_formed(locked.content, tmp_path)
    [sig] = verify(api, locked.content)["signatures"]
    assert sig["certification"] == 1 and sig["bottom_line"]

    refused = sign(api, locked.content, level="B-B")
    assert refused.status_code == 409 and refused.json()["error"] == "certified_no_changes"
    assert "DocMDP 1" in refused.json()["message"] and "Signature1" in refused.json()["message"]

    forms = sign(api, document, level="B-B", certify="true", docmdp="2").content
    approved = sign(api, forms, level="B-T")
    assert approved.status_code == 200, approved.text
    assert_trusted(validate(approved.content, roots))
    first, second = verify(api, approved.content)["signatures"]
    assert first["certification"] == 2 and first["docmdp_ok"] and first["modification_level"] == "FORM_FILLING"
    assert second["certification"] is None and second["coverage"] == "ENTIRE_FILE"


def _field_names(pdf: bytes) -> list[str]:
    return [name for name, _, _ in enumerate_sig_fields(reader(pdf))]


def _share(pixels: list[tuple[int, int, int]], colour: tuple[int, int, int]) -> float:
    """The fraction of ``pixels`` within a rounding error of ``colour``."""
    return sum(all(abs(a - b) <= 2 for a, b in zip(p, colour, strict=False)) for p in pixels) / len(pixels)


@pytest.mark.parametrize("docmdp", ["2", "3"])
def test_visible_approval_on_a_certified_document(api, roots, client_id, ledger, tmp_path, docmdp):
    form = make_pdf(pages=1, empty_fields=(signature_field("Approval", box=(300, 700, 540, 770)),))
    certified = sign(api, form, level="B-B", certify="true", docmdp=docmdp, field="Author")
    assert certified.status_code == 200, certified.text

    # A new visible field would break the certification: refused, naming it and the way out.
    before = len(ledger(client_id))
    refused = sign(api, certified.content, level="B-B", stamp_box="50,50,300,120")
    assert refused.status_code == 409 and refused.json()["error"] == "certified_document", refused.text
    message = refused.json()["message"]
    assert f"DocMDP {docmdp}" in message and "Author" in message and "Approval" in message
    assert len(ledger(client_id)) == before

    # By default the approval goes into the empty field that was there at certification.
    stamped = sign(api, certified.content, level="B-T", stamp_text="Approved")
    assert stamped.status_code == 200, stamped.text
    assert stamped.headers["X-Signature-Field"] == "Approval"
    assert _field_names(stamped.content) == ["Approval", "Author"]
    assert_well_formed(stamped.content, tmp_path)
    statuses = validate(stamped.content, roots)
    assert_trusted(statuses)
    author = next(s for s, sig in zip(statuses, reader(stamped.content).embedded_regular_signatures, strict=False)
                  if sig.field_name == "Author")
    assert author.docmdp_ok and author.modification_level == ModificationLevel.FORM_FILLING
    first, second = verify(api, stamped.content)["signatures"]
    assert first["field"] == "Author" and first["certification"] == int(docmdp)
    assert first["docmdp_ok"] and first["bottom_line"] and second["bottom_line"]


def test_no_pdf_leaves_the_box_with_an_earlier_signature_broken(api, document, client_id, ledger):
    form = make_pdf(pages=1, empty_fields=(signature_field("Locked", lock_all=True),))
    locked = sign(api, form, level="B-B")
    assert locked.status_code == 200 and locked.headers["X-Signature-Field"] == "Locked", locked.text
    before = len(ledger(client_id))
    refused = sign(api, locked.content, level="B-B")
    assert refused.status_code == 409 and refused.json()["error"] == "earlier_signature_broken", refused.text
    assert "Locked" in refused.json()["message"]

    signed = sign(api, document, level="B-B").content
    at = signed.index(PAGE_TEXT.encode())
    tampered = signed[:at] + b"F" + signed[at + 1:]
    before = len(ledger(client_id))
    refused = sign(api, tampered, level="B-B")
    assert refused.status_code == 409 and refused.json()["error"] == "earlier_signature_broken", refused.text
    assert "Signature1" in refused.json()["message"] and "already" in refused.json()["message"]
    assert len(ledger(client_id)) == before


def test_a_prepared_form_is_signed_in_its_own_field(api, roots, tmp_path):
    field_box = (50, 50, 300, 120)
    form = make_pdf(pages=2, empty_fields=(signature_field("Signature1", page=2, box=field_box),))
    response = sign(api, form, level="B-B", stamp_text="Approved by ACME")
    assert response.status_code == 200, response.text
    assert response.headers["X-Signature-Field"] == "Signature1"
    signed = response.content
    assert _field_names(signed) == ["Signature1"]
    assert_well_formed(signed, tmp_path)
    assert_trusted(validate(signed, roots))
    # The box's own stamp (opaque background) fills the field's widget rectangle.
    assert _share(pixels_in(render_page(signed, 2, tmp_path), field_box), STAMP_BACKGROUND) > 0.6

    moved = sign(api, form, field="Signature1", stamp_box="300,300,400,350")
    assert moved.status_code == 400 and "Signature1" in moved.json()["message"], moved.text


def test_visible_stamp(api, document, roots, tmp_path):
    response = sign(api, document, level="B-T", field="Approval", stamp_page="2",
                    stamp_box="50,50,300,120", stamp_text="Approved 100% by ACME")
    assert response.status_code == 200, response.text
    assert response.headers["X-Signature-Field"] == "Approval"
    signed = response.content
    assert_well_formed(signed, tmp_path)
    assert_trusted(validate(signed, roots))

    page = reader(signed).root["/Pages"]["/Kids"][1]
    [widget] = [a.get_object() for a in page["/Annots"]]
    assert widget["/T"] == "Approval" and [float(v) for v in widget["/Rect"]] == [50, 50, 300, 120]
    assert "/AP" in widget
    # Opaque: the footer rows printed under the stamp do not show through its background.
    rendering = render_page(signed, 2, tmp_path, artefact=ARTIFACTS / "visible-stamp.png")
    assert _share(pixels_in(rendering, (50, 50, 300, 120)), STAMP_BACKGROUND) > 0.6


def test_second_signature_keeps_the_first_valid(api, document, roots, tmp_path):
    once = sign(api, document, level="B-LT").content
    response = sign(api, once, level="B-T")
    assert response.status_code == 200, response.text
    assert response.headers["X-Signature-Field"] == "Signature2"
    twice = response.content
    assert twice.startswith(once)  # an incremental update: the first revision is untouched

    assert_well_formed(twice, tmp_path)
    assert_trusted(validate(twice, roots))
    first, second = verify(api, twice)["signatures"]
    assert first["field"] == "Signature1" and first["coverage"] == "ENTIRE_REVISION"
    assert first["modification_level"] == "FORM_FILLING" and first["docmdp_ok"] and first["bottom_line"]
    assert second["field"] == "Signature2" and second["coverage"] == "ENTIRE_FILE" and second["bottom_line"]


def test_concurrent_requests_all_sign_validly(api, document, roots):
    levels = ["B-B", "B-T", "B-LT", "B-LTA"] * 2
    with ThreadPoolExecutor(len(levels)) as pool:
        responses = list(pool.map(lambda level: sign(api, document, level=level), levels))
    for level, response in zip(levels, responses, strict=False):
        assert response.status_code == 200, response.text
        assert response.headers["X-Signature-Level"] == level
        assert_trusted(validate(response.content, roots))


def test_verify_reports_tampering(api, document):
    signed = sign(api, document, level="B-T").content
    [good] = verify(api, signed)["signatures"]
    assert good["intact"] and good["valid"] and good["trusted"] and good["bottom_line"]
    assert good["signer"].startswith("Common Name: E-signature Box")
    assert good["timestamp"]["present"] and good["timestamp"]["valid"] and good["timestamp"]["trusted"]
    assert good["level"] == "B-T" and not good["ltv"] and good["coverage"] == "ENTIRE_FILE"

    at = signed.index(PAGE_TEXT.encode())  # page text: inside the signed byte range
    tampered = signed[:at] + b"F" + signed[at + 1:]
    [bad] = verify(api, tampered)["signatures"]
    assert not bad["intact"] and not bad["bottom_line"]


ETSI = "{http://uri.etsi.org/19102/v1.2.1#}"
PASSED = "urn:etsi:019102:mainindication:total-passed"


def _indications(report: bytes) -> list[str]:
    root = etree.fromstring(report)
    assert root.tag == f"{ETSI}ValidationReport"
    return [r.findtext(f"{ETSI}SignatureValidationStatus/{ETSI}MainIndication")
            for r in root.findall(f"{ETSI}SignatureValidationReport")]


def test_verify_gives_an_etsi_validation_report(api, document):
    once = sign(api, document, level="B-B").content
    twice = sign(api, once, level="B-LTA").content
    response = api.post("/v1/pdf/verify", params={"format": "etsi"}, data=twice, headers=PDF)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("application/xml")
    assert _indications(response.content) == [PASSED, PASSED]
    root = etree.fromstring(response.content)
    processes = [r.findtext(f"{ETSI}SignatureValidationProcess/{ETSI}SignatureValidationProcessID")
                 for r in root.findall(f"{ETSI}SignatureValidationReport")]
    assert processes == ["urn:etsi:019102:validationprocess:Basic", "urn:etsi:019102:validationprocess:LTA"]
    ids = [vo.get("id") for vo in root.iterfind(f"{ETSI}SignatureValidationObjects/{ETSI}ValidationObject")]
    assert ids and len(ids) == len(set(ids))  # the two signatures share their certificates, listed once

    by_accept = api.post("/v1/pdf/verify", data=once, headers={**PDF, "Accept": "application/xml"})
    assert by_accept.status_code == 200 and _indications(by_accept.content) == [PASSED]

    at = once.index(PAGE_TEXT.encode())
    tampered = once[:at] + b"F" + once[at + 1:]
    failed = api.post("/v1/pdf/verify", params={"format": "etsi"}, data=tampered, headers=PDF)
    assert _indications(failed.content) == ["urn:etsi:019102:mainindication:total-failed"]

    unknown = api.post("/v1/pdf/verify", params={"format": "csv"}, data=once, headers=PDF)
    assert unknown.status_code == 400 and unknown.json()["error"] == "invalid_request"
    assert verify(api, once)["signatures"][0]["bottom_line"]  # JSON stays the default


def _bad_inputs(document: bytes) -> dict[str, tuple[bytes, dict, int, str]]:
    return {
        "garbage": (b"this is no PDF at all", {}, 422, "invalid_pdf"),
        "truncated": (document[: len(document) // 2], {}, 422, "invalid_pdf"),
        "encrypted": (make_pdf(owner_password="secret"), {}, 422, "invalid_pdf"),
        "unknown level": (document, {"level": "B-XL"}, 400, "invalid_request"),
        "bad docmdp": (document, {"certify": "true", "docmdp": "7"}, 400, "invalid_request"),
        "docmdp without certify": (document, {"docmdp": "1"}, 400, "invalid_request"),
        "page out of range": (document, {"stamp_page": "3", "stamp_box": "10,10,100,50"}, 400, "invalid_request"),
        "inverted stamp box": (document, {"stamp_box": "100,10,10,50"}, 400, "invalid_request"),
        "stamp text the font cannot show": (document, {"stamp_box": "10,10,100,50", "stamp_text": "已批准"}, 400,
                                            "invalid_request"),
        "unknown option": (document, {"levle": "B-LT"}, 400, "invalid_request"),
        "bad field name": (document, {"field": "a.b"}, 400, "invalid_request"),
    }


def test_bad_inputs_get_clear_errors_and_sign_nothing(api, box, document, client_id, ledger):
    before = ledger(client_id)
    for name, (body, params, status, code) in _bad_inputs(document).items():
        response = sign(api, body, **params)
        assert (response.status_code, response.json()["error"]) == (status, code), (name, response.text)
        assert response.json()["message"], name
    assert sign(api, document, level="B-B").status_code == 200  # still serving, signer not poisoned
    assert ledger(client_id)[: len(before)] == before and len(ledger(client_id)) == len(before) + 1

    wrong_type = api.post("/v1/pdf/sign", data=document, headers={"Content-Type": "text/plain"})
    assert wrong_type.status_code == 415
    anonymous = Api(box.url, None).post("/v1/pdf/sign", data=document, headers=PDF)
    assert anonymous.status_code == 401 and anonymous.json()["error"] == "missing_api_key"
    assert verify(api, document) == {"signatures": [], "dss": False}


def test_oversized_body_is_refused_before_reading(api, box_config, client_id, ledger):
    before = len(ledger(client_id))
    response = sign(api, b"%PDF-1.7\n" + bytes(box_config.max_pdf_bytes))
    assert response.status_code == 413 and response.json()["error"] == "too_large"
    assert len(ledger(client_id)) == before


def test_tsa_down_gives_503_and_no_pdf(api, document, client_id, ledger, pki_outage):
    before = len(ledger(client_id))
    response = sign(api, document, level="B-T")
    assert response.status_code == 503 and response.json()["error"] == "timestamp_unavailable"
    assert response.headers["Content-Type"].startswith("application/json")
    assert len(ledger(client_id)) == before


def test_revocation_down_with_empty_cache_gives_503(box_config, api_key, document, client_id, ledger, pki_outage,
                                                   session_box_stopped):
    fresh = BoxProcess(box_config.state_dir).start()  # nothing cached yet
    try:
        before = len(ledger(client_id))
        response = sign(Api(fresh.url, api_key), document, level="B-LT")
        assert response.status_code == 503 and response.json()["error"] == "revocation_unavailable"
        assert len(ledger(client_id)) == before
    finally:
        fresh.stop()


@pytest.mark.parametrize("size", [10 * KB, MB, 20 * MB], ids=["10KB", "1MB", "20MB"])
def test_sizes(api, tmp_path, size):
    document = make_pdf(pages=3, size=size, seed=size)
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        response = sign(api, document, level="B-B")
        timings.append(time.perf_counter() - started)
        assert response.status_code == 200, response.text
    assert_well_formed(response.content, tmp_path)
    print(f"\nB-B {size // KB} KB: best {min(timings) * 1000:.0f} ms over HTTP (of {[round(t * 1000) for t in timings]})")


def test_stamp_colours_and_logo_from_box_toml(box_config, api_key, document, tmp_path, session_box_stopped):
    """A box whose box.toml sets the stamp's colours and has a logo installed draws both."""

    toml = box_config.state_dir / "box.toml"
    original = toml.read_text()
    toml.write_text(box_toml_with(original, {"signing": {"stamp_background": "#ffe9b0", "stamp_border": "#000000"}}))
    logo = Image.new("RGBA", (40, 40), (0, 0, 0, 0))  # a red square on a transparent ground
    logo.paste((220, 0, 0, 255), (10, 10, 30, 30))
    out = io.BytesIO()
    logo.save(out, "PNG")
    install_stamp_logo(box_config.state_dir, out.getvalue())
    styled = BoxProcess(box_config.state_dir)
    try:
        styled.start()
        response = sign(Api(styled.url, api_key), document, level="B-B", stamp_box="50,50,300,120", stamp_text="ACME")
    finally:
        styled.stop()
        toml.write_text(original)
        remove_stamp_logo(box_config.state_dir)
    assert response.status_code == 200, response.text
    rendering = render_page(response.content, 1, tmp_path, artefact=ARTIFACTS / "stamp-with-logo.png")
    stamp = pixels_in(rendering, (50, 50, 300, 120))
    assert _share(stamp, (0xFF, 0xE9, 0xB0)) > 0.5  # the configured background, opaque
    logo_area = pixels_in(rendering, (54, 54, 120, 116))  # the logo is drawn at the stamp's left
    assert _share(logo_area, (220, 0, 0)) > 0.1
