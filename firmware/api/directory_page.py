"""The owner's confirmation page: ``/directory/confirm/{token}``, the link in the proof mail.

It is served by the box's API listener under a path of its own, so that the organisation's
reverse proxy can publish exactly this page to the internet and nothing else of the API (README:
"Publishing the confirmation page"). A GET only asks (what will happen, for which address and
certificate) and shows a button; the POST does it. A link opened by a mail scanner or a link
preview therefore publishes nothing. The token is the only secret: the page sends no referrer,
loads nothing from elsewhere and is never cached.
"""

from __future__ import annotations

import html

import falcon

from ..directory import CertificateRefused, DirectoryService, ProofInvalid
from ..signing.revocation import RevocationUnavailable

__all__ = ["PAGE_PATH", "ConfirmationPage"]

PAGE_PATH = "/directory/confirm/{token}"

_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}
_STYLE = ("body{font-family:system-ui,sans-serif;max-width:34rem;margin:3rem auto;padding:0 1rem;color:#1f2933}"
          "code{word-break:break-all}button{font-size:1rem;padding:.5rem 1.2rem}")


def _page(resp: falcon.Response, title: str, body: str, status: str = falcon.HTTP_200) -> None:
    resp.status = status
    resp.content_type = falcon.MEDIA_HTML
    resp.set_headers(_HEADERS)
    resp.text = (f"<!doctype html><html lang=en><meta charset=utf-8><meta name=viewport "
                 f"content='width=device-width'><title>{html.escape(title)}</title><style>{_STYLE}</style>"
                 f"<h1>{html.escape(title)}</h1>{body}</html>")


class ConfirmationPage:
    public = True  # the token is the credential

    def __init__(self, service: DirectoryService) -> None:
        self._service = service

    def on_get(self, req: falcon.Request, resp: falcon.Response, token: str) -> None:
        try:
            purpose, row = self._service.proof_target(token)
        except ProofInvalid as exc:
            _page(resp, "Link not valid", f"<p>{html.escape(str(exc))}.</p>", falcon.HTTP_404)
            return
        doing = "publish" if purpose == "publish" else "remove"
        _page(resp, f"Confirm: {doing} your certificate", (
            f"<p>The e-mail encryption certificate for <b>{html.escape(row.address)}</b> (SHA-256 fingerprint "
            f"<code>{html.escape(row.fingerprint)}</code>) will be {'published in' if doing == 'publish' else 'removed from'}"
            " the directory, so that mail to this address "
            f"{'can be encrypted to it' if doing == 'publish' else 'is no longer encrypted to it'}.</p>"
            f"<form method=post><button type=submit>Confirm</button></form>"
            "<p>If you did not ask for this, close this page: nothing changes.</p>"))

    def on_post(self, req: falcon.Request, resp: falcon.Response, token: str) -> None:
        try:
            row = self._service.confirm(token)
        except ProofInvalid as exc:
            _page(resp, "Link not valid", f"<p>{html.escape(str(exc))}.</p>", falcon.HTTP_404)
            return
        except CertificateRefused as exc:
            _page(resp, "Certificate not accepted", f"<p>{html.escape(str(exc))}</p>", falcon.HTTP_422)
            return
        except RevocationUnavailable:
            _page(resp, "Please try again later",
                  "<p>The certificate's revocation status cannot be checked right now. The link still works.</p>",
                  falcon.HTTP_503)
            return
        done = "published" if row.status == "published" else "removed"
        _page(resp, f"Certificate {done}",
              f"<p>The certificate for <b>{html.escape(row.address)}</b> is {done}. You can close this page.</p>")
