"""API clients through the same ClientRegistry as the CLI, with the administrator as the actor."""

from __future__ import annotations

import falcon

from firmware.operations import reports
from firmware.store import ClientError, metering

from ..charts import usage_chart
from ..console import Console
from ..forms import Form
from . import Page


def _int(form: Form, name: str) -> int | None:
    text = form.get(name).strip()
    if not text:
        return None
    try:
        value = int(text)
    except ValueError as exc:
        raise ClientError(f"{name.replace('_', ' ')} must be a whole number") from exc
    if value < 0:
        raise ClientError(f"{name.replace('_', ' ')} must be ≥ 0")
    return value


class Clients(Page):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        c = self.console
        month = reports.totals_by_client(reports.usage(c.db, None, 30))
        c.render(req, resp, "clients.html", nav="clients", clients=c.box.clients.list(),
                 today=reports.today(c.db).per_client, month=month, scopes=metering.SCOPES, default_scopes=metering.DEFAULT_SCOPES, free_calls=c.config.free_calls)

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Create a client; its key is on this response only."""
        c = self.console
        form = req.context.form
        try:
            calls = None if form.get("unlimited") else (_int(form, "calls") if form.get("calls").strip()
                                                         else c.config.free_calls)
            client, api_key = c.box.clients.add(
                form.get("name").strip(), actor=c.actor(req), scopes=tuple(form.getall("scopes")), calls=calls,
                rate_per_minute=_int(form, "rate_per_minute"), rate_per_day=_int(form, "rate_per_day"))
        except ClientError as exc:
            self.failed(req, "/clients", f"Client not created: {exc}.")
        c.render(req, resp, "client_key.html", nav="clients", client=client, api_key=api_key, created=True)


class ClientPage(Page):
    def on_get(self, req: falcon.Request, resp: falcon.Response, client_id: str) -> None:
        c = self.console
        try:
            client = c.box.clients.get(client_id)
        except ClientError as exc:
            raise falcon.HTTPNotFound(title="No such client",
                                      description=f"There is no API client {client_id!r}.") from exc
        rows = reports.usage(c.db, client_id, 30)
        c.render(req, resp, "client.html", nav="clients", client=client, rows=rows, scopes=metering.SCOPES,
                 chart=usage_chart(rows, {client.id: client.name}),
                 today=reports.today(c.db).per_client.get(client_id, 0))


class ClientAction(Page):
    """POST /clients/{id}/{action}: disable, enable, rotate, scopes, limits."""

    def on_post(self, req: falcon.Request, resp: falcon.Response, client_id: str, action: str) -> None:
        c = self.console
        registry, actor, form = c.box.clients, c.actor(req), req.context.form
        back = f"/clients/{client_id}"
        try:
            if action == "disable":
                client = registry.disable(client_id, actor=actor)
                self.done(req, back, f"{client.name} is disabled: its key is refused from now on.")
            elif action == "enable":
                client = registry.enable(client_id, actor=actor)
                self.done(req, back, f"{client.name} is enabled again.")
            elif action == "rotate":
                client, api_key = registry.rotate(client_id, actor=actor)
                c.render(req, resp, "client_key.html", nav="clients", client=client, api_key=api_key, created=False)
                return
            elif action == "scopes":
                client = registry.set_scopes(client_id, tuple(form.getall("scopes")), actor=actor)
                self.done(req, back, f"Scopes of {client.name}: {', '.join(client.scopes)}.")
            elif action == "limits":
                changes = {"rate_per_minute": _int(form, "rate_per_minute"), "rate_per_day": _int(form, "rate_per_day")}
                if form.get("unlimited"):
                    changes["calls"] = None
                elif form.get("calls").strip():
                    changes["calls"] = _int(form, "calls")
                client = registry.set_limits(client_id, actor=actor, add_calls=_int(form, "add_calls") or 0, **changes)
                self.done(req, back, f"Limits of {client.name} saved.")
            else:
                raise falcon.HTTPNotFound()
        except ClientError as exc:
            self.failed(req, back, f"Not changed: {exc}.")


def add_routes(app: falcon.App[falcon.Request, falcon.Response], console: Console) -> None:
    app.add_route("/clients", Clients(console))
    app.add_route("/clients/{client_id}", ClientPage(console))
    app.add_route("/clients/{client_id}/{action}", ClientAction(console))
