"""The signing API's WSGI application, replaceable while the process serves.

Key rollover and settings changes restart the signing service *inside* the process: a new Box
is assembled from the new configuration around the same token connection and database and
checked with a test signature (`reassemble`), and swapped in once it is. Requests already
running finish on the old objects; the next request uses the new ones; the listener never
closes, so no request is refused. CSC access tokens carry over; a SAD names its credential (the
key), so one issued for the old key is refused.

The rule that makes a change reach every worker process (firmware/workers.py) before its next
signature: **a SigningService serves the configuration box.toml holds now.** Before each request
it compares box.toml's identity (device, inode, size, modification and change times, one
``stat``) with that of the file its Box was assembled from, and reassembles on a difference.
Every writer replaces the file (firmware/durable.py) or switches the generation symlink it
resolves through (firmware/operations/generations.py), so a change always shows, and only
after the new generation's files are all in place. A stat rather than a counter in SQLite:
it needs nothing from the writers (console, command line, provisioning bundles, rollbacks),
and it costs one system call where a read transaction costs several and the GIL twice.

The console (in the supervising parent) still assembles and test-signs the new Box before
box.toml is written (firmware/operations/configstore.py calls back), so a change that cannot
sign is refused there and reaches no worker. A worker whose own reassembly fails anyway (the
token busy, say) keeps signing with its current Box, logs why, and tries again after
``RETRY_S``.

The token connection is shared, not reopened: closing the logged-in session of the old one
would log every session of the token out (see the field notes).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from wsgiref.types import StartResponse, WSGIEnvironment

from ..box import Box
from ..certificates import check_chain, load_certificates
from ..config import CONFIG_NAME, BoxConfig

log = logging.getLogger(__name__)

RETRY_S = 5.0  # a failed reassembly is tried again after this long, while the old Box signs on

Identity = tuple[int, int, int, int, int] | None


def config_identity(state_dir: Path) -> Identity:
    """What tells one box.toml from another (None: it cannot be read now)."""
    try:
        st = os.stat(state_dir / CONFIG_NAME)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def reassemble(old: Box, config: BoxConfig) -> Box:
    """A Box for ``config`` sharing ``old``'s token, database, clients, ledger and CSC sessions."""
    check_chain(old.token, config.key_label, load_certificates(config.chain_file))
    box = Box.assemble(config, old.token, old.db, old.clients, old.ledger, old.csc_sessions, old.health_parts,
                       old.proof_sender)
    # One test signature on the real path: the key is there, usable and of the certificate's type.
    box.signer.sign_data(b"esignbox rollover check", "sha256")
    return box


class SigningService:
    """A WSGI app that forwards to the current Box's app, following box.toml (see the module)."""

    def __init__(self, box: Box) -> None:
        self._lock = threading.Lock()
        self._state_dir = box.config.state_dir
        # box.toml's identity as of now, though ``box`` was loaded from it earlier: a change made in
        # between shows only with the next one (`open` closes that gap).
        self._seen = config_identity(self._state_dir)
        self._retry_at = 0.0
        # The listener stays the one served on: a changed [api] host or port takes a restart.
        self._listener = box.config.api_host, box.config.api_port
        self.box = box
        self._app = box.app()

    @classmethod
    def open(cls, state_dir: Path, listener: tuple[str, int]) -> SigningService:
        """The service for the box.toml in ``state_dir`` served on ``listener`` (host, port),
        opening the token and database."""
        seen = config_identity(state_dir)
        service = cls(Box.open(BoxConfig.load(state_dir).serving_on(*listener)))
        service._seen = seen
        return service

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        self._follow()
        return self._app(environ, start_response)

    def current(self) -> Box:
        """The Box for box.toml as it is now (reassembled first if it changed)."""
        self._follow()
        return self.box

    def install(self, box: Box) -> None:
        """Serve with ``box`` (made by `reassemble` for the box.toml just written) from the next request on."""
        with self._lock:
            self._swap(box, config_identity(self._state_dir))

    def _follow(self) -> None:
        if config_identity(self._state_dir) == self._seen:
            return
        with self._lock:
            now = config_identity(self._state_dir)  # taken before loading: a later change shows next time
            if now == self._seen or time.monotonic() < self._retry_at:
                return
            try:
                box = reassemble(self.box, BoxConfig.load(self._state_dir).serving_on(*self._listener))
            except Exception as exc:  # keep signing as before; the log says why the change is not in force
                self._retry_at = time.monotonic() + RETRY_S
                log.error("box.toml changed, but the signing service could not be reassembled from it; it signs"
                          " with the previous configuration and tries again in %g s: %s", RETRY_S, exc)
                return
            self._swap(box, now)
            log.info("box.toml changed: the signing service now uses it (key %r)", box.config.key_label)

    def _swap(self, box: Box, seen: Identity) -> None:
        """Called with the lock held."""
        self.box, self._app, self._seen = box, box.app(), seen
        self._retry_at = 0.0
