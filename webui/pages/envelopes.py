"""Envelopes (contract signing): the list with counts per status, one envelope with its parties and
trail, its current document and completion certificate, and the administrator's two controls,
cancel and remind.

The administrator acts on the envelope of an API client: the envelope service makes the change
and writes its trail line and audit entry itself, naming the administrator as the actor. Reading
a document is audited here (it is a person's contract, outside any client's call).
A reminder replaces the invitation links: when the box sends no mail, the new links are shown
once on the answer (as a new API key is) so the administrator can pass them on; otherwise the
parties would be left with dead links.
"""

from __future__ import annotations

import falcon

from firmware.contracts import CONTRACT_STATUSES, Contract, ContractClosed, ContractsService, UnknownContract
from firmware.operations import reports

from ..console import Console, peer_of
from ..state import record
from . import Page

BACK = "/envelopes"
LISTED = 100
OFF = ("Contract signing is off on this box. To turn it on, set enabled = true under [contracts] in box.toml, "
       "with the signer CA key on the token (signer_ca_label) and public_base_url where the organisation "
       "publishes the signing page (see the README, \"Contract signing\").")


class EnvelopePages(Page):
    """What the envelope pages share: the service (or the "off" message) and one envelope."""

    def _service(self, req: falcon.Request) -> ContractsService:
        contracts = self.console.box.contracts
        if contracts is None:
            self.failed(req, BACK, OFF)
        return contracts

    def _contract(self, req: falcon.Request, contract_id: str) -> tuple[ContractsService, Contract]:
        service = self._service(req)
        try:
            return service, service.contract(contract_id, None)
        except UnknownContract as exc:
            raise falcon.HTTPNotFound(title="No such envelope",
                                      description=f"There is no envelope {contract_id!r}.") from exc

    def _client_names(self) -> dict[str, str]:
        return {client.id: client.name for client in self.console.box.clients.list()}

    def _render_one(self, req: falcon.Request, resp: falcon.Response, contract_id: str,
                    links: dict[str, str] | None = None) -> None:
        service, contract = self._contract(req, contract_id)
        self.console.render(req, resp, "envelope.html", nav="envelopes", contract=contract,
                            parties=service.parties(contract_id), events=service.events(contract_id),
                            client_name=self._client_names().get(contract.client_id), links=links,
                            mails=self.console.box.mail is not None)


class EnvelopeList(EnvelopePages):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """GET /envelopes[?status=…]: newest first, the counts as links that filter."""
        c = self.console
        service = c.box.contracts
        if service is None:
            c.render(req, resp, "envelopes.html", nav="envelopes", enabled=False, off=OFF)
            return
        service.expire_due()  # the counts and badges say "expired" once the time is up, as the API does
        status = req.get_param("status")
        status = status if status in CONTRACT_STATUSES else None
        c.render(req, resp, "envelopes.html", nav="envelopes", enabled=True, off=OFF, status=status,
                 statuses=CONTRACT_STATUSES, counts=reports.contract_counts(c.db), listed=LISTED,
                 contracts=service.listing(status, None, LISTED), client_names=self._client_names())


class EnvelopePage(EnvelopePages):
    def on_get(self, req: falcon.Request, resp: falcon.Response, contract_id: str) -> None:
        self._render_one(req, resp, contract_id)


class Download(EnvelopePages):
    """GET /envelopes/{id}/document or …/certificate: the PDF, audited as this administrator's reading."""

    def on_get(self, req: falcon.Request, resp: falcon.Response, contract_id: str, what: str) -> None:
        c = self.console
        service, contract = self._contract(req, contract_id)
        if what == "document":
            _, pdf, _ = service.document(contract_id)
            name = f"{contract_id}.pdf"
        elif what == "certificate":
            try:
                pdf = service.completion_certificate(contract_id)
            except ContractClosed as exc:
                self.failed(req, f"{BACK}/{contract_id}", f"No completion certificate: {exc}.")
            name = f"{contract_id}-completion.pdf"
        else:
            raise falcon.HTTPNotFound()
        record(c.db, c.actor(req), "contract.download", {"contract": contract_id, "document": what},
               client_id=contract.client_id)
        resp.content_type = "application/pdf"
        resp.downloadable_as = name
        resp.data = pdf


class Cancel(EnvelopePages):
    """POST /envelopes/{id}/cancel: ends the envelope with the administrator's reason."""

    def on_post(self, req: falcon.Request, resp: falcon.Response, contract_id: str) -> None:
        c = self.console
        service, contract = self._contract(req, contract_id)
        back = f"{BACK}/{contract_id}"
        reason = " ".join(req.context.form.get("reason").split())[:500]
        if not reason:
            self.failed(req, back, "Not cancelled: say why (the reason goes into the trail and the webhook).")
        try:
            service.cancel(contract_id, contract.client_id, reason, peer_of(req), actor=c.actor(req))
        except ContractClosed as exc:
            self.failed(req, back, f"Not cancelled: {exc}.")
        self.done(req, back, f"Envelope \u201c{contract.title}\u201d is cancelled: its links stop working "
                             f"and it takes no more signatures.")


class Remind(EnvelopePages):
    """POST /envelopes/{id}/remind: new invitation links for every party whose turn it is."""

    def on_post(self, req: falcon.Request, resp: falcon.Response, contract_id: str) -> None:
        c = self.console
        service, contract = self._contract(req, contract_id)
        back = f"{BACK}/{contract_id}"
        try:
            links = service.resend(contract_id, contract.client_id, None, peer_of(req), actor=c.actor(req))
        except ContractClosed as exc:
            self.failed(req, back, f"No reminder sent: {exc}.")
        if not links:
            self.failed(req, back, "No reminder sent: no party's turn is open.")
        parties = ", ".join(sorted(links))
        if c.box.mail is not None:
            self.done(req, back, f"Reminded {parties}: new invitation links are mailed; the old links no longer work.")
        c.flash(req, "warn", f"New invitation links for {parties}; the old links no longer work. This box sends no "
                             f"mail: pass these links on to the parties now, they are not shown again.")
        self._render_one(req, resp, contract_id, links)


def add_routes(app: falcon.App[falcon.Request, falcon.Response], console: Console) -> None:
    app.add_route("/envelopes", EnvelopeList(console))
    app.add_route("/envelopes/{contract_id}", EnvelopePage(console))
    app.add_route("/envelopes/{contract_id}/cancel", Cancel(console))
    app.add_route("/envelopes/{contract_id}/remind", Remind(console))
    app.add_route("/envelopes/{contract_id}/{what}", Download(console))
