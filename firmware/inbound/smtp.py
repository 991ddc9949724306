"""The box's inbound SMTP listener: people send a signed e-mail to the directory address.

Why a listener and not an IMAP mailbox to poll: the box answers in the SMTP dialogue itself, so a
sender's mail server bounces a refused message with the reason at once (no signature, a
certificate that fails a check), nothing waits in a mailbox between polls, and the box needs no
mail account or credentials at the organisation's mail server — only a route for one address
(an MX or a transport rule to the box). aiosmtpd is a maintained SMTP server library.

Limits: only RCPT to the directory address is accepted, a message over ``max_message_kb`` is
refused by the server (552), STARTTLS with the configured certificate is offered and may be
required. The message is taken apart by signed_mail.py; each certificate naming the sender goes
to the directory through the ``Submissions`` seam, whose checks and proof of mailbox control
decide what is published. Nothing here writes state of its own.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path
from typing import Protocol

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from asn1crypto import x509

from ..config import InboundSettings
from .signed_mail import UnsignedMail, read_signed_mail

__all__ = ["InboundListener", "Submissions"]

log = logging.getLogger(__name__)


class Submissions(Protocol):
    """Where received certificates go (the certificate directory)."""

    def submit_received(self, address: str, certificate: x509.Certificate, chain: list[x509.Certificate]) -> None:
        """Check and keep ``certificate`` as pending for ``address``; raise ValueError with the reason
        to refuse it, anything else when it cannot be judged now."""


class _Handler:
    def __init__(self, settings: InboundSettings, submissions: Submissions) -> None:
        assert settings.address is not None  # the configuration refuses [inbound] enabled without one
        self._address = settings.address.lower()
        self._submissions = submissions

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        if address.lower() != self._address:
            return f"550 5.1.1 this box receives only certificates, at {self._address}"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        peer = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer)
        try:
            mail = await read_signed_mail(raw)
        except UnsignedMail as exc:
            log.info("inbound mail from %s refused: %s", peer, exc)
            return f"550 5.7.0 {_one_line(str(exc))}"
        loop = asyncio.get_running_loop()
        refused = []
        for certificate in mail.certificates:
            try:  # the checks ask OCSP/CRL servers: off the SMTP server's event loop
                await loop.run_in_executor(None, self._submissions.submit_received, mail.sender, certificate,
                                           mail.chain)
            except ValueError as exc:
                refused.append(str(exc))
            except Exception as exc:  # e.g. the revocation servers are down: the sender's server retries
                log.warning("inbound certificate for %s not checked now: %s", mail.sender, exc)
                return "451 4.7.0 the certificate cannot be checked right now; try again later"
            else:
                log.info("inbound certificate for %s received from %s", mail.sender, peer)
                return (f"250 2.0.0 certificate received: a confirmation was sent to {mail.sender},"
                        " encrypted to it")
        return f"550 5.7.1 no certificate accepted: {_one_line('; '.join(refused))}"


def _one_line(text: str) -> str:
    return " ".join(text.split())[:400]


class InboundListener:
    """The SMTP server on its own thread (aiosmtpd's Controller); ``start``/``stop``.

    ``tls`` is the certificate chain and key STARTTLS offers (firmware/lan_tls.py picks them);
    without them STARTTLS is not offered, and ``require_starttls`` is refused.
    """

    def __init__(self, settings: InboundSettings, tls_files: tuple[Path, Path] | None,
                 submissions: Submissions) -> None:
        tls = None
        if tls_files is not None:
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(*tls_files)
        elif settings.require_starttls:
            raise ValueError("[inbound] require_starttls needs a certificate (tls_cert_file/tls_key_file or the console's)")
        self._controller = Controller(
            _Handler(settings, submissions), hostname=settings.host, port=settings.port,
            data_size_limit=settings.max_message_kb * 1024, tls_context=tls,
            require_starttls=settings.require_starttls, ident="esignbox directory",
        )

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()
