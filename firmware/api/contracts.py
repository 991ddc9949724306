"""/v1/contracts: envelopes with several parties — the process-control and identity-validation API
(scope ``contracts``).

An envelope is created with one multipart/form-data POST: an ``envelope`` part (JSON: title,
parties, fields, expiry, webhook, the organisation's signature) and a ``document`` part (the PDF),
so the PDF travels as bytes, bounded by the PDF limit, not inside a JSON string. Everything else is
JSON. A client sees only its own envelopes; someone else's answers as unknown.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import falcon

from ..contracts import (
    FORM_FIELD_KINDS,
    MAX_FORM_FIELDS,
    MAX_PARTIES,
    METHODS,
    ROLES,
    Contract,
    ContractsService,
    Field,
    FieldKind,
    Party,
    PartyRequest,
)
from ..directory import normalise
from ..errors import InvalidRequest
from .bodies import read_json
from .schema import read_body

__all__ = ["BODIES", "SIGNER_CA_CRL_PATH", "CrlResource", "add_contract_routes", "contract_view", "envelope_schema"]

SIGNER_CA_CRL_PATH = "/pki/signer-ca.crl"  # named in every party certificate: publish it with the signing page

_ENVELOPE_BYTES = 64 * 1024

_FIELD: dict[str, Any] = {"type": "object", "required": ["name"], "properties": {
    "name": {"type": "string", "maxLength": 64, "description": "an empty signature field of the PDF, or a new one's name"},
    "page": {"type": "integer", "minimum": 1, "description": "with box: the box adds the field on this page (1-based)"},
    "box": {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4,
            "description": "x1, y1, x2, y2 in points from the page's lower left corner"},
}}
_FORM_FIELD: dict[str, Any] = {"type": "object", "required": ["kind", "name"], "properties": {
    "kind": {"type": "string", "enum": list(FORM_FIELD_KINDS),
             "description": "text and initials: the party types them; checkbox: it ticks it; date: the box fills in"
                            " the day the party signs"},
    "name": {"type": "string", "maxLength": 64, "description": "a text field or checkbox of the PDF, or a new one's name"},
    "page": _FIELD["properties"]["page"],
    "box": _FIELD["properties"]["box"],
    "required": {"type": "boolean", "default": True,
                 "description": "text and initials must be filled in, a checkbox ticked (e.g. 'I agree')"},
    "label": {"type": "string", "maxLength": 120, "description": "what the signing page calls it (default: its name)"},
}}
_PERSON = {
    "name": {"type": "string", "maxLength": 120},
    "email": {"type": "string", "maxLength": 254},
    "method": {"type": "string", "enum": list(METHODS), "default": "email",
               "description": "identity validation: a code by (encrypted) e-mail, or an access code given out of band"},
    "access_code": {"type": "string", "maxLength": 64},
}
_PARTY = {"type": "object", "required": ["name", "email"], "properties": {
    **_PERSON,
    "role": {"type": "string", "enum": list(ROLES), "default": "signer"},
    "order": {"type": "integer", "minimum": 1, "maximum": 99, "default": 1,
              "description": "equal numbers sign in parallel; higher numbers wait for lower ones"},
    "field": _FIELD,
    "fields": {"type": "array", "items": _FORM_FIELD, "maxItems": MAX_FORM_FIELDS,
               "description": "form fields the party fills when it signs; its signature locks them"},
}}


def envelope_schema() -> dict[str, Any]:
    """The ``envelope`` part of POST /v1/contracts."""
    return {"type": "object", "required": ["title", "parties"], "properties": {
        "title": {"type": "string", "maxLength": 200},
        "parties": {"type": "array", "items": _PARTY, "minItems": 1, "maxItems": MAX_PARTIES},
        "organisation_signature": {"type": "string", "enum": ["none", "first", "last"], "default": "first",
                                   "description": "first: a certification (form filling and signing still allowed);"
                                                  " last: an approval after every party"},
        "expires_in_days": {"type": "integer", "minimum": 1, "maximum": 90},
        "webhook_url": {"type": "string", "maxLength": 2000},
        "reminder_days": {"type": "integer", "minimum": 1, "maximum": 30,
                          "description": "mail a new link to parties who have not acted after this many days"},
    }}


_ENVELOPE = envelope_schema()
_REASON = {"type": "object", "required": [], "properties": {"reason": {"type": "string", "maxLength": 500}}}
_DECLINE = {"type": "object", "required": ["reason"], "properties": {"reason": {"type": "string", "maxLength": 500}}}
_CODE = {"type": "object", "required": ["code"], "properties": {"code": {"type": "string", "maxLength": 64}}}
_ENROL = {"type": "object", "required": ["email"], "properties": {"email": _PERSON["email"]}}
_SIGN = {"type": "object", "required": [], "properties": {
    "signature_image": {"type": "string", "format": "byte", "description": "PNG of the drawn or typed signature"},
    "values": {"type": "object", "maxProperties": MAX_FORM_FIELDS,
               "additionalProperties": {"oneOf": [{"type": "string", "maxLength": 200}, {"type": "boolean"}]},
               "description": "the party's form fields by name: text for text and initials, true/false for a"
                              " checkbox (a date is the box's to fill)"}}}
_REASSIGN = {"type": "object", "required": ["name", "email"], "properties": _PERSON}


# The JSON bodies of the envelope's POST operations, by the path's last segment (the OpenAPI document's too).
BODIES: dict[str, dict[str, Any]] = {"cancel": _REASON, "decline": _DECLINE, "confirm": _CODE, "sign": _SIGN,
                                     "reassign": _REASSIGN, "totp": _ENROL}


def party_view(party: Party, link: str | None = None) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": party.id, "name": party.name, "email": party.email, "role": party.role, "order": party.order,
        "method": party.method, "status": party.status,
        "invited_at": _time(party.invited_at), "validated_at": _time(party.validated_at),
        "signed_at": _time(party.signed_at), "note": party.note, "replaces": party.replaces,
    }
    if link is not None:
        view["link"] = link
    return view


def contract_view(service: ContractsService, contract: Contract, links: dict[str, str] | None = None) -> dict[str, Any]:
    """An envelope as the API and the webhooks' receivers see it: every party and field, with times."""
    links = links or {}
    return {
        "id": contract.id, "title": contract.title, "status": contract.status,
        "created_at": _time(contract.created_at), "expires_at": _time(contract.expires_at),
        "ended_at": _time(contract.ended_at), "end_reason": contract.end_reason,
        "organisation_signature": contract.org_signature, "original_sha256": contract.original_sha256,
        "revision": contract.revision, "reminder_days": contract.reminder_days,
        "parties": [party_view(p, links.get(p.id)) for p in service.parties(contract.id)],
        "fields": [_field_view(f) for f in service.fields(contract.id)],
    }


def _field_view(field: Field) -> dict[str, Any]:
    view: dict[str, Any] = {"party": field.party_id, "name": field.name, "kind": field.kind, "page": field.page,
                            "box": list(field.box) if field.box else None}
    if field.kind != "signature":
        view.update(required=field.required, label=field.label, value=field.value)
    return view


def _time(moment: Any) -> str | None:
    return moment.isoformat() if moment is not None else None


def _field(body: dict[str, Any], kind: FieldKind = "signature") -> Field:
    box = body.get("box")
    if (box is None) != (body.get("page") is None):
        raise InvalidRequest(f"field {body['name']!r} is named (an existing field) or placed with both page and box")
    label = " ".join(body["label"].split()) or None if body.get("label") is not None else None
    if label is not None and not label.isprintable():
        raise InvalidRequest(f"field {body['name']!r}: the label is printable text")
    return Field("", body["name"], body.get("page"), tuple(float(v) for v in box) if box else None,  # type: ignore[arg-type]
                 kind, body.get("required", True), label)


def _party_request(body: dict[str, Any]) -> PartyRequest:
    field = body.get("field")
    return PartyRequest(body["name"], normalise(body["email"]), body["role"], body["order"], body["method"],
                        body.get("access_code"), _field(field) if field is not None else None,
                        tuple(_field(f, f["kind"]) for f in body.get("fields", ())))


def _read_multipart(req: falcon.Request, max_pdf: int) -> tuple[dict[str, Any], bytes]:
    if req.content_type is None or not req.content_type.startswith("multipart/form-data"):
        raise InvalidRequest("send multipart/form-data with an 'envelope' part (JSON) and a 'document' part (PDF)")
    if req.content_length is not None and req.content_length > max_pdf + _ENVELOPE_BYTES:
        raise InvalidRequest(f"the request is over the box's limit of {max_pdf} bytes for the PDF")
    envelope: dict[str, Any] | None = None
    document: bytes | None = None
    for part in req.get_media():
        if part.name == "envelope":
            raw = part.stream.read(_ENVELOPE_BYTES + 1)
            if len(raw) > _ENVELOPE_BYTES:
                raise InvalidRequest(f"the envelope part is over {_ENVELOPE_BYTES} bytes")
            try:
                loaded = json.loads(raw)
            except ValueError:
                raise InvalidRequest("the envelope part is not JSON") from None
            if not isinstance(loaded, dict):
                raise InvalidRequest("the envelope part must be a JSON object")
            envelope = loaded
        elif part.name == "document":
            document = part.stream.read(max_pdf + 1)
            if len(document) > max_pdf:
                raise InvalidRequest(f"the PDF is over the box's limit of {max_pdf} bytes")
        else:
            part.stream.read()  # drained: falcon needs the stream consumed to reach the next part
    if envelope is None or document is None:
        raise InvalidRequest("both parts are needed: 'envelope' (JSON) and 'document' (PDF)")
    return envelope, document


class _Base:
    scope = "contracts"

    def __init__(self, service: ContractsService, max_pdf_bytes: int) -> None:
        self._service = service
        self._max_pdf = max_pdf_bytes

    def _mine(self, req: falcon.Request, contract_id: str) -> Contract:
        return self._service.contract(contract_id, req.context.client.id)

    @staticmethod
    def _body(req: falcon.Request, schema: dict[str, Any]) -> dict[str, Any]:
        if not req.content_length:
            return read_body(schema, {})
        return read_body(schema, read_json(req))


class Contracts(_Base):
    """POST: a new envelope; GET: this client's envelopes (``?status=``)."""

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        raw, pdf = _read_multipart(req, self._max_pdf)
        body = read_body(_ENVELOPE, raw)
        parties = [_party_request(p) for p in body["parties"]]
        created = self._service.create(req.context.client.id, body["title"], pdf, parties,
                                       body["organisation_signature"], body.get("expires_in_days"),
                                       body.get("webhook_url"), req.context.client_ip, body.get("reminder_days"))
        resp.status = falcon.HTTP_201
        resp.media = {**contract_view(self._service, created.contract, created.links),
                      "webhook_secret": created.webhook_secret}

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        status = req.get_param("status")
        found = self._service.listing(status, req.context.client.id)
        resp.media = {"contracts": [{"id": c.id, "title": c.title, "status": c.status,
                                     "created_at": _time(c.created_at)} for c in found]}


class OneContract(_Base):
    def on_get(self, req: falcon.Request, resp: falcon.Response, contract_id: str) -> None:
        resp.media = contract_view(self._service, self._mine(req, contract_id))


class Document(_Base):
    def on_get(self, req: falcon.Request, resp: falcon.Response, contract_id: str) -> None:
        self._mine(req, contract_id)
        revision, pdf, digest = self._service.document(contract_id)
        resp.content_type = "application/pdf"
        resp.set_header("X-Revision", str(revision))
        resp.set_header("X-Document-SHA256", digest)
        resp.data = pdf


class CompletionCertificate(_Base):
    def on_get(self, req: falcon.Request, resp: falcon.Response, contract_id: str) -> None:
        self._mine(req, contract_id)
        resp.content_type = "application/pdf"
        resp.data = self._service.completion_certificate(contract_id)


class Cancel(_Base):
    def on_post(self, req: falcon.Request, resp: falcon.Response, contract_id: str) -> None:
        body = self._body(req, _REASON)
        contract = self._service.cancel(contract_id, req.context.client.id, body.get("reason", ""), req.context.client_ip)
        resp.media = contract_view(self._service, contract)


class Remind(_Base):
    def on_post(self, req: falcon.Request, resp: falcon.Response, contract_id: str) -> None:
        links = self._service.resend(contract_id, req.context.client.id, None, req.context.client_ip)
        resp.media = contract_view(self._service, self._mine(req, contract_id), links)


class Resend(_Base):
    def on_post(self, req: falcon.Request, resp: falcon.Response, contract_id: str, party_id: str) -> None:
        links = self._service.resend(contract_id, req.context.client.id, party_id, req.context.client_ip)
        resp.media = contract_view(self._service, self._mine(req, contract_id), links)


class Reassign(_Base):
    def on_post(self, req: falcon.Request, resp: falcon.Response, contract_id: str, party_id: str) -> None:
        body = self._body(req, _REASSIGN)
        self._service.reassign(contract_id, req.context.client.id, party_id, body["name"], normalise(body["email"]),
                               body["method"], body.get("access_code"), req.context.client_ip)
        resp.media = contract_view(self._service, self._mine(req, contract_id))


class Verification(_Base):
    """Start the party's identity validation (a code by mail, or nothing for an access code)."""

    def on_post(self, req: falcon.Request, resp: falcon.Response, contract_id: str, party_id: str) -> None:
        self._mine(req, contract_id)
        resp.media = self._service.start_verification(contract_id, party_id, req.context.client_ip)


class VerificationConfirm(_Base):
    def on_post(self, req: falcon.Request, resp: falcon.Response, contract_id: str, party_id: str) -> None:
        self._mine(req, contract_id)
        body = self._body(req, _CODE)
        party = self._service.confirm_verification(contract_id, party_id, body["code"], req.context.client_ip)
        resp.media = party_view(party)


class Sign(_Base):
    """Embedded signing: the business system's own page has shown the document to the validated party."""

    def on_post(self, req: falcon.Request, resp: falcon.Response, contract_id: str, party_id: str) -> None:
        self._mine(req, contract_id)
        body = self._body(req, _SIGN)
        party = self._service.sign(contract_id, party_id, body.get("signature_image"), req.context.client_ip,
                                   body.get("values"))
        resp.media = party_view(party)


class Decline(_Base):
    def on_post(self, req: falcon.Request, resp: falcon.Response, contract_id: str, party_id: str) -> None:
        self._mine(req, contract_id)
        body = self._body(req, _DECLINE)
        contract = self._service.decline(contract_id, party_id, body["reason"], req.context.client_ip)
        resp.media = contract_view(self._service, contract)


class TotpEnrolmentResource(_Base):
    """POST /v1/signers/totp: enrol a person for method totp; the secret is shown this once."""

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_body(_ENROL, read_json(req))
        address = normalise(body["email"])
        enrolment = self._service.totp.enrol(req.context.client.id, address)
        resp.status = falcon.HTTP_201
        resp.media = {"email": address, "otpauth_uri": enrolment.uri, "secret": enrolment.secret_base32}


class CrlResource:
    """The signer CA's CRL, for anyone checking a party's certificate later (it is in every signed
    PDF's DSS too)."""

    public = True

    def __init__(self, crl_der: Callable[[], bytes]) -> None:
        self._crl_der = crl_der

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = "application/pkix-crl"
        resp.set_header("Cache-Control", "public, max-age=3600")
        resp.data = self._crl_der()


def add_contract_routes(app: falcon.App[falcon.Request, falcon.Response], service: ContractsService,
                        max_pdf_bytes: int) -> None:
    base = "/v1/contracts"
    party = base + "/{contract_id}/parties/{party_id}"
    for path, resource in [
        (base, Contracts), (base + "/{contract_id}", OneContract), (base + "/{contract_id}/document", Document),
        (base + "/{contract_id}/certificate", CompletionCertificate), (base + "/{contract_id}/cancel", Cancel),
        (base + "/{contract_id}/remind", Remind), (party + "/resend", Resend), (party + "/reassign", Reassign),
        (party + "/verification", Verification), (party + "/verification/confirm", VerificationConfirm),
        (party + "/sign", Sign), (party + "/decline", Decline),
        ("/v1/signers/totp", TotpEnrolmentResource),
    ]:
        app.add_route(path, resource(service, max_pdf_bytes))
