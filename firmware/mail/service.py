"""Sending one mail: the recipient's certificates from the directory, then a signed and encrypted
S/MIME message — or, for a recipient without one, the plain notice, signed only — into the durable outbox.

The directory is a seam (``RecipientDirectory``): the certificate directory implements it; until it
is wired, the box passes ``NoDirectory``, which knows nobody, so every recipient gets the notice
and every response says ``encrypted: false``. The signer is another: the box's signing key today,
its own mail key on the token once it has one (``SmimeSigner`` takes any TokenSigner).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import make_msgid
from typing import Protocol

from asn1crypto import x509

from ..errors import InvalidRequest
from ..store import metering
from ..store.db import Database
from .outbox import Outbox
from .smime import Attachment, Envelope, SmimeSigner, encrypted_message, mime_entity, signed_message

# One address, no display name, nothing a header or an SMTP command could be split at.
_ADDRESS = re.compile(r"^[^@\s<>,;:\"()\[\]\\]+@[A-Za-z0-9.-]+\.[A-Za-z0-9-]+$")
MAX_SUBJECT = 200


class RecipientDirectory(Protocol):
    """Where the recipient's encryption certificates come from: the currently valid ones for exactly
    this address (the directory normalises and checks them), none if it has none."""

    def lookup(self, address: str) -> Sequence[x509.Certificate]: ...


class NoDirectory:
    """The directory of a box without one: no certificate for anyone, so only plain notices go out."""

    def lookup(self, address: str) -> Sequence[x509.Certificate]:
        return ()


class NoEncryptionCertificate(Exception):
    """The box's own message (a one-time code) may go only encrypted, and the recipient has no certificate."""


@dataclass(frozen=True)
class MailPolicy:
    """What [mail] says about the messages themselves."""

    from_address: str
    notice_subject: str
    notice_text: str


@dataclass(frozen=True)
class MailQueued:
    id: str
    encrypted: bool


def check_address(address: str) -> str:
    address = address.strip()
    if len(address) > 254 or not _ADDRESS.match(address):
        raise InvalidRequest(f"'to' must be one e-mail address (local@domain), not {address[:80]!r}")
    return address


class MailService:
    def __init__(self, db: Database, outbox: Outbox, signer: SmimeSigner, directory: RecipientDirectory,
                 policy: MailPolicy) -> None:
        self._db = db
        self._outbox = outbox
        self._signer = signer
        self._directory = directory
        self._policy = policy

    @property
    def signing_certificate(self) -> x509.Certificate:
        """The certificate the box's mail is signed with ([mail] key_label's, or the signing key's)."""
        return self._signer.certificate

    def send(self, client_id: str, recipient: str, subject: str, text: str | None, html: str | None,
             attachments: Sequence[Attachment] = ()) -> MailQueued:
        """Queue the mail for ``recipient``; raises InvalidRequest or metering.Refusal (nothing queued)."""
        recipient = check_address(recipient)
        if "\r" in subject or "\n" in subject or len(subject) > MAX_SUBJECT:
            raise InvalidRequest(f"'subject' is one line of at most {MAX_SUBJECT} characters")
        if text is None and html is None:
            raise InvalidRequest("send 'text', 'html' or both")
        metering.check(self._db.connect(), client_id, 1)  # before the token signs anything
        certificates = list(self._directory.lookup(recipient))
        if certificates:
            return self._queue(client_id, recipient, subject, mime_entity(text, html, attachments), certificates)
        return self._queue(client_id, recipient, self._policy.notice_subject, None, [], self._policy.notice_text)

    def send_box_message(self, client_id: str | None, recipient: str, subject: str, text: str,
                         certificates: Sequence[x509.Certificate] | None = None, allow_plain: bool = False,
                         attachments: Sequence[Attachment] = ()) -> MailQueued:
        """A message of the box's own — a directory proof, a one-time code, an envelope's signed
        document — signed and encrypted to ``certificates`` (default: the recipient's in the
        directory). Without any it goes plain (never with ``attachments``) only if ``allow_plain``,
        else NoEncryptionCertificate. Charged to ``client_id`` if given."""
        recipient = check_address(recipient)
        if client_id is not None:
            metering.check(self._db.connect(), client_id, 1)
        found = list(self._directory.lookup(recipient)) if certificates is None else list(certificates)
        if found:
            return self._queue(client_id, recipient, subject, mime_entity(text, None, attachments), found)
        if not allow_plain or attachments:
            raise NoEncryptionCertificate(f"{recipient} has no encryption certificate in the directory, and this"
                                          " message may not go unencrypted")
        return self._queue(client_id, recipient, subject, None, [], text)

    def _queue(self, client_id: str | None, recipient: str, subject: str, entity: bytes | None,
               certificates: Sequence[x509.Certificate], plain_text: str = "") -> MailQueued:
        """``entity`` signed and encrypted to ``certificates``, or ``plain_text`` signed only, into the outbox."""
        sender = self._policy.from_address
        message_id = make_msgid(domain=sender.rpartition("@")[2])
        head = Envelope(sender, recipient, subject, message_id)
        if entity is not None:
            message = encrypted_message(head, self._signer.sign(entity), certificates)
        else:
            message = signed_message(head, self._signer.sign(mime_entity(plain_text, None, ())))
        encrypted = entity is not None
        return MailQueued(self._outbox.enqueue(client_id, sender, recipient, message_id, message, encrypted), encrypted)
