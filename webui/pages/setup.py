"""The box's set-up from the browser, after the administrator's password: token, key, CSR, chain,
services, first client, start. Served while `esignbox serve` is in set-up mode.

Which page is shown is decided by firmware.operations.setup (`SetUp.progress`), from what the box
has, not from what was clicked: /setup/box sends the browser to the first step not done, and a
step's page sends it there too when its step is behind or ahead of the box (a second tab, a
stick, a restart). The pages only read forms and say what happened; the steps are the
application layer's.
"""

from __future__ import annotations

from typing import NoReturn

import falcon

from firmware.errors import InvalidRequest
from firmware.operations import KEY_ALGORITHMS, KeyExists, Progress, SetUp, Step, TokenError
from firmware.store import ClientError

from .. import certinfo
from ..console import Console
from . import Page

NEXT = "/setup/box"
PAGES = {Step.ADMIN: "/setup", Step.TOKEN: "/setup/token", Step.KEY: "/setup/key", Step.CHAIN: "/setup/chain",
         Step.SERVICES: "/setup/services", Step.CLIENT: "/setup/client", Step.START: "/setup/start", Step.READY: "/"}
STEPS = [(Step.TOKEN, "Token"), (Step.KEY, "Key"), (Step.CHAIN, "Certificate"), (Step.SERVICES, "Services"),
         (Step.CLIENT, "First client"), (Step.START, "Start")]


class SetupPage(Page):
    during_setup = True  # served in set-up mode (webui/app.py SessionGuard)
    step: Step

    def setup(self) -> SetUp:
        if self.console.setup is None or not self.console.setting_up:
            raise falcon.HTTPSeeOther("/")
        return self.console.setup

    def at_step(self) -> tuple[SetUp, Progress]:
        """The set-up, if the box is at this page's step; else the browser goes to the right page."""
        setup = self.setup()
        progress = setup.progress()
        if progress.step != self.step:
            raise falcon.HTTPSeeOther(PAGES[progress.step])
        return setup, progress

    def show(self, req: falcon.Request, resp: falcon.Response, progress: Progress, **values: object) -> None:
        self.console.render(req, resp, "setup_box.html", step=self.step.value, steps=STEPS, detail=progress.detail,
                            **values)

    def again(self, req: falcon.Request, message: str) -> NoReturn:
        self.failed(req, PAGES[self.step], message)


class Next(SetupPage):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        progress = self.setup().progress()
        if progress.step is Step.READY:  # set up; `serve` is starting the signing service
            self.console.render(req, resp, "setup_box.html", step="started", steps=STEPS, detail="")
            return
        raise falcon.HTTPSeeOther(PAGES[progress.step])


class TokenStep(SetupPage):
    step = Step.TOKEN

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        setup, progress = self.at_step()
        self.show(req, resp, progress, modules=setup.tokens_found())

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        setup, _ = self.at_step()
        form = req.context.form
        try:
            if form.get("kind") == "softhsm":
                setup.use_softhsm(self.console.actor(req))
                message = "A SoftHSM2 token was made on the box's storage: a software token, for trying the box out."
            else:
                module, label = form.get("module"), form.get("label")
                kind = next((k for k in setup.tokens_found() if k.scan.module == module), None)
                if kind is None:
                    self.again(req, "That token module is not installed on this box.")
                setup.use_token(kind, label, form.get("pin"), self.console.actor(req))
                message = f"The box signs with {kind.name} token {label!r} now."
        except (InvalidRequest, TokenError, OSError) as exc:
            self.again(req, f"Token not set: {exc}")
        self.done(req, NEXT, message)


class KeyStep(SetupPage):
    step = Step.KEY

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        setup, progress = self.at_step()
        self.show(req, resp, progress, algorithms=KEY_ALGORITHMS, label=setup.config.key_label,
                  token=setup.token().info())

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        setup, _ = self.at_step()
        algorithm = req.context.form.get("algorithm")
        try:
            label = setup.generate_key(algorithm, self.console.actor(req))
        except (InvalidRequest, KeyExists, TokenError) as exc:
            self.again(req, f"Key not generated: {exc}")
        self.done(req, NEXT, f"Key {label!r} ({algorithm}) generated on the token; its private half never leaves it.")


class ChainStep(SetupPage):
    step = Step.CHAIN

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        setup, progress = self.at_step()
        self.show(req, resp, progress, label=setup.config.key_label)

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        setup, _ = self.at_step()
        form = req.context.form
        try:
            chain = setup.install_chain(form.file("chain") or form.get("chain_pem").encode(), self.console.actor(req))
        except (InvalidRequest, TokenError) as exc:
            self.again(req, f"Chain refused: {exc}.")
        leaf = certinfo.facts(chain[0])
        self.done(req, NEXT, f"Chain checked and kept ({leaf.subject}, valid until {leaf.not_after:%Y-%m-%d}).")


class CsrDownload(SetupPage):
    step = Step.CHAIN

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        setup, _ = self.at_step()
        try:
            request = setup.csr(req.context.form.get("subject"), self.console.actor(req))
        except (InvalidRequest, TokenError) as exc:
            self.again(req, f"No CSR: {exc}")
        resp.content_type = "application/pkcs10"
        resp.downloadable_as = f"{setup.config.key_label}.csr"
        resp.data = request


def _urls(text: str) -> list[str]:
    return [url for url in text.split() if url]


class ServicesStep(SetupPage):
    """TSA, OCSP and CRL URLs, probed for real before they are kept (webui/probes.py)."""

    step = Step.SERVICES

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        _, progress = self.at_step()
        self.show(req, resp, progress, urls={}, probes=None)

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        setup, progress = self.at_step()
        form = req.context.form
        urls = {name: _urls(form.get(name)) for name in ("tsa_urls", "ocsp_urls", "crl_urls")}
        chain = setup.chain()
        probes = self.console.prober.results(chain, urls["tsa_urls"], tuple(urls["ocsp_urls"]),
                                             tuple(urls["crl_urls"]))
        failed = [p for p in probes if not p.ok]
        if failed and not form.get("anyway"):
            self.show(req, resp, progress, urls=urls, probes=probes)
            return
        try:
            setup.set_services({name: found for name, found in urls.items() if found}, self.console.actor(req))
        except (InvalidRequest, ValueError) as exc:
            self.show(req, resp, progress, urls=urls, probes=probes, error=str(exc))
            return
        said = "; ".join(f"{p.kind} {p.url}: {'reachable' if p.ok else 'NOT reachable'}" for p in probes)
        self.done(req, NEXT, f"Services saved ({said}).")


class ClientStep(SetupPage):
    step = Step.CLIENT

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        _, progress = self.at_step()
        self.show(req, resp, progress)

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Create the client; its key is on this response only."""
        setup, progress = self.at_step()
        try:
            client, api_key = setup.add_client(req.context.form.get("name").strip(), self.console.actor(req))
        except ClientError as exc:
            self.again(req, f"Client not created: {exc}.")
        self.show(req, resp, progress, client=client, api_key=api_key)


class StartStep(SetupPage):
    step = Step.START

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        setup, progress = self.at_step()
        config = setup.config
        self.show(req, resp, progress, label=config.key_label, tsa_urls=config.tsa_urls,
                  clients=setup.clients.list())

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        setup, _ = self.at_step()
        try:
            setup.start(self.console.actor(req))
        except (InvalidRequest, TokenError, ValueError) as exc:
            self.again(req, f"Signing not started: {exc}")
        self.console.render(req, resp, "setup_box.html", step="started", steps=STEPS, detail="")


def add_routes(app: falcon.App[falcon.Request, falcon.Response], console: Console) -> None:
    app.add_route(NEXT, Next(console))
    app.add_route("/setup/token", TokenStep(console))
    app.add_route("/setup/key", KeyStep(console))
    app.add_route("/setup/chain", ChainStep(console))
    app.add_route("/setup/csr", CsrDownload(console))
    app.add_route("/setup/services", ServicesStep(console))
    app.add_route("/setup/client", ClientStep(console))
    app.add_route("/setup/start", StartStep(console))
