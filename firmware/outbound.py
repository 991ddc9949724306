"""Outbound HTTP (TSA, OCSP, CRL, the console's probes) through the organisation's proxy.

The box's HTTP clients are pyHanko's timestamp client, pyhanko-certvalidator's fetchers and the
console's probes; all three use `requests`, whose one common setting is the process environment
(http_proxy, https_proxy, no_proxy, read at every request). So the ``[outbound]`` setting is
applied there, once per assembly of the signing services: a change made in the console takes
effect with the next request, and a box without the setting keeps whatever proxy environment
its service was started with.
"""

from __future__ import annotations

import os

from .config import OutboundSettings

__all__ = ["apply_outbound"]

_PROXY_VARIABLES = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")
_NO_PROXY_VARIABLES = ("no_proxy", "NO_PROXY")
_STARTED_WITH = {name: os.environ.get(name) for name in (*_PROXY_VARIABLES, *_NO_PROXY_VARIABLES)}


def apply_outbound(settings: OutboundSettings) -> None:
    """Set the proxy environment from ``settings``; unset, back to what the process started with."""
    if settings.proxy is None:
        wanted = dict(_STARTED_WITH)
    else:
        wanted = {name: settings.proxy for name in _PROXY_VARIABLES}
        wanted.update({name: settings.no_proxy for name in _NO_PROXY_VARIABLES})
    for name, value in wanted.items():
        if value:
            os.environ[name] = value
        else:
            os.environ.pop(name, None)
