"""Who is calling: API-key logins for access tokens, and access tokens on every other CSC call.

The API key is the only long-lived secret and it crosses the wire only on ``auth/login`` and
``oauth2/token``; everything after uses the short-lived token. Logins take the key as HTTP Basic
(user = client id, password = the full API key — what CSC clients send) or as Bearer (what the
box's other endpoints take); OAuth2 clients send the same pair as client_id/client_secret.
Client ids and keys are URL-safe, so RFC 6749's form-encoding of Basic credentials changes nothing.
"""

from __future__ import annotations

import base64
import binascii

import falcon

from ..api.bodies import field
from ..store.clients import Client, ClientRegistry
from .errors import CscError
from .tokens import AccessTokens, InvalidAccessToken

_REALM = 'realm="esignbox-csc"'


def _bearer_challenge(error: str | None = None) -> dict[str, str]:
    return {"WWW-Authenticate": f"Bearer {_REALM}" + (f', error="{error}"' if error else "")}


def _basic(value: str) -> tuple[str, str]:
    try:
        user, sep, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        sep = ""
    if not sep:
        raise CscError(falcon.HTTP_401, "invalid_request", "Malformed authentication parameter",
                       {"WWW-Authenticate": f"Basic {_REALM}"})
    return user, password


class CscAuth:
    def __init__(self, clients: ClientRegistry, tokens: AccessTokens) -> None:
        self._clients = clients
        self._tokens = tokens

    def issue(self, client: Client) -> tuple[str, int]:
        """A new access token for ``client`` and its lifetime in seconds."""
        return self._tokens.issue(client.id)

    def revoke(self, token: str, client: Client) -> None:
        self._tokens.revoke(token, client.id)

    def login(self, req: falcon.Request) -> Client:
        """``auth/login``: Basic <client id : API key> or Bearer <API key>."""
        scheme, _, value = (req.get_header("Authorization") or "").partition(" ")
        if scheme.lower() == "basic":
            client_id, api_key = _basic(value)
        elif scheme.lower() == "bearer" and value.strip():
            client_id, api_key = None, value.strip()
        else:
            raise CscError(falcon.HTTP_401, "invalid_request",
                           "send Authorization: Basic <client id:API key> or Bearer <API key>",
                           {"WWW-Authenticate": f"Basic {_REALM}"})
        client = self._clients.authenticate(api_key)
        if client is None or client_id not in (None, client.id):
            raise CscError(falcon.HTTP_400, "authentication_error", "unknown client, wrong or disabled API key")
        return client

    def oauth_client(self, req: falcon.Request, form: dict) -> Client:
        """``oauth2/token`` client authentication: Basic, or client_id/client_secret in the form."""
        scheme, _, value = (req.get_header("Authorization") or "").partition(" ")
        if scheme.lower() == "basic":
            client_id, secret = _basic(value)
        else:
            client_id, secret = field(form, "client_id", str), field(form, "client_secret", str)
        client = self._clients.authenticate(secret)
        if client is None or client.id != client_id:
            raise CscError(falcon.HTTP_401, "invalid_client", "unknown client, wrong or disabled client_secret",
                           {"WWW-Authenticate": f"Basic {_REALM}"})
        return client

    def caller(self, req: falcon.Request) -> Client:
        """The active client behind the request's Bearer access token, or a 401 CscError."""
        scheme, _, token = (req.get_header("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise CscError(falcon.HTTP_401, "invalid_request",
                           "send Authorization: Bearer <access token from auth/login or oauth2/token>",
                           _bearer_challenge())
        try:
            client = self._clients.get(self._tokens.client_id(token.strip()))
        except InvalidAccessToken as exc:
            code = "expired_token" if exc.expired else "invalid_token"
            raise CscError(falcon.HTTP_401, code, str(exc), _bearer_challenge(code)) from exc
        if not client.active:
            raise CscError(falcon.HTTP_401, "invalid_token", "the client is disabled",
                           _bearer_challenge("invalid_token"))
        return client
