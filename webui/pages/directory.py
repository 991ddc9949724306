"""The certificate directory: its counts and latest refusals, one exact address's certificates,
unpublishing one, and importing a certificate (which still needs its owner's proof of mailbox control).

The directory is never listed: the page finds certificates by exact address only, like every other
face (firmware/directory). An address is sent in a POST body, never in a URL, so that it stays out
of nginx's access log and the browser's history; a search changes nothing, so it answers with the
page itself instead of a redirect. The refusals name no address: the audit log keeps only its
keyed hash.
"""

from __future__ import annotations

import falcon

from firmware.certificates import CertificateError, read_certificates
from firmware.directory import (
    AddressInvalid,
    CertificateRefused,
    CertificateRow,
    DirectoryService,
    NoCertificate,
    normalise,
)
from firmware.errors import InvalidRequest
from firmware.operations import FAULTS, reports

from ..console import Console
from . import Page

BACK = "/directory"
OFF = ("The certificate directory is off on this box. To turn it on, set enabled = true under [directory] in "
       "box.toml, with trust_roots_file naming the CAs whose e-mail certificates you accept (see the README, "
       "\"Certificate directory\").")


def _unavailable(exc: Exception) -> bool:
    """A failure of the box or of a server it needs (revocation, mail queue): try again later."""
    fault = FAULTS.get(type(exc))
    return fault is not None and fault.status == 503


class DirectoryPage(Page):
    def _directory(self, req: falcon.Request) -> DirectoryService:
        directory = self.console.box.directory
        if directory is None:
            self.failed(req, BACK, OFF)
        return directory

    def _render(self, req: falcon.Request, resp: falcon.Response, address: str = "",
                found: list[CertificateRow] | None = None, error: str | None = None) -> None:
        c = self.console
        directory = c.box.directory
        if directory is None:
            c.render(req, resp, "directory.html", nav="directory", enabled=False, off=OFF)
            return
        c.render(req, resp, "directory.html", nav="directory", enabled=True, off=OFF,
                 counts=reports.directory_counts(directory, c.db), refusals=reports.directory_refusals(c.db),
                 address=address, found=found, error=error)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        self._render(req, resp)


class Search(DirectoryPage):
    """POST /directory/search: one exact address's certificates, every status."""

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        directory = self._directory(req)
        text = req.context.form.get("address").strip()[:320]
        try:
            address = normalise(text)
        except AddressInvalid as exc:
            self._render(req, resp, text, error=f"Not an address the directory keeps: {exc}.")
            return
        self._render(req, resp, address, found=directory.certificates(address, actor=self.console.actor(req)))


class Unpublish(DirectoryPage):
    """POST /directory/unpublish: take a published (or pending) certificate out, audited as this administrator."""

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        directory = self._directory(req)
        form = req.context.form
        address, fingerprint = form.get("address").strip(), form.get("fingerprint").strip()
        try:
            directory.unpublish(address, fingerprint, actor=self.console.actor(req), reason="admin")
        except (AddressInvalid, NoCertificate) as exc:
            self.failed(req, BACK, f"Nothing unpublished: {exc}.")
        self.done(req, BACK, f"Certificate {fingerprint[:16]}… of {address} is unpublished: lookups, LDAP and "
                             f"mail no longer use it.")


class Import(DirectoryPage):
    """POST /directory/import: the same checks and proof mail as a certificate posted to the API."""

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        c = self.console
        directory = self._directory(req)
        form = req.context.form
        address = form.get("address").strip()[:320]
        data = form.file("certificate") or form.get("certificate_pem").encode()
        try:
            certificates = read_certificates(data)
        except CertificateError as exc:
            self.failed(req, BACK, f"Not imported: that is not a certificate in PEM or DER ({exc}).")
        leaf, chain = certificates[0].dump(), [cert.dump() for cert in certificates[1:]]
        try:
            row = directory.submit(address, leaf, chain, source="console", actor=c.actor(req))
        except CertificateRefused as exc:
            self.failed(req, BACK, f"Refused by the check {exc.check!r}: {exc}. Nothing was kept.")
        except (AddressInvalid, InvalidRequest) as exc:
            self.failed(req, BACK, f"Not imported: {exc}.")
        except Exception as exc:
            if not _unavailable(exc):
                raise
            self.failed(req, BACK, f"Not imported, try again later: {exc}.")
        if row.status == "published":
            self.done(req, BACK, f"Certificate {row.fingerprint[:16]}… of {row.address} was already published.")
        self.done(req, BACK, f"Certificate {row.fingerprint[:16]}… of {row.address} passed the checks and is "
                             f"pending: the box mailed its owner a proof, encrypted to it; it is published once "
                             f"the owner confirms.")


def add_routes(app: falcon.App[falcon.Request, falcon.Response], console: Console) -> None:
    app.add_route("/directory", DirectoryPage(console))
    app.add_route("/directory/search", Search(console))
    app.add_route("/directory/unpublish", Unpublish(console))
    app.add_route("/directory/import", Import(console))
