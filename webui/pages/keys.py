"""Keys and certificates: generate on the token, CSR, import the issued chain, activate (rollover).

The rules are firmware.operations.keys' (the command line uses the same ones): each key's chain is kept in
<state>/chains/<label>.pem once checked against the key; activating writes [signing] key_label,
chain_file and previous_key_label through the one configuration writer and restarts the signing
service inside the process (firmware.operations.live): the next signing request uses the new key, no request
is dropped, nothing else needs restarting. The outgoing key's chain is kept in chains/ too, so
rolling back is the same click.
"""

from __future__ import annotations

import falcon

from firmware.errors import InvalidRequest
from firmware.operations import (
    KEY_ALGORITHMS,
    KeyExists,
    KeyNotFound,
    TokenError,
    activation,
    build_csr,
    chain_details,
    generate,
    install_chain,
    inventory,
    parse_subject,
)

from .. import certinfo
from ..console import Console
from ..state import record
from . import Page


class Keys(Page):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        c = self.console
        box = c.box
        error = None
        try:
            states = inventory(box.config, box.token)
        except TokenError as exc:
            states, error = [], f"The token does not answer: {exc}"
        rows = [{"label": s.label, "key": certinfo.key_description(s.public_key), "active": s.active,
                 "cert": certinfo.facts(s.leaf) if s.leaf is not None else None, "can_activate": s.can_activate,
                 "pending": s.pending} for s in states]
        suggested = next((s.label for s in states if s.leaf is None), box.config.key_label)  # the key awaiting a chain
        signing_cert = box.signer.signing_cert
        assert signing_cert is not None  # a TokenSigner is made with its chain's leaf
        c.render(req, resp, "keys.html", nav="keys", keys=rows, error=error, suggested=suggested,
                 algorithms=KEY_ALGORITHMS, subject=certinfo.subject_text(signing_cert.subject))

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Generate a key pair on the token."""
        c = self.console
        form = req.context.form
        label, algorithm = form.get("label").strip(), form.get("algorithm")
        if algorithm not in KEY_ALGORITHMS:
            self.failed(req, "/keys", "Choose one of the offered algorithms.")
        try:
            _, details = generate(c.box.token, label, algorithm)
        except InvalidRequest as exc:
            self.failed(req, "/keys", f"Key not generated: {exc}.")
        except KeyExists:
            self.failed(req, "/keys", f"The token already has a key labelled {label!r}.")
        except TokenError as exc:
            self.failed(req, "/keys", f"The token refused to generate the key: {exc}")
        record(c.db, c.actor(req), "key.generate", details)
        self.done(req, "/keys", f"Key {label!r} ({algorithm}) generated on the token. Next: download its "
                                f"CSR, have your CA issue the certificate, upload the chain.")


class Csr(Page):
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        c = self.console
        label = req.context.form.get("label")
        try:
            subject = parse_subject(req.context.form.get("subject"))
            request = build_csr(c.box.token, label, subject)
        except InvalidRequest as exc:
            self.failed(req, "/keys", f"CSR for {label!r}: {exc}")
        except KeyNotFound:
            self.failed(req, "/keys", f"There is no key {label!r} on the token.")
        record(c.db, c.actor(req), "key.csr", {"label": label, "subject": subject.human_friendly})
        resp.content_type = "application/pkcs10"
        resp.downloadable_as = f"{label}.csr"
        resp.data = request


class Chain(Page):
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        c = self.console
        form = req.context.form
        label = form.get("label")
        try:
            chain = install_chain(c.state_dir, c.box.token, label, form.file("chain") or form.get("chain_pem").encode())
        except InvalidRequest as exc:
            self.failed(req, "/keys", f"Chain refused for key {label!r}: {exc}.")
        except KeyNotFound:
            self.failed(req, "/keys", f"There is no key {label!r} on the token.")
        leaf = certinfo.facts(chain[0])
        record(c.db, c.actor(req), "chain.import", chain_details(label, chain))
        self.done(req, "/keys", f"Chain for key {label!r} checked and installed ({leaf.subject}, valid until "
                                f"{leaf.not_after:%Y-%m-%d}). Activate the key to sign with it.")


class Activate(Page):
    def on_post(self, req: falcon.Request, resp: falcon.Response, label: str) -> None:
        c = self.console
        previous = c.box.config.key_label
        try:
            change = activation(c.box.config, c.box.token, label)
            c.change_config(req, change.changes, "key.activate", change.details)
        except KeyNotFound:
            self.failed(req, "/keys", f"There is no key {label!r} on the token.")
        except (InvalidRequest, TokenError, OSError, ValueError) as exc:
            self.failed(req, "/keys", f"Key {label!r} was not activated, the signing service keeps {previous!r}: {exc}")
        self.done(req, "/keys", f"Key {label!r} is now the signing key (certificate serial {c.box.signer.cert_serial}). "
                                f"The signing service was restarted inside the box; no restart is needed.")


def add_routes(app: falcon.App[falcon.Request, falcon.Response], console: Console) -> None:
    app.add_route("/keys", Keys(console))
    app.add_route("/keys/csr", Csr(console))
    app.add_route("/keys/chain", Chain(console))
    app.add_route("/keys/{label}/activate", Activate(console))
