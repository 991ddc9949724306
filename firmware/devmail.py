"""The development box's mail relay: an SMTP server on 127.0.0.1 that delivers nowhere and keeps
every message as a file (``var/dev-mail/NNNN.eml``), so `make run` can show the whole mail path —
an encrypted proof of mailbox control, a one-time code — to be opened with `openssl cms -decrypt`.

A real SMTP server (aiosmtpd), not a stand-in: the box's outbox talks SMTP to it exactly as it
would to the organisation's relay.
"""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from .durable import write_new

__all__ = ["DevMailbox"]

MAILBOX_DIR = "dev-mail"


class _Keeper:
    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._lock = threading.Lock()
        existing = [int(p.stem) for p in directory.glob("*.eml") if p.stem.isdigit()]
        self._numbers = itertools.count(max(existing, default=0) + 1)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self._lock:
            path = self._directory / f"{next(self._numbers):04d}.eml"
        write_new(path, envelope.original_content or b"", mode=0o600)
        return f"250 2.0.0 kept as {path.name}"


class DevMailbox:
    """The relay of a development box; ``start``/``stop``, or as a context manager."""

    def __init__(self, state_dir: Path, port: int) -> None:
        self.directory = state_dir / MAILBOX_DIR
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.port = port
        self._controller = Controller(_Keeper(self.directory), hostname="127.0.0.1", port=port,
                                      ident="esignbox dev mailbox")

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()

    def __enter__(self) -> DevMailbox:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
