"""Keys and certificates: generate on the token, CSR, import the issued chain, activate (rollover).

Each key's chain is kept in <state>/chains/<label>.pem once imported and checked against the
key (firmware.keys.check_chain). Activating a key writes [signing] key_label and chain_file to
box.toml and restarts the signing service inside the process (webui.signing): the next signing
request uses the new key, no request is dropped, nothing else needs restarting. The outgoing
key's chain is kept in chains/ too, so rolling back is the same click.
"""

from __future__ import annotations

import re
from pathlib import Path

import falcon
from asn1crypto import keys as asn1_keys

from firmware.box import load_certificates
from firmware.errors import InvalidRequest
from firmware.keys import build_csr, check_chain, parse_subject
from hsm import KeyAlgorithm, KeyExists, KeyNotFound, TokenError

from .. import certinfo
from firmware.durable import write_durable
from ..state import record
from . import Page

LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
CHAINS = "chains"


def chain_path(state_dir: Path, label: str) -> Path:
    if not LABEL.match(label):
        raise InvalidRequest(f"key label {label!r} cannot name a file; use letters, digits, '.', '_' and '-'")
    return state_dir / CHAINS / f"{label}.pem"


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
        if not LABEL.match(label):
            self.failed(req, "/keys", "A key label is 1–64 letters, digits, '.', '_' or '-', starting with a letter or digit.")
        try:
            algorithm = KeyAlgorithm(form.get("algorithm"))
        except ValueError:
            self.failed(req, "/keys", "Choose one of the offered algorithms.")
        try:
            info = c.box.token.generate_key(label, algorithm)
        except KeyExists:
            self.failed(req, "/keys", f"The token already has a key labelled {label!r}.")
        except TokenError as exc:
            self.failed(req, "/keys", f"The token refused to generate the key: {exc}")
        record(c.db, c.actor(req), "key.generate", {"label": label, "algorithm": algorithm.value,
                                                      "public_key_sha256": asn1_keys.PublicKeyInfo.load(
                                                          info.public_key_info).sha256.hex()})
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
        data = form.file("chain") or form.get("chain_pem").encode()
        try:
            path = chain_path(c.state_dir, label)
            key = c.box.token.key(label)
            chain = certinfo.order_chain(certinfo.parse_chain(data), key.public_key_info)
            check_chain(c.box.token, label, chain)
            leaf = certinfo.facts(chain[0])
            if leaf.state == "expired":
                raise InvalidRequest(f"the certificate expired on {leaf.not_after:%Y-%m-%d}")
        except InvalidRequest as exc:
            self.failed(req, "/keys", f"Chain refused for key {label!r}: {exc}.")
        except KeyNotFound:
            self.failed(req, "/keys", f"There is no key {label!r} on the token.")
        path.parent.mkdir(exist_ok=True)
        write_durable(path, certinfo.chain_pem(chain))
        record(c.db, c.actor(req), "chain.import", {"label": label, "subject": leaf.subject, "serial": leaf.serial,
                                                      "not_after": leaf.not_after.isoformat(), "certificates": len(chain)})
        self.done(req, "/keys", f"Chain for key {label!r} checked and installed ({leaf.subject}, valid until "
                                f"{leaf.not_after:%Y-%m-%d}). Activate the key to sign with it.")


class Activate(Page):
    def on_post(self, req: falcon.Request, resp: falcon.Response, label: str) -> None:
        c = self.console
        try:
            path = chain_path(c.state_dir, label)
        except InvalidRequest as exc:
            self.failed(req, "/keys", str(exc))
        if not path.exists():
            self.failed(req, "/keys", f"Key {label!r} has no certificate chain yet: upload it first.")
        previous = c.box.config.key_label
        # Keep the outgoing key's chain beside the others, so that rolling back is one click too.
        kept = chain_path(c.state_dir, previous) if LABEL.match(previous) else None
        if kept is not None and not kept.exists() and c.box.config.chain_file.exists():
            kept.parent.mkdir(exist_ok=True)
            write_durable(kept, c.box.config.chain_file.read_bytes())
        try:
            c.change_config(req, {"signing": {"key_label": label, "chain_file": f"{CHAINS}/{label}.pem"}},
                            "key.activate", {"label": label, "previous": previous})
        except (InvalidRequest, TokenError, OSError, ValueError) as exc:
            self.failed(req, "/keys", f"Key {label!r} was not activated, the signing service keeps {previous!r}: {exc}")
        self.done(req, "/keys", f"Key {label!r} is now the signing key (certificate serial {c.box.signer.cert_serial}). "
                                f"The signing service was restarted inside the box; no restart is needed.")


def add_routes(app: falcon.App, console) -> None:
    app.add_route("/keys", Keys(console))
    app.add_route("/keys/csr", Csr(console))
    app.add_route("/keys/chain", Chain(console))
    app.add_route("/keys/{label}/activate", Activate(console))
