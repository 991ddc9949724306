"""The signing API's WSGI application, replaceable while the process serves.

Key rollover and settings changes restart the signing service *inside* the process: a new Box
is assembled from the new configuration around the same token connection and database and
checked with a test signature before box.toml is written (firmware.operations.configstore calls back), and
swapped in once it is. Requests already running finish on the old objects; the
next request uses the new ones; the listener never closes, so no request is refused. CSC access
tokens carry over; a SAD names its credential (the key), so one issued for the old key is refused.

The token connection is shared, not reopened: closing the logged-in session of the old one
would log every session of the token out (see the field notes).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from wsgiref.types import StartResponse, WSGIEnvironment

from ..box import Box
from ..certificates import check_chain, load_certificates
from ..config import BoxConfig


def reassemble(old: Box, config: BoxConfig) -> Box:
    """A Box for ``config`` sharing ``old``'s token, database, clients, ledger and CSC sessions."""
    check_chain(old.token, config.key_label, load_certificates(config.chain_file))
    box = Box.assemble(config, old.token, old.db, old.clients, old.ledger, old.csc_sessions, old.health_parts,
                       old.proof_sender)
    # One test signature on the real path: the key is there, usable and of the certificate's type.
    box.signer.sign_data(b"esignbox rollover check", "sha256")
    return box


class SigningService:
    """A WSGI app that forwards to the current Box's app."""

    def __init__(self, box: Box) -> None:
        self._lock = threading.Lock()
        self.box = box
        self._app = box.app()
        self.generation = 1

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        return self._app(environ, start_response)

    def install(self, box: Box) -> None:
        """Serve with ``box`` (made by `reassemble`) from the next request on."""
        with self._lock:
            self.box, self._app = box, box.app()
            self.generation += 1
