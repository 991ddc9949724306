"""Signed and encrypted mail (RFC 8551 S/MIME) from the box, through a durable SQLite outbox.

``outbox`` is light (sqlite, smtplib); ``smime`` and ``service`` load pyHanko and are imported
when first named (PEP 562), as firmware.signing's services are.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports
from .outbox import MailStatus, MailUnavailable, Outbox, OutboxSender, RelaySettings, address_hash

if TYPE_CHECKING:
    from .service import MailPolicy, MailQueued, MailService, NoDirectory, NoEncryptionCertificate, RecipientDirectory
    from .smime import Attachment, SmimeSigner

__all__ = [
    "Attachment", "MailPolicy", "MailQueued", "MailService", "MailStatus", "MailUnavailable", "NoDirectory",
    "NoEncryptionCertificate", "Outbox",
    "OutboxSender", "RecipientDirectory", "RelaySettings", "SmimeSigner", "address_hash",
]

_HEAVY = {"Attachment": "smime", "SmimeSigner": "smime", **{name: "service" for name in (
    "MailPolicy", "MailQueued", "MailService", "NoDirectory", "NoEncryptionCertificate", "RecipientDirectory")}}

__getattr__ = lazy_exports(__name__, _HEAVY)
