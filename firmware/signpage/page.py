"""The signing page: ``/sign/{token}``, the link in a party's invitation.

Served by the API listener under a path of its own, so that the organisation's reverse proxy can
publish exactly this to the internet (README: "Publishing the signing page"). The invitation
token is the credential — unguessable, for one party of one envelope, ending with the envelope —
and every step is the envelope service's (firmware/contracts), never restated here: the page
validates the party, shows the document as images rendered on the box (no PDF viewer needed, works
on a phone), takes a drawn or typed signature, signs, declines.

Every form carries a CSRF token derived from the invitation token under a key of the box, and the
page's headers are the console's: a strict CSP (only the box's own style sheet and script), no
framing, no referrer (the token is in the URL), no caching.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import io
from pathlib import Path
from typing import Any

import falcon
import jinja2
from PIL import Image, ImageDraw, ImageFont, UnidentifiedImageError

from ..contracts import (
    Contract,
    ContractClosed,
    ContractsService,
    NotYourTurn,
    Party,
    PartyUnverified,
    UnknownContract,
    VerificationFailed,
)
from ..contracts.preview import page_sizes, render_page
from ..durable import secret_key
from ..errors import InvalidRequest

__all__ = ["SIGN_PAGE_PREFIX", "add_signing_page_routes"]

SIGN_PAGE_PREFIX = "/sign"
KEY_FILE = "secrets/signpage.key"
_HERE = Path(__file__).parent
_STATIC = {"sign.css": "text/css", "pad.js": "text/javascript"}
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; style-src 'self'; script-src 'self'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}
_MAX_SIGNATURE_BYTES = 256 * 1024
_MAX_SIGNATURE_SIDE = 2000
_MAX_FORM_BYTES = 2 * _MAX_SIGNATURE_BYTES  # the largest PNG allowed, base64- and URL-encoded, and the rest
_PAGE_WIDTH_PX = 900
_PNG_DATA_URL = "data:image/png;base64,"


class SigningPage:
    public = True  # the invitation token is the credential

    def __init__(self, service: ContractsService, state_dir: Path, organisation: str) -> None:
        self._service = service
        self._key = secret_key(state_dir / KEY_FILE)
        self._organisation = organisation
        self._templates = jinja2.Environment(loader=jinja2.FileSystemLoader(_HERE / "templates"),
                                             autoescape=True, trim_blocks=True, lstrip_blocks=True)

    # -- GET: the step the party is at ---------------------------------------------------------------

    def on_get(self, req: falcon.Request, resp: falcon.Response, token: str) -> None:
        found = self._party(resp, token)
        if found is None:
            return
        contract, party = found
        self._show(resp, token, contract, party)

    def _show(self, resp: falcon.Response, token: str, contract: Contract, party: Party, error: str | None = None,
              status: str = falcon.HTTP_200) -> None:
        values: dict[str, Any] = {"contract": contract, "party": party, "error": error, "status": status}
        if party.status == "declined":  # first: declining ends the envelope, the decliner hears their own words
            self._render(resp, token, "You have declined", step="done", done_text=party.note or party.status,
                         **values)
        elif contract.status == "completed":
            self._render(resp, token, "Signed by everyone", step="done", download=party.status == "signed",
                         final=True, done_text="Every party has signed. The signed document is ready.", **values)
        elif not contract.open:
            values["status"] = falcon.HTTP_410 if error is None else status
            self._render(resp, token, f"This envelope is {contract.status}", step="done",
                         done_text=contract.end_reason or contract.status, **values)
        elif party.status == "invited":
            code_sent = self._service.code_sent(contract.id, party.id)
            self._render(resp, token, "Confirm who you are", step="verify", code_sent=code_sent, **values)
        elif party.status == "validated":
            _, pdf, _ = self._service.document(contract.id)
            place = self._service.field_place(contract.id, party.id)
            form_fields = self._service.form_fields(contract.id, party.id)
            places = [("signature", place), *(("form", self._service.place_of(contract.id, f)) for f in form_fields)]
            pages = [{"number": number, "marks": [(kind, _percent(at[1], width, height)) for kind, at in places
                                                  if at is not None and at[0] == number]}
                     for number, (width, height) in enumerate(page_sizes(pdf), start=1)]
            self._render(resp, token, "Read and sign", step="sign", pages=pages, form_fields=form_fields,
                         field_page=place[0] if place is not None else None, **values)
        elif party.status == "signed":
            self._render(resp, token, "Thank you: you have signed", step="done", download=True, final=False,
                         done_text="Your signature is in the document. You will hear when every party has signed.",
                         **values)
        else:
            self._render(resp, token, "Nothing to do", step="done", done_text=party.note or party.status, **values)

    # -- POST: one step each, then back to GET (303) ---------------------------------------------------

    def on_post_code(self, req: falcon.Request, resp: falcon.Response, token: str) -> None:
        self._act(req, resp, token, lambda c, p, form: self._service.start_verification(c.id, p.id, req.context.client_ip))

    def on_post_verify(self, req: falcon.Request, resp: falcon.Response, token: str) -> None:
        self._act(req, resp, token, lambda c, p, form: self._service.confirm_verification(
            c.id, p.id, form.get("code", ""), req.context.client_ip))

    def on_post_sign(self, req: falcon.Request, resp: falcon.Response, token: str) -> None:
        def sign(contract: Contract, party: Party, form: dict[str, str]) -> None:
            if form.get("agree") != "on":
                raise InvalidRequest("tick the box that you have read the document")
            image = _signature_image(form.get("drawn", ""), form.get("typed", "") or party.name)
            fields = self._service.form_fields(contract.id, party.id)
            values: dict[str, str | bool] = {f.name: form.get(f"value.{f.name}") == "on" if f.kind == "checkbox"
                                             else form.get(f"value.{f.name}", "") for f in fields if f.kind != "date"}
            self._service.sign(contract.id, party.id, image, req.context.client_ip, values)

        self._act(req, resp, token, sign)

    def on_post_decline(self, req: falcon.Request, resp: falcon.Response, token: str) -> None:
        # Declining ends the envelope and with it every invitation link (this one too): the answer is
        # the page itself, since a redirect to the link would only find it gone.
        self._act(req, resp, token, lambda c, p, form: self._service.decline(
            c.id, p.id, form.get("reason", ""), req.context.client_ip), redirect=False)

    def _act(self, req: falcon.Request, resp: falcon.Response, token: str, step: Any, redirect: bool = True) -> None:
        found = self._party(resp, token)
        if found is None:
            return
        contract, party = found
        form = _form(req)
        if form is None:
            self._show(resp, token, contract, party, "The form is too large: draw a smaller signature or type your "
                       "name.", falcon.HTTP_413)
            return
        if not hmac.compare_digest(form.get("csrf", ""), self._csrf(token)):
            self._show(resp, token, contract, party, "This form has expired: please try again.", falcon.HTTP_403)
            return
        try:
            step(contract, party, form)
        except (VerificationFailed, InvalidRequest, NotYourTurn, PartyUnverified, ContractClosed) as exc:
            contract, party = self._service.contract(contract.id, None), self._current(contract.id, party.id)
            self._show(resp, token, contract, party, str(exc), falcon.HTTP_422)
            return
        if redirect:
            raise falcon.HTTPSeeOther(f"{SIGN_PAGE_PREFIX}/{token}")
        self._show(resp, token, self._service.contract(contract.id, None), self._current(contract.id, party.id))

    # -- the document, as images and as the PDF ---------------------------------------------------------

    def on_get_page(self, req: falcon.Request, resp: falcon.Response, token: str, number: int) -> None:
        contract, _ = self._viewer(token)
        _, pdf, _ = self._service.document(contract.id)
        resp.content_type = "image/png"
        resp.set_headers({**_HEADERS, "Cache-Control": "private, no-store"})
        resp.data = render_page(pdf, number, _PAGE_WIDTH_PX)

    def on_get_document(self, req: falcon.Request, resp: falcon.Response, token: str) -> None:
        contract, _ = self._viewer(token)
        _, pdf, _ = self._service.document(contract.id)
        resp.content_type = "application/pdf"
        resp.set_headers({**_HEADERS, "Content-Disposition": 'attachment; filename="document.pdf"'})
        resp.data = pdf

    def _viewer(self, token: str) -> tuple[Contract, Party]:
        """A party may see the document only once validated (and after signing)."""
        try:
            party = self._service.party_by_invitation(token)
        except UnknownContract:
            raise falcon.HTTPNotFound() from None
        if party.status not in ("validated", "signed"):
            raise falcon.HTTPForbidden(description="confirm who you are first")
        contract = self._service.contract(party.contract_id, None)
        if not (contract.open or contract.status == "completed"):
            raise falcon.HTTPGone(description=f"this envelope is {contract.status}")
        return contract, party

    # -- helpers ----------------------------------------------------------------------------------------

    def _party(self, resp: falcon.Response, token: str) -> tuple[Contract, Party] | None:
        try:
            party = self._service.party_by_invitation(token)
        except UnknownContract as exc:
            self._render(resp, token, "Link not valid", step="gone", done_text=str(exc), status=falcon.HTTP_404,
                         error=str(exc))
            return None
        return self._service.contract(party.contract_id, None), party

    def _current(self, contract_id: str, party_id: str) -> Party:
        [party] = [p for p in self._service.parties(contract_id) if p.id == party_id]
        return party

    def _csrf(self, token: str) -> str:
        return hmac.new(self._key, f"csrf\0{token}".encode(), hashlib.sha256).hexdigest()

    def _render(self, resp: falcon.Response, token: str, heading: str, status: str = falcon.HTTP_200,
                **values: Any) -> None:
        resp.status = status
        resp.content_type = falcon.MEDIA_HTML
        resp.set_headers(_HEADERS)
        resp.text = self._templates.get_template("sign.html").render(
            heading=heading, organisation=self._organisation, base=f"{SIGN_PAGE_PREFIX}/{token}",
            csrf=self._csrf(token), **values)


class StaticFile:
    public = True

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        if name not in _STATIC:
            raise falcon.HTTPNotFound()
        resp.content_type = _STATIC[name]
        resp.set_headers({"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"})
        resp.data = (_HERE / "static" / name).read_bytes()


def _percent(box: tuple[float, float, float, float], width: float, height: float) -> tuple[float, ...]:
    """A rectangle in points (origin bottom left) as x, y, width, height in percent of the page
    (origin top left): the SVG highlight's attributes."""
    x1, y1, x2, y2 = box
    return (round(100 * x1 / width, 2), round(100 * (height - y2) / height, 2),
            round(100 * (x2 - x1) / width, 2), round(100 * (y2 - y1) / height, 2))


def _form(req: falcon.Request) -> dict[str, str] | None:
    """The urlencoded form; None, unread, when it is larger than a drawn signature can be."""
    if req.content_length is not None and req.content_length > _MAX_FORM_BYTES:
        return None
    media = req.get_media() if req.content_type and req.content_type.startswith("application/x-www-form") else {}
    return {k: v if isinstance(v, str) else "" for k, v in dict(media or {}).items()}


def _signature_image(drawn: str, typed: str) -> bytes:
    """The party's signature as a clean PNG: the drawing re-encoded (no metadata, bounded size), or
    the typed name rendered by the box."""
    if drawn:
        if not drawn.startswith(_PNG_DATA_URL):
            raise InvalidRequest("the drawn signature must be a PNG")
        try:
            data = base64.b64decode(drawn[len(_PNG_DATA_URL):], validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequest("the drawn signature is not readable") from None
        if len(data) > _MAX_SIGNATURE_BYTES:
            raise InvalidRequest("the drawn signature is too large")
        try:
            with Image.open(io.BytesIO(data)) as image:
                if image.format != "PNG" or max(image.size) > _MAX_SIGNATURE_SIDE:
                    raise InvalidRequest("the drawn signature must be a PNG of at most 2000 pixels a side")
                clean = image.convert("RGBA")
        except (UnidentifiedImageError, OSError):
            raise InvalidRequest("the drawn signature is not a PNG") from None
    else:
        text = " ".join(typed.split())[:80]
        if not text:
            raise InvalidRequest("draw your signature or type your name")
        font = ImageFont.load_default(size=48)
        left, top, right, bottom = font.getbbox(text)
        clean = Image.new("RGBA", (int(right - left) + 20, int(bottom - top) + 20), (255, 255, 255, 0))
        ImageDraw.Draw(clean).text((10 - left, 10 - top), text, font=font, fill=(16, 42, 67, 255))
    out = io.BytesIO()
    clean.save(out, format="PNG")
    return out.getvalue()


def add_signing_page_routes(app: falcon.App[falcon.Request, falcon.Response], service: ContractsService,
                            state_dir: Path, organisation: str) -> None:
    page = SigningPage(service, state_dir, organisation)
    base = SIGN_PAGE_PREFIX + "/{token}"
    app.add_route(SIGN_PAGE_PREFIX + "/static/{name}", StaticFile())
    app.add_route(base, page)
    app.add_route(base + "/code", page, suffix="code")
    app.add_route(base + "/verify", page, suffix="verify")
    app.add_route(base + "/sign", page, suffix="sign")
    app.add_route(base + "/decline", page, suffix="decline")
    app.add_route(base + "/page/{number:int(min=1)}", page, suffix="page")
    app.add_route(base + "/document", page, suffix="document")
