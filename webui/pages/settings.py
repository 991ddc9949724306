"""Settings: TSAs, signature defaults, the console's certificate, the network, the version, password."""

from __future__ import annotations

import urllib.parse

import falcon

from firmware.config import ConfigError, check_proxy_url, redacted_url
from firmware.operations import AccountError
from firmware.signing import Level, check_stamp_text, parse_enum

from .. import tls
from ..console import Console, peer_of
from ..lan import InterfaceAddress, interface_addresses
from . import Page


def _tsa_urls(text: str) -> list[str]:
    urls = [line.strip() for line in text.splitlines() if line.strip()]
    if not urls:
        raise ValueError("at least one TSA URL is needed (they are tried in order)")
    for url in urls:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"{url!r} is not an http(s) URL")
    return urls


class Settings(Page):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        c = self.console
        interfaces: dict[str, list[InterfaceAddress]] = {}
        for item in interface_addresses():
            interfaces.setdefault(item.interface, []).append(item)
        c.render(req, resp, "settings.html", nav="settings", config=c.config, levels=[lv.value for lv in Level],
                 interfaces=interfaces, tls=c.tls, proxy_shown=redacted_url(c.config.outbound.proxy))


class OutboundSettings(Page):
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        c = self.console
        form = req.context.form
        old = c.config.outbound
        proxy = form.get("proxy").strip() or None
        if proxy is not None and proxy == redacted_url(old.proxy):
            proxy = old.proxy  # the page showed ****: the stored password stays
        no_proxy = form.get("no_proxy").strip() or None
        try:
            if proxy is not None:
                check_proxy_url(proxy)
        except ConfigError as exc:
            self.failed(req, "/settings", f"Not saved: {exc}.")
        if (proxy, no_proxy) == (old.proxy, old.no_proxy):
            self.done(req, "/settings", "Nothing changed.")
        try:
            c.change_config(req, {"outbound": {"proxy": proxy, "no_proxy": no_proxy}}, "settings.change",
                            {"outbound_proxy": {"from": redacted_url(old.proxy) or None,
                                                "to": redacted_url(proxy) or None}})
        except Exception as exc:  # the old box.toml is back in place; say what went wrong
            self.failed(req, "/settings", f"Not saved, box.toml is unchanged: {exc}")
        self.done(req, "/settings", "Proxy saved to box.toml; TSA, OCSP and CRL requests use it from now on.")


class SigningSettings(Page):
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        c = self.console
        form = req.context.form
        try:
            urls = _tsa_urls(form.get("tsa_urls"))
            level = parse_enum(Level, form.get("default_level"), "level").value
            stamp = form.get("stamp_text").strip()
            check_stamp_text(stamp)
        except ValueError as exc:  # InvalidRequest included
            self.failed(req, "/settings", f"Not saved: {exc}.")
        old = c.config
        wanted = {"tsa_urls": urls, "default_level": level, "stamp_text": stamp}
        changes = {k: v for k, v in wanted.items() if v != getattr(old, k)}
        if not changes:
            self.done(req, "/settings", "Nothing changed.")
        try:
            c.change_config(req, {"signing": changes}, "settings.change",
                            {k: {"from": getattr(old, k), "to": v} for k, v in changes.items()})
        except Exception as exc:  # the old box.toml is back in place; say what went wrong
            self.failed(req, "/settings", f"Not saved, box.toml is unchanged: {exc}")
        self.done(req, "/settings", "Settings saved to box.toml; the signing service was restarted inside the box.")


class TlsSettings(Page):
    """Upload the organisation's certificate for the console, or go back to the box-local CA."""

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        c = self.console
        form = req.context.form
        directory = c.state_dir / "console" / "tls"
        if form.get("reset"):
            tls.remove_organisation(directory)
            cert_file, key_file, new = None, None, "box-local CA"
        else:
            try:
                cert_file, key_file, leaf = tls.install_organisation(directory, form.file("cert") or b"",
                                                                     form.file("key") or b"")
            except tls.TlsError as exc:
                self.failed(req, "/settings", f"Certificate refused: {exc}.")
            new = leaf.subject.rfc4514_string()
        relative = {"tls_cert_file": str(cert_file.relative_to(c.state_dir)) if cert_file else None,
                    "tls_key_file": str(key_file.relative_to(c.state_dir)) if key_file else None}
        c.change_config(req, {"console": relative}, "settings.change", {"console_certificate": new},
                        restart_signing=False)
        if c.nginx is not None:
            c.tls = tls.for_console(c.config, [a for a in c.nginx.addresses])
            c.nginx.reload(c.tls.cert_file, c.tls.key_file)
            c.hosts.update(n.lower() for n in c.tls.names)
        self.done(req, "/settings", f"The console now presents the certificate of {new}. Reload the page.")


class Password(Page):
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        c = self.console
        form, session = req.context.form, req.context.session
        try:
            c.accounts.change_password(session.admin, form.get("current"), form.get("password"), form.get("confirm"),
                                       peer_of(req))
        except AccountError as exc:
            self.failed(req, "/settings", f"Password not changed: {exc}")
        c.sessions.end_all(session.admin, keep=session)
        self.done(req, "/settings", "Password changed; other sessions of this account are signed out.")


def add_routes(app: falcon.App[falcon.Request, falcon.Response], console: Console) -> None:
    app.add_route("/settings", Settings(console))
    app.add_route("/settings/signing", SigningSettings(console))
    app.add_route("/settings/outbound", OutboundSettings(console))
    app.add_route("/settings/tls", TlsSettings(console))
    app.add_route("/settings/password", Password(console))
