"""What every console page shares: the box's state, the stores, rendering, box.toml changes.

Its own module so that the pages and the application (app.py, which routes to the pages) both
import it and neither imports the other back.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import falcon
import jinja2

from firmware.box import Box
from firmware.config import BoxConfig
from firmware.operations import Accounts, ConfigChange, SetUp, SigningService, configstore, reassemble
from firmware.store import Database

from . import templating
from .lan import LanPolicy, parse_peer
from .nginx import NginxFront
from .probes import Prober
from .sessions import COOKIE, Session, SessionStore
from .tls import ConsoleTls


def version() -> str:
    try:
        return metadata.version("esignbox")
    except metadata.PackageNotFoundError:
        return "unknown"


@dataclass
class Console:
    """Everything the pages share. ``signing`` is the swappable signing service (None in unit tests)."""

    config: BoxConfig
    db: Database
    accounts: Accounts
    sessions: SessionStore
    lan: LanPolicy
    hosts: set[str]
    signing: SigningService | None = None  # None until the box is set up (and in unit tests)
    setup: SetUp | None = None  # the box's set-up, while `serve` waits for it (set-up mode)
    tls: ConsoleTls | None = None  # None in unit tests
    nginx: NginxFront | None = None  # None in unit tests
    prober: Prober = field(default_factory=Prober)
    port: int = 8443
    urls: list[str] = field(default_factory=list)
    version: str = field(default_factory=version)
    templates: jinja2.Environment = field(default_factory=templating.environment)
    _config_lock: threading.Lock = field(default_factory=threading.Lock)

    def is_console(self, host_port: tuple[str, int] | None) -> bool:
        """Whether a parsed Host or Origin names this console: one of the box's names, on its port."""
        return host_port is not None and host_port[0] in self.hosts and host_port[1] == self.port

    @property
    def setting_up(self) -> bool:
        """Set-up mode: the box is not set up, only the set-up's pages are served."""
        return self.setup is not None and self.signing is None

    @property
    def box(self) -> Box:
        """The box being served, as box.toml says now: only a running console (never a unit test's) has
        pages that ask for it."""
        assert self.signing is not None, "this console serves no box"
        return self.signing.current()

    @property
    def state_dir(self) -> Path:
        return self.config.state_dir

    # -- sessions and pages ---------------------------------------------------------------------
    def session(self, req: falcon.Request, resp: falcon.Response) -> Session:
        """The request's session; a new anonymous one (cookie set) if it has none."""
        session = getattr(req.context, "session", None)
        if session is None:
            session = self.sessions.create(req.remote_addr)
            self.set_cookie(req, resp, session)
        return session

    def set_cookie(self, req: falcon.Request, resp: falcon.Response, session: Session) -> None:
        """Send a session just made (SessionStore.create or replace) to the browser."""
        assert session.cookie is not None, "only a new session carries its cookie"
        req.context.session = session
        resp.set_cookie(COOKIE, session.cookie, secure=True, http_only=True, same_site="Strict", path="/")

    def render(self, req: falcon.Request, resp: falcon.Response, template: str, **values: Any) -> None:
        session = self.session(req, resp)
        resp.content_type = falcon.MEDIA_HTML
        resp.text = self.templates.get_template(template).render(
            admin=session.admin, csrf=session.csrf, flash=self.sessions.pop_flash(session),
            version=self.version, path=req.path, console=self, **values)

    def flash(self, req: falcon.Request, kind: str, text: str) -> None:
        session = getattr(req.context, "session", None)
        if session is not None:
            self.sessions.flash(session, kind, text)

    def actor(self, req: falcon.Request) -> str:
        return f"admin:{req.context.session.admin}"

    # -- box.toml -----------------------------------------------------------------------------------
    def change_config(self, req: falcon.Request, changes: dict[str, dict[str, Any]], action: str, details: dict[str, Any],
                      restart_signing: bool = True) -> ConfigChange:
        """Change box.toml through the one writer (firmware.operations.configstore), audited; restart signing on it.

        The new signing service is assembled and makes a test signature before anything is
        written; if that fails, box.toml and the running service stay as they were.
        """
        with self._config_lock:
            signing = self.signing if restart_signing else None
            ready: list[Box] = []

            def prepare(config: BoxConfig) -> None:
                if signing is not None:
                    ready.append(reassemble(signing.box, config))

            change = configstore.update(self.state_dir, changes, actor=self.actor(req), action=action,
                                        details=details, db=self.db, check=prepare)
            if signing is not None and ready:
                signing.install(ready[0])
            self.config = change.config
            return change


def peer_of(req: falcon.Request) -> str:
    address = parse_peer(req.remote_addr)
    return str(address) if address else (req.remote_addr or "?")
