"""Mail into the box: the inbound SMTP listener of the certificate directory and the reading of
signed messages, so people share their encryption certificate the way their mail client does."""

from .signed_mail import SignedMail, UnsignedMail, read_signed_mail
from .smtp import InboundListener, Submissions

__all__ = ["InboundListener", "SignedMail", "Submissions", "UnsignedMail", "read_signed_mail"]
