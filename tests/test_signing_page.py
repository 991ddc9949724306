"""The signing page /sign/{token} in-process (Falcon's TestClient on the real Box: the session's
SoftHSM2 token, the dev PKI served by certomancer): each step a party meets, and the refusals.

The envelope is made through the real API (multipart POST, scope "contracts"); what the page
did is read back through the API (GET /v1/contracts/{id}), not from the page's own words.
"""

from __future__ import annotations

import base64
import html
import io
import random
import re
from urllib.parse import urlencode

import falcon.testing
import pytest
from PIL import Image

from .pdfs import make_pdf, signature_field
from .test_contracts import _create, _party, client, contract_box, key  # noqa: F401  (fixtures)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SECURITY_HEADERS = {
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


def _envelope(client: falcon.testing.TestClient, key: str, title: str, code: str = "A-7731") -> tuple[str, str]:
    """A one-party envelope (access code ``code``, field on page 1): its id and the party's token."""
    created = _create(client, key, {"title": title, "parties": [_party("Alice Example", 1, code)]})
    assert created.status_code == 201, created.text
    return created.json["id"], created.json["parties"][0]["link"].rsplit("/", 1)[1]


def _status(client: falcon.testing.TestClient, key: str, contract_id: str) -> dict:
    result = client.simulate_get(f"/v1/contracts/{contract_id}", headers={"Authorization": f"Bearer {key}"})
    assert result.status_code == 200, result.text
    return result.json


def _csrf(page: falcon.testing.Result) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
    assert found, page.text
    return found.group(1)


def _post(client: falcon.testing.TestClient, path: str, **form: str) -> falcon.testing.Result:
    return client.simulate_post(path, body=urlencode(form),
                                headers={"Content-Type": "application/x-www-form-urlencoded"})


def _assert_protected(result: falcon.testing.Result) -> None:
    assert result.headers["content-security-policy"].startswith("default-src 'none'"), result.headers
    for name, value in SECURITY_HEADERS.items():
        assert result.headers[name] == value, (name, result.headers)


def _validated(client: falcon.testing.TestClient, key: str, title: str) -> tuple[str, str, str]:
    contract_id, token = _envelope(client, key, title)
    base = f"/sign/{token}"
    confirmed = _post(client, base + "/verify", csrf=_csrf(client.simulate_get(base)), code="A-7731")
    assert confirmed.status_code == 303, confirmed.text
    return contract_id, base, _csrf(client.simulate_get(base))


def _data_url(image: Image.Image) -> str:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


# -- the links --------------------------------------------------------------------------------------------

def test_an_unknown_link_is_a_404_page_with_the_headers(client):
    result = client.simulate_get("/sign/" + "x" * 43)
    assert result.status_code == 404 and "Link not valid" in result.text
    _assert_protected(result)
    for path in ("/page/1", "/document"):
        assert client.simulate_get("/sign/" + "x" * 43 + path).status_code == 404


def test_before_validation_the_page_asks_for_the_code_and_shows_nothing(client, key):
    _, token = _envelope(client, key, "Before validation")
    page = client.simulate_get(f"/sign/{token}")
    assert page.status_code == 200 and "Confirm who you are" in page.text and 'name="code"' in page.text
    assert "/page/1" not in page.text and "/document" not in page.text
    _assert_protected(page)
    for path in ("/page/1", "/document"):
        refused = client.simulate_get(f"/sign/{token}{path}")
        assert refused.status_code == 403, (path, refused.status_code)
        assert not refused.content.startswith((PNG_MAGIC, b"%PDF"))


# -- refusals that change nothing --------------------------------------------------------------------------

@pytest.mark.parametrize("csrf", [None, "", "0" * 64])
def test_a_post_without_the_right_csrf_field_is_403_and_changes_nothing(client, key, csrf):
    contract_id, token = _envelope(client, key, "CSRF")
    form = {"code": "A-7731"} if csrf is None else {"code": "A-7731", "csrf": csrf}
    for step in ("verify", "decline"):
        refused = _post(client, f"/sign/{token}/{step}", **form, reason="no")
        assert refused.status_code == 403 and "expired" in refused.text, refused.text
        _assert_protected(refused)
    status = _status(client, key, contract_id)
    assert status["status"] == "in_progress" and status["parties"][0]["status"] == "invited"


def test_a_wrong_access_code_is_shown_and_counted_then_the_right_one_validates(client, key, contract_box):
    contract_id, token = _envelope(client, key, "Wrong code")
    base = f"/sign/{token}"
    csrf = _csrf(client.simulate_get(base))
    wrong = _post(client, base + "/verify", csrf=csrf, code="A-0000")
    assert wrong.status_code == 422 and 'id="error"' in wrong.text and "wrong code" in wrong.text
    _assert_protected(wrong)
    attempts = contract_box.db.connect().execute(
        "SELECT attempts FROM contract_parties WHERE contract_id = ? AND id = 'p1'", (contract_id,)).fetchone()[0]
    assert attempts == 1
    assert _status(client, key, contract_id)["parties"][0]["status"] == "invited"

    right = _post(client, base + "/verify", csrf=csrf, code=" A-7731 ")
    assert right.status_code == 303 and right.headers["location"].endswith(base)
    assert _status(client, key, contract_id)["parties"][0]["status"] == "validated"


def test_a_field_named_in_the_pdf_is_highlighted_where_the_pdf_has_it(client, key):
    pdf = make_pdf(pages=2, empty_fields=(signature_field("Tenant", page=2, box=(60, 70, 260, 140)),))
    party = {**_party("Alice Example", 1, "A-7731"), "field": {"name": "Tenant"}}
    created = _create(client, key, {"title": "Named field", "parties": [party]}, pdf=pdf)
    assert created.status_code == 201, created.text
    base = "/sign/" + created.json["parties"][0]["link"].rsplit("/", 1)[1]
    assert _post(client, base + "/verify", csrf=_csrf(client.simulate_get(base)), code="A-7731").status_code == 303
    page = client.simulate_get(base)
    marks = re.findall(r'<rect class="mark" x="([\d.]+)" y="([\d.]+)" width="([\d.]+)" height="([\d.]+)"', page.text)
    assert [tuple(float(v) for v in mark) for mark in marks] == [
        (round(100 * 60 / 595, 2), round(100 * (842 - 140) / 842, 2), round(100 * 200 / 595, 2),
         round(100 * 70 / 842, 2))]
    assert page.text.index('<rect class="mark"') > page.text.index('id="page-2"') and "on page 2" in page.text


# -- the document ---------------------------------------------------------------------------------------------

def test_once_validated_the_pages_are_shown_with_the_party_field_highlighted(client, key):
    _, base, _ = _validated(client, key, "Pages")
    page = client.simulate_get(base)
    assert page.status_code == 200 and "Read and sign" in page.text
    _assert_protected(page)
    assert re.findall(r'<img src="([^"]+)"', page.text) == [f"{base}/page/1", f"{base}/page/2"]
    # the field (x 50-250, y 60-130 on a 595x842 page) is outlined on page 1 only, where it is
    marks = re.findall(r'<rect class="mark" x="([\d.]+)" y="([\d.]+)" width="([\d.]+)" height="([\d.]+)"', page.text)
    assert [tuple(float(v) for v in mark) for mark in marks] == [
        (round(100 * 50 / 595, 2), round(100 * (842 - 130) / 842, 2), round(100 * 200 / 595, 2),
         round(100 * 70 / 842, 2))]
    assert page.text.index('<rect class="mark"') < page.text.index('id="page-2"')
    assert "style=" not in page.text  # the CSP allows no inline style: the box is in SVG attributes

    image = client.simulate_get(base + "/page/1")
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert image.content.startswith(PNG_MAGIC)
    with Image.open(io.BytesIO(image.content)) as picture:
        assert picture.width == 900 and 1250 < picture.height < 1300  # A4 at 900 px wide
    assert "no-store" in image.headers["cache-control"]
    assert client.simulate_get(base + "/page/3").status_code in (400, 404, 422)
    document = client.simulate_get(base + "/document")
    assert document.status_code == 200 and document.content.startswith(b"%PDF")


# -- signing and declining ------------------------------------------------------------------------------------

def test_a_typed_signature_with_the_box_ticked_signs(client, key):
    contract_id, base, csrf = _validated(client, key, "Typed")
    unticked = _post(client, base + "/sign", csrf=csrf, typed="Alice Example")
    assert unticked.status_code == 422 and "tick the box" in unticked.text
    assert _status(client, key, contract_id)["parties"][0]["status"] == "validated"

    signed = _post(client, base + "/sign", csrf=csrf, typed="Alice Example", agree="on")
    assert signed.status_code == 303 and signed.headers["location"].endswith(base), signed.text
    status = _status(client, key, contract_id)
    assert status["parties"][0]["status"] == "signed" and status["status"] == "completed"
    done = client.simulate_get(base)
    assert done.status_code == 200 and "Signed by everyone" in done.text and f'href="{base}/document"' in done.text
    _assert_protected(done)
    final = client.simulate_get(base + "/document")
    assert final.status_code == 200 and final.content.startswith(b"%PDF")
    again = _post(client, base + "/sign", csrf=csrf, typed="Alice Example", agree="on")
    assert again.status_code in (409, 410, 422) and "Alice" in _status(client, key, contract_id)["parties"][0]["name"]


@pytest.mark.parametrize(("drawn", "message"), [
    ("data:image/jpeg;base64,/9j/4AAQ", "must be a PNG"),
    ("data:image/png;base64,not base64!", "not readable"),
    ("data:image/png;base64," + base64.b64encode(b"GIF89a" + b"\0" * 64).decode(), "not a PNG"),
    (_data_url(Image.new("RGBA", (2400, 100))), "at most 2000 pixels"),
    (_data_url(Image.frombytes("L", (520, 520), random.Random(12).randbytes(520 * 520))), "too large"),
])
def test_a_drawn_signature_that_is_not_a_small_png_is_refused_with_a_clear_message(client, key, drawn, message):
    contract_id, base, csrf = _validated(client, key, "Drawn refused")
    refused = _post(client, base + "/sign", csrf=csrf, drawn=drawn, agree="on")
    assert refused.status_code in (413, 422) and message in html.unescape(refused.text), refused.text[:2000]
    _assert_protected(refused)
    assert _status(client, key, contract_id)["parties"][0]["status"] == "validated"


def test_a_huge_form_is_refused_on_a_page_without_being_read(client, key):
    contract_id, base, csrf = _validated(client, key, "Huge")
    refused = _post(client, base + "/sign", csrf=csrf, drawn="data:image/png;base64," + "A" * 600_000, agree="on")
    assert refused.status_code == 413 and "too large" in refused.text
    _assert_protected(refused)
    assert _status(client, key, contract_id)["parties"][0]["status"] == "validated"


def test_a_drawn_png_signs(client, key):
    contract_id, base, csrf = _validated(client, key, "Drawn")
    stroke = Image.new("RGBA", (600, 200), (255, 255, 255, 0))
    stroke.paste((16, 42, 67, 255), (40, 90, 560, 110))
    signed = _post(client, base + "/sign", csrf=csrf, drawn=_data_url(stroke), agree="on")
    assert signed.status_code == 303, signed.text
    assert _status(client, key, contract_id)["parties"][0]["status"] == "signed"


def test_declining_with_a_reason_ends_the_envelope_and_the_page_says_why(client, key):
    contract_id, base, csrf = _validated(client, key, "Decline")
    empty = _post(client, base + "/decline", csrf=csrf, reason="   ")
    assert empty.status_code == 422 and "say why" in empty.text
    declined = _post(client, base + "/decline", csrf=csrf, reason="The salary is wrong")
    assert declined.status_code == 200 and "You have declined" in declined.text, declined.text
    assert "The salary is wrong" in declined.text and "/page/1" not in declined.text
    _assert_protected(declined)
    status = _status(client, key, contract_id)
    assert status["status"] == "declined" and "The salary is wrong" in status["end_reason"]
    assert status["parties"][0]["status"] == "declined"
    assert client.simulate_get(base + "/page/1").status_code in (403, 410)  # the link only says why now
    again = client.simulate_get(base)
    assert again.status_code == 200 and "You have declined" in again.text and "The salary is wrong" in again.text


def test_the_static_files_are_served_and_nothing_else(client):
    css = client.simulate_get("/sign/static/sign.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert client.simulate_get("/sign/static/pad.js").status_code == 200
    assert client.simulate_get("/sign/static/page.py").status_code == 404


def test_the_partys_form_fields_are_inputs_highlighted_on_the_page_and_signed_with_it(client, key):
    party = {**_party("Alice Example", 1, "A-7731"), "fields": [
        {"kind": "text", "name": "Employee number", "page": 2, "box": [60, 500, 260, 520], "label": "Your number"},
        {"kind": "checkbox", "name": "Agree", "page": 1, "box": [50, 350, 66, 366], "label": "I agree to the terms"},
        {"kind": "date", "name": "Signed on", "page": 1, "box": [300, 300, 420, 325]},
        {"kind": "initials", "name": "Initials", "page": 2, "box": [500, 40, 560, 60], "required": False}]}
    created = _create(client, key, {"title": "Form", "parties": [party]})
    assert created.status_code == 201, created.text
    contract_id, base = created.json["id"], "/sign/" + created.json["parties"][0]["link"].rsplit("/", 1)[1]
    assert _post(client, base + "/verify", csrf=_csrf(client.simulate_get(base)), code="A-7731").status_code == 303
    page = client.simulate_get(base)
    assert 'name="value.Employee number"' in page.text and "Your number" in page.text
    assert 'type="checkbox" name="value.Agree"' in page.text and "I agree to the terms" in page.text
    assert "filled in with today's date when you sign" in page.text and 'name="value.Signed on"' not in page.text
    assert "Initials (optional)" in page.text and "style=" not in page.text
    forms = re.findall(r'<rect class="mark form" x="([\d.]+)" y="([\d.]+)"', page.text)
    assert len(forms) == 4 and (str(round(100 * 60 / 595, 2)), str(round(100 * (842 - 520) / 842, 2))) in forms
    assert page.text.index('<rect class="mark form" x="10.08"') > page.text.index('id="page-2"')  # on its page

    csrf = _csrf(page)
    refused = _post(client, base + "/sign", csrf=csrf, typed="Alice Example", agree="on",
                    **{"value.Employee number": "E-4711"})
    assert refused.status_code == 422 and "tick &#39;I agree to the terms&#39;" in refused.text
    assert _status(client, key, contract_id)["parties"][0]["status"] == "validated"
    signed = _post(client, base + "/sign", csrf=csrf, typed="Alice Example", agree="on",
                   **{"value.Employee number": "E-4711", "value.Agree": "on", "value.Signed on": "1999-01-01"})
    assert signed.status_code == 303, signed.text
    values = {f["name"]: f.get("value") for f in _status(client, key, contract_id)["fields"]}
    assert values["Employee number"] == "E-4711" and values["Agree"] == "on" and values["Initials"] == ""
    assert values["Signed on"] != "1999-01-01"  # the box's date, not the form's
