"""E-mail addresses as the directory keys them: one spelling per mailbox.

Trimmed, lower-cased, the domain in its ASCII (punycode) form by IDNA 2008 with the UTS #46
mapping (the `idna` package; Python's own `encodings.idna` is IDNA 2003, which maps some names,
e.g. with ß, differently from what mail systems use today). The local part must be ASCII: an
rfc822Name in a certificate is an IA5String, so a non-ASCII mailbox (SmtpUTF8Mailbox, RFC 8398)
can never match one. Quoted local parts and comments are refused rather than interpreted.
Lower-casing the local part is a policy, not RFC 5321 (which leaves it to the receiving
system); every mail system the box is meant for treats it case-insensitively.
"""

from __future__ import annotations

import re

import idna

from ..errors import InvalidRequest

__all__ = ["AddressInvalid", "normalise"]

# RFC 5322 dot-atom text: atext characters, dots only between them.
_LOCAL = re.compile(r"^[a-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
MAX_LOCAL = 64  # RFC 5321 4.5.3.1.1
MAX_ADDRESS = 254  # RFC 5321's path limit less the angle brackets


class AddressInvalid(InvalidRequest):
    """Not an e-mail address the directory can key a certificate by."""


def normalise(address: str) -> str:
    """``address`` as the directory stores and compares it; raises AddressInvalid saying why not."""
    text = address.strip()
    if not text:
        raise AddressInvalid("the e-mail address is empty")
    local, at, domain = text.rpartition("@")
    if not at or not local or not domain:
        raise AddressInvalid(f"{_shown(text)} is not an e-mail address (local-part@domain)")
    local = local.lower()
    if not local.isascii():
        raise AddressInvalid(f"{_shown(text)}: the part before @ must be ASCII")
    if len(local) > MAX_LOCAL or not _LOCAL.match(local):
        raise AddressInvalid(f"{_shown(text)}: the part before @ is not a plain mailbox name"
                             " (letters, digits, !#$%&'*+/=?^_`{|}~- and single dots; at most 64 characters)")
    try:
        ascii_domain = idna.encode(domain.rstrip("."), uts46=True).decode("ascii").lower()
    except (idna.IDNAError, UnicodeError) as exc:
        raise AddressInvalid(f"{_shown(text)}: the domain is not a valid host name ({exc})") from None
    if "." not in ascii_domain:
        raise AddressInvalid(f"{_shown(text)}: the domain must have at least two labels")
    result = f"{local}@{ascii_domain}"
    if len(result) > MAX_ADDRESS:
        raise AddressInvalid(f"the e-mail address is longer than {MAX_ADDRESS} characters")
    return result


def _shown(text: str) -> str:
    """The input as an error message may quote it: bounded, so a huge value is not echoed."""
    return repr(text if len(text) <= 80 else text[:77] + "...")
