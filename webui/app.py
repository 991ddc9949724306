"""The console's Falcon application: middleware in front of every page, then the pages.

Order of the checks, for every request including static files:
1. SecurityHeaders (on the way out): CSP without 'unsafe-inline', frame-ancestors 'none' and
   X-Frame-Options DENY, nosniff, Referrer-Policy no-referrer, no-store on pages.
2. NetworkGuard: the peer (from nginx's X-Forwarded-For, trusted by waitress from 127.0.0.1
   only) must be in the allow-list; Host, and Origin when it names one, must be exactly this
   console: https, one of the box's names or addresses, the console's port, nothing else (a
   defence against DNS rebinding and cross-site posts). The refusals are 403 pages that say why.
3. SessionGuard: loads the session; every POST must carry the session's CSRF token (403
   otherwise); pages other than login/set-up need a signed-in administrator; while the box has
   no administrator every page leads to the first set-up; while the box is not set up (set-up
   mode) every administrator's page leads to the box's set-up (webui/pages/setup.py).
"""

from __future__ import annotations

import ipaddress
import logging
import re
from pathlib import Path
from typing import Any

import falcon

from .console import Console
from .forms import Form, read_form
from .pages import audit, auth, clients, dashboard, directory, envelopes, keys, settings, setup
from .sessions import COOKIE

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


# host [":" port] as a browser sends it in Host and Origin: a DNS name or IPv4 address, or an IPv6
# address in brackets; no userinfo, path, spaces, trailing dot, empty port or leading zero.
_AUTHORITY = re.compile(r"(?:\[(?P<ipv6>[0-9a-f:.]+)\]|(?P<name>[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?))"
                        r"(?::(?P<port>[1-9][0-9]{0,4}))?")


def authority(value: str | None) -> tuple[str, int] | None:
    """'Box.lan:8443' -> ('box.lan', 8443); '[FD00::10]:8443' -> ('fd00::10', 8443); no port means 443.

    None for anything that is not exactly a host and an optional port.
    """
    match = _AUTHORITY.fullmatch((value or "").lower())
    if match is None:
        return None
    if match["ipv6"] is None:
        return match["name"], int(match["port"] or 443)
    try:
        return str(ipaddress.IPv6Address(match["ipv6"])), int(match["port"] or 443)
    except ValueError:
        return None


class SecurityHeaders:
    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: object,
                         req_succeeded: bool) -> None:
        resp.set_header("Content-Security-Policy", CSP)
        resp.set_header("X-Frame-Options", "DENY")
        resp.set_header("X-Content-Type-Options", "nosniff")
        resp.set_header("Referrer-Policy", "no-referrer")
        resp.set_header("Cross-Origin-Opener-Policy", "same-origin")
        resp.set_header("Cross-Origin-Resource-Policy", "same-origin")
        resp.set_header("Permissions-Policy", "camera=(), microphone=(), geolocation=(), usb=()")
        if not req.path.startswith("/static/"):
            resp.set_header("Cache-Control", "no-store")


class NetworkGuard:
    def __init__(self, console: Console) -> None:
        self.console = console

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        c = self.console
        peer = req.remote_addr
        if not c.lan.allows(peer):
            log.warning("console: refused peer %s (not in the allow-list)", peer)
            raise falcon.HTTPForbidden(
                title="Not from this network",
                description=f"This console only answers the box's own networks and loopback "
                            f"({c.lan.describe()}). Your address {peer} is not in that list; "
                            f"the allow-list is [console] allow in box.toml.")
        host = req.get_header("Host") or ""
        if not c.is_console(authority(host)):
            raise falcon.HTTPForbidden(
                title="Unknown host name",
                description=f"This box does not answer to the name {host[:100] or '(none)'!r}. Open the console at "
                            f"one of its own addresses or names ({', '.join(c.urls) or 'see the box console'}), "
                            f"on port {c.port}; more names can be added with [console] names in box.toml.")
        # With Referrer-Policy: no-referrer, browsers send "Origin: null" on their own form posts,
        # so "null" says nothing (the CSRF token decides); any other origin must be this console.
        origin = req.get_header("Origin")
        if (origin is not None and origin != "null"
                and not (origin.startswith("https://") and c.is_console(authority(origin[len("https://"):])))):
            raise falcon.HTTPForbidden(
                title="Cross-site request refused",
                description=f"The request came from a page of {origin[:100]!r}, not from this console.")


class SessionGuard:
    def __init__(self, console: Console) -> None:
        self.console = console

    def process_resource(self, req: falcon.Request, resp: falcon.Response, resource: object,
                         params: dict[str, Any]) -> None:
        if resource is None or req.path.startswith("/static/"):
            return
        c = self.console
        values = req.get_cookie_values(COOKIE) or []
        session, expired = c.sessions.load(values[0] if values else None)
        req.context.session, req.context.expired = session, expired
        req.context.form = Form()
        if req.method == "POST":
            req.context.form = read_form(req)
            if session is None or not session.csrf_ok(req.context.form.get("csrf")):
                raise falcon.HTTPForbidden(
                    title="Form refused",
                    description="The form's security token is missing or out of date (CSRF protection). "
                                "Go back, reload the page and send the form again.")
        access = getattr(resource, "access", "admin")
        if access == "public":
            return
        if access == "setup":
            if session is None or not session.setup_nonce or c.accounts.admin_exists():
                raise falcon.HTTPSeeOther("/setup")
            return
        if session is None or session.admin is None:
            if not c.accounts.admin_exists():
                raise falcon.HTTPSeeOther("/setup")
            raise falcon.HTTPSeeOther("/login?expired=1" if expired else "/login")
        if c.setting_up and not getattr(resource, "during_setup", False):
            raise falcon.HTTPSeeOther("/setup/box")  # the box's set-up first (webui/pages/setup.py)


def create_app(console: Console) -> falcon.App[falcon.Request, falcon.Response]:
    app = falcon.App(middleware=(SecurityHeaders(), NetworkGuard(console), SessionGuard(console)),
                     independent_middleware=True)
    app.req_options.strip_url_path_trailing_slash = True

    def serialize_error(req: falcon.Request, resp: falcon.Response, exc: falcon.HTTPError) -> None:
        resp.content_type = falcon.MEDIA_HTML
        resp.text = console.templates.get_template("error.html").render(
            status=exc.status, title=exc.title, description=exc.description, version=console.version,
            admin=None, console=console)

    def internal_error(req: falcon.Request, resp: falcon.Response, exc: Exception, params: dict[str, Any]) -> None:
        if isinstance(exc, (falcon.HTTPError, falcon.HTTPStatus)):
            raise exc
        log.exception("console: internal error on %s %s", req.method, req.path)
        raise falcon.HTTPInternalServerError(title="Internal error",
                                             description="The box could not do that; its log has the details.")

    app.set_error_serializer(serialize_error)
    app.add_error_handler(Exception, internal_error)
    app.add_static_route("/static", str(HERE / "static"))
    for module in (auth, setup, dashboard, keys, clients, directory, envelopes, audit, settings):
        module.add_routes(app, console)
    return app
