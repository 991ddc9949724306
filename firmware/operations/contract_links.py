"""Contract signing's ties to the mailer: invitations and the signed document for copy-only parties.

The envelope service (firmware/contracts) names what it needs (``Invitations``); this adapter
answers with the box's S/MIME mailer: encrypted to the person's directory certificate when there
is one. An invitation may go plain — its link alone signs nothing, the party must still prove who
it is —; the signed document never does: without a certificate the person gets a signed notice
that the document is ready, from the organisation.
"""

from __future__ import annotations

import logging

from ..contracts import Party
from ..mail.service import MailService, NoEncryptionCertificate
from ..mail.smime import Attachment

__all__ = ["InvitationsByMail"]

log = logging.getLogger(__name__)


class InvitationsByMail:
    """Mails of an envelope are the box's own (audited ``mail.box``): the envelope is charged once."""

    def __init__(self, mail: MailService | None, organisation: str) -> None:
        self._mail = mail
        self._organisation = organisation

    def invite(self, client_id: str, party: Party, title: str, link: str) -> None:
        if self._mail is None:  # no relay: the business system passes on the links the API returned
            return
        text = (f"{self._organisation} asks you to {'approve' if party.role == 'approver' else 'sign'}"
                f" \"{title}\".\n\nOpen this link to read and sign it:\n{link}\n\n"
                "You will be asked to confirm who you are first. If you did not expect this, ignore this mail.\n")
        self._mail.send_box_message(None, party.email, f"Please sign: {title}"[:200], text, allow_plain=True)

    def deliver(self, client_id: str, party: Party, title: str, pdf: bytes) -> None:
        if self._mail is None:
            return
        subject = f"Signed: {title}"[:200]
        text = f"\"{title}\" has been signed by every party. The signed document is attached.\n"
        try:
            self._mail.send_box_message(None, party.email, subject, text,
                                        attachments=[Attachment("signed.pdf", "application/pdf", pdf)])
        except NoEncryptionCertificate:
            notice = (f"\"{title}\" has been signed by every party. It is not attached: you have no e-mail"
                      f" encryption certificate in our directory. Ask {self._organisation} for your copy.\n")
            self._mail.send_box_message(None, party.email, subject, notice, allow_plain=True)
