"""The signing page in a real browser: headless Chromium (Debian's, through Playwright) against the
session's `esignbox serve` over real HTTP, the envelope made with the API as a business system would.

Three parties — Alice first, then Bob and Carol in parallel — each open their invitation link,
enter their access code, read the pages the box rendered, draw (mouse on the desktop, touch on the
phone) or type their signature, tick the box and sign. The final PDF is judged by pdfsig and
qpdf. A fourth party declines through the page. Every step is photographed at desktop and phone
width into tests/artifacts/signing/, and the browser's console must stay free of errors (a CSP
violation is one).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from .pdfs import assert_well_formed, make_pdf, pdfsig_results, reader
from .support import BoxProcess
from .test_webui_browser import CHROMIUM, CHROMIUM_ARGS

ARTIFACTS = Path(__file__).parent / "artifacts" / "signing"
DESKTOP = {"viewport": {"width": 1280, "height": 900}}
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True, "device_scale_factor": 2}


@dataclass
class Tab:
    """One party's browser: its page, its console's complaints, the prefix of its screenshots."""

    page: Any
    name: str
    problems: list[str] = field(default_factory=list)

    def shot(self, step: str) -> None:
        self.page.screenshot(path=str(ARTIFACTS / f"{self.name}-{step}.png"), full_page=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is not installed: run `make system-deps` (apt-get install chromium)")
    from playwright.sync_api import sync_playwright  # optional heavy dependency: only the browser tests need it

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def business(box: BoxProcess, clients) -> requests.Session:
    """The business system: an API client with the "contracts" scope."""
    session = requests.Session()
    session.trust_env = False
    session.headers["Authorization"] = "Bearer " + clients.add("signing-page-browser", scopes=("contracts",))[1]
    return session


def _tab(browser: Any, name: str, options: dict[str, Any]) -> Tab:
    page = browser.new_context(**options).new_page()
    tab = Tab(page, name)
    page.on("console", lambda message: tab.problems.append(f"{message.text} ({message.location.get('url')})")
            if message.type in ("error", "warning") and not _expected(message.text, message.location.get("url", ""))
            else None)
    page.on("pageerror", lambda error: tab.problems.append(str(error)))
    return tab


def _expected(text: str, url: str) -> bool:
    """The console lines a party's steps cause on purpose: the wrong code's 422 answer, and the
    browser's own look for a favicon the page does not have."""
    return (url.endswith("/verify") and "status of 422" in text) or url.endswith("/favicon.ico")


def _party(name: str, order: int, code: str, page: int, x: int) -> dict[str, Any]:
    return {"name": name, "email": f"{name.split()[0].lower()}@example.com", "order": order,
            "method": "access_code", "access_code": code,
            "field": {"name": name.split()[0], "page": page, "box": [x, 60, x + 200, 130]}}


def _create(box: BoxProcess, business: requests.Session, title: str, parties: list[dict[str, Any]]) -> dict[str, Any]:
    envelope = {"title": title, "parties": parties}
    created = business.post(box.url + "/v1/contracts", files={
        "envelope": (None, json.dumps(envelope), "application/json"),
        "document": ("contract.pdf", make_pdf(pages=2), "application/pdf")}, timeout=60)
    assert created.status_code == 201, created.text
    return created.json()


def _status(box: BoxProcess, business: requests.Session, contract_id: str) -> dict[str, Any]:
    result = business.get(f"{box.url}/v1/contracts/{contract_id}", timeout=10)
    assert result.status_code == 200, result.text
    return result.json()


def _link(box: BoxProcess, party: dict[str, Any]) -> str:
    """The invitation link as the box handed it out: to the box that serves it."""
    link: str = party["link"]
    assert link.startswith(box.url + "/sign/"), (link, box.url)
    return link


def _open_and_validate(tab: Tab, link: str, code: str) -> None:
    page = tab.page
    page.goto(link)
    assert page.locator("h1").inner_text() == "Confirm who you are"
    tab.shot("1-code")
    page.fill("#code", "WRONG-1")
    page.click("#confirm-code")
    assert "wrong code" in page.locator("#error").inner_text()
    tab.shot("2-wrong-code")
    page.fill("#code", code)
    page.click("#confirm-code")
    assert page.locator("h1").inner_text() == "Read and sign"
    images = page.locator("figure.page img")
    assert images.count() == 2
    for index in range(2):  # the pages load lazily: bring each into view and wait until it has pixels
        images.nth(index).scroll_into_view_if_needed()
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=images.nth(index).element_handle())
    box = page.locator(".marks").first.bounding_box()
    assert box is not None and box["width"] > 100  # the highlight covers the page, the field inside it
    page.evaluate("window.scrollTo(0, 0)")
    tab.shot("3-document")


def _draw(tab: Tab, touch: bool) -> None:
    """A signature stroke on the pad: the mouse on a desktop, fingers (CDP touch events) on a phone."""
    page = tab.page
    pad = page.locator("#pad")
    pad.scroll_into_view_if_needed()
    area = pad.bounding_box()
    assert area is not None
    points = [(area["x"] + area["width"] * (0.1 + 0.8 * i / 20),
               area["y"] + area["height"] * (0.5 + (0.3 if i % 4 < 2 else -0.3) * (i % 2))) for i in range(21)]
    if touch:
        cdp = page.context.new_cdp_session(page)
        for kind, (x, y) in [("touchStart", points[0]), *[("touchMove", p) for p in points[1:]]]:
            cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": [{"x": x, "y": y}]})
        cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    else:
        page.mouse.move(*points[0])
        page.mouse.down()
        for x, y in points[1:]:
            page.mouse.move(x, y, steps=2)
        page.mouse.up()
    inked = page.evaluate("""() => {
        const pad = document.getElementById('pad');
        const pixels = pad.getContext('2d').getImageData(0, 0, pad.width, pad.height).data;
        let inked = 0;
        for (let i = 3; i < pixels.length; i += 4) { if (pixels[i] > 0) { inked++; } }
        return inked;
    }""")
    assert inked > 500, f"the stroke left {inked} pixels on the pad"


def _sign(tab: Tab, drawn: bool, typed: str | None = None, touch: bool = False) -> None:
    page = tab.page
    if drawn:
        _draw(tab, touch)
    if typed is not None:
        page.fill("#typed", typed)
    page.check("#agree")
    tab.shot("4-ready")
    page.click("#sign-button")
    page.wait_for_selector("#done", timeout=60_000)
    assert page.locator("h1").inner_text() in ("Thank you: you have signed", "Signed by everyone")
    assert page.locator("#download").count() == 1
    tab.shot("5-done")


def test_three_parties_sign_in_the_browser_and_the_pdf_validates(box, business, browser, tmp_path):
    created = _create(box, business, "Employment agreement", [
        _party("Alice Example", 1, "A-7731", 1, 50), _party("Bob Example", 2, "B-1187", 1, 320),
        _party("Carol Manager", 2, "C-5521", 2, 50)])
    contract_id = created["id"]
    links = {p["id"]: p.get("link") for p in created["parties"]}
    assert links["p1"] and not links["p2"] and not links["p3"]  # Bob and Carol wait for Alice

    alice = _tab(browser, "desktop-alice-drawn", DESKTOP)
    _open_and_validate(alice, _link(box, created["parties"][0]), "A-7731")
    _sign(alice, drawn=True)

    parties = _status(box, business, contract_id)["parties"]
    assert [p["status"] for p in parties] == ["signed", "invited", "invited"]
    # the parallel pair got their links when Alice signed: the business system fetches them anew
    resent = business.post(f"{box.url}/v1/contracts/{contract_id}/remind", json={}, timeout=30)
    assert resent.status_code == 200, resent.text
    new_links = {p["id"]: p.get("link") for p in resent.json()["parties"]}
    bob = _tab(browser, "phone-bob-typed", PHONE)
    _open_and_validate(bob, _link(box, {"link": new_links["p2"]}), "B-1187")
    carol = _tab(browser, "phone-carol-drawn", PHONE)
    _open_and_validate(carol, _link(box, {"link": new_links["p3"]}), "C-5521")
    _sign(bob, drawn=False, typed="Bob Example")
    _sign(carol, drawn=True, touch=True)
    assert carol.page.locator("h1").inner_text() == "Signed by everyone"

    status = _status(box, business, contract_id)
    assert status["status"] == "completed" and all(p["status"] == "signed" for p in status["parties"]), status
    final = business.get(f"{box.url}/v1/contracts/{contract_id}/document", timeout=30).content
    assert_well_formed(final, tmp_path)
    fields = {sig.field_name for sig in reader(final).embedded_regular_signatures}
    assert {"Alice", "Bob", "Carol"} <= fields
    results = pdfsig_results(final, tmp_path)
    assert all(results[name] == "Signature is Valid." for name in fields), results
    with carol.page.expect_download() as download:
        carol.page.click("#download")
    assert Path(download.value.path()).read_bytes() == final  # the page hands out the same signed PDF

    for tab in (alice, bob, carol):
        assert tab.problems == [], (tab.name, tab.problems)
        tab.page.context.close()


@pytest.mark.parametrize("options", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_a_party_declines_in_the_browser_and_the_envelope_ends(box, business, browser, options):
    created = _create(box, business, "Supplier contract", [_party("Dave Example", 1, "D-3141", 1, 50)])
    tab = _tab(browser, f"{'phone' if options is PHONE else 'desktop'}-dave-declines", options)
    _open_and_validate(tab, _link(box, created["parties"][0]), "D-3141")
    page = tab.page
    page.click("#decline summary")
    page.fill("#reason", "The notice period is wrong")
    tab.shot("4-decline")
    page.click("#decline-button")
    assert page.locator("h1").inner_text() == "You have declined"
    assert "The notice period is wrong" in page.locator("#done").inner_text()
    tab.shot("5-declined")
    status = _status(box, business, created["id"])
    assert status["status"] == "declined" and "The notice period is wrong" in status["end_reason"]
    assert tab.problems == [], tab.problems
    tab.page.context.close()


def test_a_party_fills_its_form_fields_in_the_browser_and_the_pdf_holds_them(box, business, browser, tmp_path):
    party = {**_party("Erin Example", 1, "E-2718", 1, 50), "fields": [
        {"kind": "text", "name": "Employee number", "page": 1, "box": [50, 300, 250, 325], "label": "Your number"},
        {"kind": "checkbox", "name": "Agree", "page": 1, "box": [50, 350, 66, 366], "label": "I agree to the terms"},
        {"kind": "initials", "name": "Initials", "page": 2, "box": [500, 40, 560, 60]},
        {"kind": "date", "name": "Signed on", "page": 1, "box": [300, 300, 420, 325]}]}
    created = _create(box, business, "Form contract", [party])
    tab = _tab(browser, "desktop-erin-form", DESKTOP)
    _open_and_validate(tab, _link(box, created["parties"][0]), "E-2718")
    page = tab.page
    assert page.locator("rect.mark.form").count() == 4
    assert "today's date" in page.locator("#form-fields").inner_text()
    page.fill("#field-1", "E-4711")
    page.fill("#field-3", "EE")
    page.check("#field-2")
    _sign(tab, drawn=False, typed="Erin Example")
    final = business.get(f"{box.url}/v1/contracts/{created['id']}/document", timeout=30).content
    assert_well_formed(final, tmp_path)
    values = {str(ref.get_object()["/T"]): ref.get_object().get("/V") for ref in reader(final).root["/AcroForm"]["/Fields"]}
    assert str(values["Employee number"]) == "E-4711" and str(values["Initials"]) == "EE" and values["Agree"] == "/Yes"
    assert len(str(values["Signed on"])) == 10
    assert pdfsig_results(final, tmp_path)["Erin"] == "Signature is Valid."
    assert tab.problems == [], tab.problems
    tab.page.context.close()
