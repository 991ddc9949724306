"""Starting the console inside `esignbox serve`: tables, TLS, waitress on 127.0.0.1, nginx in front.

    signing API  ── [api] workers processes on its own listener ([api] host/port, firmware/workers.py)
    console      ── nginx :8443 on the LAN-facing addresses + 127.0.0.1 (TLS)
                      └─ waitress 127.0.0.1:<internal> in a thread of the supervising parent
                         (X-Forwarded-For trusted from 127.0.0.1 only)

The console's pages work on the parent's Box through a firmware.operations.live.SigningService:
a key rollover or a settings change assembles and test-signs the new Box before box.toml is
written, and swaps it in here; each worker follows box.toml itself before its next request.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import waitress

from firmware.box import Box
from firmware.config import BoxConfig
from firmware.operations import Accounts, SetUp, SigningService, box_state
from firmware.store import Database

from . import tls
from .app import create_app
from .console import Console
from .lan import LanPolicy, allowed_networks, interface_addresses, listen_addresses
from .nginx import NginxFront
from .sessions import SessionStore

log = logging.getLogger(__name__)


class ConsoleError(RuntimeError):
    """The console could not start; the signing API is not affected."""


def _url(address: str, port: int) -> str:
    return f"https://[{address}]:{port}/" if ":" in address else f"https://{address}:{port}/"


class Listener(Protocol):
    """What is used of the waitress server (waitress has no type information)."""

    def close(self) -> None: ...


@dataclass
class ConsoleRuntime:
    console: Console
    server: Listener
    thread: threading.Thread
    nginx: NginxFront

    def serving(self, box: Box) -> None:
        """The box is set up and its signing service assembled: the console's pages work on it now."""
        self.console.signing = SigningService(box)
        self.console.config = box.config
        box.health_parts["console"] = self.nginx.status

    def stop(self) -> None:
        self.nginx.stop()
        try:
            self.server.close()
        except Exception:  # closing a listener that is mid-poll; the process is exiting anyway
            pass


def start_console(config: BoxConfig, box: Box | None, out: Callable[[str], None] = print) -> ConsoleRuntime:
    """Start the console for a serving box, or in set-up mode for a box that is not set up (``box``
    None: firmware/operations/setup.py); raises ConsoleError (nothing left running) on failure."""
    settings = config.console
    interfaces = interface_addresses()
    try:
        addresses = [str(a) for a in listen_addresses(settings.listen, interfaces)]
        lan = LanPolicy(allowed_networks(settings.allow, interfaces))
    except ValueError as exc:
        raise ConsoleError(str(exc)) from exc
    db = box.db if box is not None else Database(config.database)
    accounts = Accounts(db, settings.max_failures, settings.lockout_minutes * 60)
    sessions = SessionStore(db, settings.session_idle_minutes * 60)
    console_cert = tls.for_console(config, addresses)
    hosts = {*tls.box_names(config), *addresses, "127.0.0.1", "::1", *(n.lower() for n in console_cert.names)}
    console = Console(config=config, db=db, accounts=accounts, sessions=sessions, lan=lan, hosts=hosts,
                      signing=SigningService(box) if box is not None else None,
                      setup=SetUp(config.state_dir, db) if box is None else None, tls=console_cert,
                      port=settings.port,
                      urls=[_url(a, settings.port) for a in addresses if a != "127.0.0.1"] +
                           [_url("127.0.0.1", settings.port)])
    server = waitress.create_server(
        create_app(console), host="127.0.0.1", port=settings.internal_port, threads=4,
        trusted_proxy="127.0.0.1", trusted_proxy_count=1,
        trusted_proxy_headers={"x-forwarded-for", "x-forwarded-proto"}, clear_untrusted_proxy_headers=True,
        max_request_body_size=4 * 1024 * 1024, ident="esignbox-console",
    )
    thread = threading.Thread(target=server.run, name="console-waitress", daemon=True)
    thread.start()
    try:
        nginx = NginxFront(config.state_dir / "console" / "nginx", addresses, settings.port, server.effective_port,
                           console_cert.cert_file, console_cert.key_file, settings.nginx).start()
    except Exception as exc:
        server.close()
        raise ConsoleError(str(exc)) from exc
    console.nginx = nginx
    runtime = ConsoleRuntime(console, server, thread, nginx)
    if box is not None:
        runtime.serving(box)
    box_state.publish_console(config.state_dir, console.urls, console_cert.ca_fingerprint or "")
    code = accounts.ensure_setup_code()
    lines = [f"Admin console (HTTPS): {'  '.join(console.urls)}",
             f"  answers peers in: {lan.describe()}"]
    if box is None:
        lines.append("  SET-UP MODE: this box is not set up yet; open the console to set it up"
                     " (the signing API starts when the set-up is finished)")
    if console_cert.ca is not None:
        lines.append(f"  certificate from the box-local CA; CA SHA-256 fingerprint: {console_cert.ca_fingerprint}")
    else:
        lines.append(f"  organisation's certificate; SHA-256 fingerprint: {console_cert.leaf_fingerprint}")
    if code:
        lines.append(f"  ONE-TIME SET-UP CODE: {code}   (no administrator yet: open the console and enter it)")
    elif not accounts.admin_exists():
        lines.append("  no administrator yet: use the set-up code from the provisioning stick")
    out("\n".join(lines))
    return runtime
