"""Sign-in, first set-up with the one-time code, sign-out."""

from __future__ import annotations

import falcon

from firmware.operations import AccountError

from ..console import Console, peer_of
from ..state import record
from . import Page


class Login(Page):
    access = "public"

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        c = self.console
        if not c.accounts.admin_exists():
            raise falcon.HTTPSeeOther("/setup")
        session = getattr(req.context, "session", None)
        if session is not None and session.admin:
            raise falcon.HTTPSeeOther("/")
        expired = req.get_param_as_bool("expired") or req.context.expired
        c.render(req, resp, "login.html", expired=expired, error=None, name="")

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        c = self.console
        form = req.context.form
        name = form.get("name").strip()
        attempt = c.accounts.login(name, form.get("password"), peer_of(req))
        if not attempt.ok:
            resp.status = falcon.HTTP_429 if attempt.locked_for_s else falcon.HTTP_200
            c.render(req, resp, "login.html", expired=False, error=attempt.message, name=name)
            return
        c.set_cookie(req, resp, c.sessions.replace(req.context.session, peer_of(req), admin=name))
        raise falcon.HTTPSeeOther("/")


class Setup(Page):
    """Step 1 of the first set-up: the one-time code from the box's console."""

    access = "public"

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        c = self.console
        if c.accounts.admin_exists():
            raise falcon.HTTPSeeOther("/login")
        c.render(req, resp, "setup.html", error=None, source=c.accounts.setup_code_source())

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        c = self.console
        attempt, nonce = c.accounts.check_setup_code(req.context.form.get("code"), peer_of(req))
        if not attempt.ok:
            if c.accounts.admin_exists():
                raise falcon.HTTPSeeOther("/login")
            resp.status = falcon.HTTP_429 if attempt.locked_for_s else falcon.HTTP_200
            c.render(req, resp, "setup.html", error=attempt.message, source=c.accounts.setup_code_source())
            return
        c.set_cookie(req, resp, c.sessions.replace(req.context.session, peer_of(req), setup_nonce=nonce))
        raise falcon.HTTPSeeOther("/setup/password")


class SetupPassword(Page):
    """Step 2: the code was right; the administrator must now choose a name and password."""

    access = "setup"

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        self.console.render(req, resp, "setup_password.html", error=None, name="admin")

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        c = self.console
        form = req.context.form
        try:
            name = c.accounts.create_admin(req.context.session.setup_nonce, form.get("name"), form.get("password"),
                                           form.get("confirm"), peer_of(req))
        except AccountError as exc:
            c.render(req, resp, "setup_password.html", error=str(exc), name=form.get("name"))
            return
        c.set_cookie(req, resp, c.sessions.replace(req.context.session, peer_of(req), admin=name))
        c.flash(req, "ok", f"Welcome, {name}. The one-time code is used up; sign in with your password from now on.")
        raise falcon.HTTPSeeOther("/")


class Logout(Page):
    during_setup = True

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        c = self.console
        record(c.db, c.actor(req), "admin.logout", {"peer": peer_of(req)})
        c.set_cookie(req, resp, c.sessions.replace(req.context.session, peer_of(req)))
        c.sessions.pop_flash(req.context.session)
        c.flash(req, "ok", "Signed out.")
        raise falcon.HTTPSeeOther("/login")


def add_routes(app: falcon.App[falcon.Request, falcon.Response], console: Console) -> None:
    app.add_route("/login", Login(console))
    app.add_route("/setup", Setup(console))
    app.add_route("/setup/password", SetupPassword(console))
    app.add_route("/logout", Logout(console))
