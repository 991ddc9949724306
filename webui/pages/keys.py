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
from asn1crypto import keys as asn1_keys

from firmware.errors import InvalidRequest
from firmware.operations.keys import (LABEL, activation, build_csr, chain_details, chain_path, generate, install_chain,
                           load_certificates, parse_subject)
from hsm import KeyAlgorithm, KeyExists, KeyNotFound, TokenError

from .. import certinfo
from ..state import record
from . import Page


class Keys(Page):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        c = self.console
        box = c.box
        active_label = box.config.key_label
        active_chain = box.config.chain_file.read_bytes() if box.config.chain_file.exists() else b""
        rows, error = [], None
        try:
            token_keys = box.token.keys()
        except TokenError as exc:
            token_keys, error = [], f"The token does not answer: {exc}"
        for key in token_keys:
            active = key.label == active_label
            row = {"label": key.label, "key": certinfo.key_description(asn1_keys.PublicKeyInfo.load(key.public_key_info)),
                   "active": active, "cert": None, "can_activate": False, "pending": False}
            stored = chain_path(c.state_dir, key.label) if LABEL.match(key.label) else None
            if stored is not None and stored.exists():
                row["cert"] = certinfo.facts(load_certificates(stored)[0])
                row["can_activate"] = not active or stored.read_bytes() != active_chain
                row["pending"] = active and row["can_activate"]
            elif active:
                row["cert"] = certinfo.facts(box.signer.signing_cert)
            rows.append(row)
        rows.sort(key=lambda r: (not r["active"], r["label"]))
        suggested = next((r["label"] for r in rows if r["cert"] is None), active_label)  # the key awaiting a chain
        c.render(req, resp, "keys.html", nav="keys", keys=rows, error=error, suggested=suggested,
                 algorithms=[a.value for a in KeyAlgorithm],
                 subject=certinfo.subject_text(box.signer.signing_cert.subject))

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Generate a key pair on the token."""
        c = self.console
        form = req.context.form
        label = form.get("label").strip()
        try:
            algorithm = KeyAlgorithm(form.get("algorithm"))
        except ValueError:
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
        self.done(req, "/keys", f"Key {label!r} ({algorithm.value}) generated on the token. Next: download its "
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


def add_routes(app: falcon.App, console) -> None:
    app.add_route("/keys", Keys(console))
    app.add_route("/keys/csr", Csr(console))
    app.add_route("/keys/chain", Chain(console))
    app.add_route("/keys/{label}/activate", Activate(console))
