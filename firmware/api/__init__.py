"""The HTTP API: Falcon resources that parse, call a service, and serialise. No signing logic here.

``firmware.box`` wires these onto one Falcon app; ``register`` adds the error handlers built from
the application layer's error table (firmware/operations/errors.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

if TYPE_CHECKING:
    from .auth import ApiKeyAuth, RefusalAudit
    from .client_ip import ClientAddress, client_ip
    from .errors import ApiError, register
    from .info import CertificateResource, HealthResource
    from .json_media import BoundedJsonHandler
    from .openapi import OpenApiResource, build_spec
    from .pdf import PdfSignResource, PdfVerifyResource
    from .signatures import SignatureBatchResource, SignatureResource
    from .usage import UsageResource

_EXPORTS = {
    "ApiKeyAuth": "auth", "RefusalAudit": "auth", "ClientAddress": "client_ip", "client_ip": "client_ip",
    "ApiError": "errors", "register": "errors",
    "CertificateResource": "info", "HealthResource": "info", "BoundedJsonHandler": "json_media",
    "OpenApiResource": "openapi", "build_spec": "openapi", "PdfSignResource": "pdf", "PdfVerifyResource": "pdf",
    "SignatureBatchResource": "signatures", "SignatureResource": "signatures", "UsageResource": "usage",
}
__all__ = [
    "ApiError", "ApiKeyAuth", "BoundedJsonHandler", "CertificateResource", "ClientAddress", "HealthResource",
    "OpenApiResource", "PdfSignResource", "PdfVerifyResource", "RefusalAudit", "SignatureBatchResource", "SignatureResource",
    "UsageResource", "build_spec", "client_ip", "register",
]

# Loaded on first use: the resources share request parsing and errors with firmware.csc, which
# imports from here while this package would still be initialising.
__getattr__ = lazy_exports(__name__, _EXPORTS)
