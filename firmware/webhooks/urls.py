"""Which URLs and addresses the box posts contract events to.

A URL is checked when an envelope is created: http or https with a host, nothing the box would
have to hide or could not send: no credentials (they would sit in the database and the audit
trail; the HMAC signature is the authentication), no fragment (never sent), no whitespace or
control characters, and a bounded length.

Where an event may go is `destination_refusal`'s rule, applied to an IP literal in the URL at
creation and to the address the sender actually connects to at delivery (firmware/webhooks/
sender.py): an API client must not make the box post to itself (loopback: the admin console's
upstream, the dev PKI), to link-local addresses (169.254.0.0/16 and fe80::/10, where cloud
metadata services answer), to the unspecified address (which reaches the box itself) or to
multicast. Private LAN ranges are allowed: the business systems live there. ``[webhooks]
allow_loopback`` lets a development box and tests post to a receiver on 127.0.0.1.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from ..errors import InvalidRequest

__all__ = ["MAX_URL_LENGTH", "check_webhook_url", "destination_refusal"]

MAX_URL_LENGTH = 2048


def destination_refusal(address: str, allow_loopback: bool) -> str | None:
    """Why the box must not post to IP ``address``, or None if it may."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 zone (fe80::1%eth0) names no other host
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback and not allow_loopback:
        return f"{address} is a loopback address, the box itself ([webhooks] allow_loopback is off)"
    if ip.is_link_local:
        return f"{address} is a link-local address (cloud metadata services answer there)"
    if ip.is_unspecified:
        return f"{address} is the unspecified address"
    if ip.is_multicast:
        return f"{address} is a multicast address"
    return None


def check_webhook_url(url: str, allow_loopback: bool) -> str:
    """``url`` if the box may post events to it, else InvalidRequest saying why. A host name is
    checked at delivery, once resolved: DNS may answer differently by then."""
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
    try:
        refusal = destination_refusal(parts.hostname, allow_loopback)
    except ValueError:  # a host name
        return url
    if refusal is not None:
        raise InvalidRequest(f"webhook URL refused: {refusal}")
    return url
