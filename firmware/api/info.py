"""Public, read-only facts about the box: is it able to sign, and with which certificate."""

from __future__ import annotations

import falcon
from asn1crypto import pem

from hsm import Token, TokenError

from ..signing.token_signer import TokenSigner


class HealthResource:
    public = True

    def __init__(self, token: Token, signer: TokenSigner) -> None:
        self._token = token
        self._signer = signer

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        try:
            self._token.key(self._signer.key_label)
            token_ok = True
        except TokenError:
            token_ok = False
        resp.status = falcon.HTTP_200 if token_ok else falcon.HTTP_503
        resp.media = {"status": "ok" if token_ok else "token_unavailable", "token_present": token_ok}


class CertificateResource:
    """The signing certificate chain, leaf first, as PEM (clients embed it or pin it)."""

    public = True

    def __init__(self, signer: TokenSigner) -> None:
        chain = [signer.signing_cert, *(c for c in signer.cert_registry if c != signer.signing_cert)]
        self._pem = b"".join(pem.armor("CERTIFICATE", c.dump()) for c in chain)
        self._subject = signer.signing_cert.subject.human_friendly
        self._serial = signer.cert_serial

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        if req.client_accepts("application/pem-certificate-chain") and not req.client_accepts_json:
            resp.content_type = "application/pem-certificate-chain"
            resp.data = self._pem
            return
        resp.media = {"subject": self._subject, "serial": self._serial, "chain_pem": self._pem.decode()}
