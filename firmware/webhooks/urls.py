"""Which URLs the box posts contract events to: checked when an envelope is created, not at delivery.

http or https with a host, nothing the box would have to hide or could not send: no credentials
(they would sit in the database and the audit trail; the HMAC signature is the authentication),
no fragment (never sent), no whitespace or control characters, and a bounded length. Private and
loopback addresses are allowed: the business system is usually on the organisation's LAN.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from ..errors import InvalidRequest

__all__ = ["MAX_URL_LENGTH", "check_webhook_url"]

MAX_URL_LENGTH = 2048


def check_webhook_url(url: str) -> str:
    """``url`` if the box may post events to it, else InvalidRequest saying why."""
    if len(url) > MAX_URL_LENGTH:
        raise InvalidRequest(f"webhook URL is longer than {MAX_URL_LENGTH} characters")
    if any(char.isspace() or ord(char) < 0x20 or ord(char) == 0x7F for char in url):
        raise InvalidRequest("webhook URL must not contain spaces or control characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise InvalidRequest(f"webhook URL must be http:// or https://, not {parts.scheme or 'without a scheme'}")
    if "@" in parts.netloc:
        raise InvalidRequest("webhook URL must not contain a user name or password; the events are signed instead")
    if not parts.hostname:
        raise InvalidRequest("webhook URL has no host")
    try:
        parts.port  # noqa: B018 - urlsplit checks the port only when it is read
    except ValueError:
        raise InvalidRequest("webhook URL has an invalid port") from None
    if parts.fragment or url.endswith("#"):
        raise InvalidRequest("webhook URL must not have a fragment (#...)")
    return url
