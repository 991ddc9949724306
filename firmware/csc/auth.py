"""Who is calling: API-key logins for access tokens, and access tokens on every other CSC call.

The API key is the only long-lived secret and it crosses the wire only on ``auth/login`` and
``oauth2/token``; everything after uses the short-lived token. Logins take the key as HTTP Basic
(user = client id, password = the full API key — what CSC clients send) or as Bearer (what the
box's other endpoints take); OAuth2 clients send the same pair as client_id/client_secret.
Client ids and keys are URL-safe, so RFC 6749's form-encoding of Basic credentials changes nothing.
A token is worth no more than the key it was issued under (firmware/store/csc_grants.py).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

import falcon

from ..errors import InvalidRequest
from ..store.clients import Client, ClientRegistry
from ..store.csc_grants import AccessTokens, InvalidAccessToken
from .errors import CscError

_REALM = 'realm="esignbox-csc"'


def _bearer_challenge(error: str | None = None) -> dict[str, str]:
    return {"WWW-Authenticate": f"Bearer {_REALM}" + (f', error="{error}"' if error else "")}


def _required(value: str | None, name: str) -> str:
    """A form field that is optional in the schema (Basic credentials stand in for it) but needed here."""
    if value is None:
        raise InvalidRequest(f"missing field {name!r}")
    return value


def _basic(value: str) -> tuple[str, str]:
    try:
        user, sep, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        sep = ""
    if not sep:
        raise CscError(falcon.HTTP_401, "invalid_request", "Malformed authentication parameter",
                       {"WWW-Authenticate": f"Basic {_REALM}"})
    return user, password


@dataclass(frozen=True)
class Caller:
    """Who is calling, and with which access token (the SADs it obtains are bound to that token)."""

    client: Client
    token: str


class CscAuth:
    def __init__(self, clients: ClientRegistry, tokens: AccessTokens) -> None:
        self._clients = clients
        self._tokens = tokens

    def login(self, req: falcon.Request) -> tuple[str, int]:
        """``auth/login``: Basic <client id : API key> or Bearer <API key> -> an access token, its lifetime."""
        scheme, _, value = (req.get_header("Authorization") or "").partition(" ")
        if scheme.lower() == "basic":
            client_id, api_key = _basic(value)
        elif scheme.lower() == "bearer" and value.strip():
            client_id, api_key = None, value.strip()
        else:
            raise CscError(falcon.HTTP_401, "invalid_request",
                           "send Authorization: Basic <client id:API key> or Bearer <API key>",
                           {"WWW-Authenticate": f"Basic {_REALM}"})
        since = self._tokens.checkpoint()
        client = self._clients.authenticate(api_key)
        if client is None or client_id not in (None, client.id):
            raise CscError(falcon.HTTP_400, "authentication_error", "unknown client, wrong or disabled API key")
        return self._tokens.issue(client.id, since)

    def oauth_token(self, req: falcon.Request, form_id: str | None, form_secret: str | None) -> tuple[str, int]:
        """``oauth2/token`` client authentication: Basic, or client_id/client_secret in the form."""
        scheme, _, value = (req.get_header("Authorization") or "").partition(" ")
        if scheme.lower() == "basic":
            client_id, secret = _basic(value)
        else:
            client_id, secret = _required(form_id, "client_id"), _required(form_secret, "client_secret")
        since = self._tokens.checkpoint()
        client = self._clients.authenticate(secret)
        if client is None or client.id != client_id:
            raise CscError(falcon.HTTP_401, "invalid_client", "unknown client, wrong or disabled client_secret",
                           {"WWW-Authenticate": f"Basic {_REALM}"})
        return self._tokens.issue(client.id, since)

    def revoke(self, token: str, caller: Caller) -> None:
        self._tokens.revoke(token, caller.client.id)

    def caller(self, req: falcon.Request) -> Caller:
        """The enabled client behind the request's Bearer access token, or a 401 CscError."""
        scheme, _, token = (req.get_header("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise CscError(falcon.HTTP_401, "invalid_request",
                           "send Authorization: Bearer <access token from auth/login or oauth2/token>",
                           _bearer_challenge())
        try:
            return Caller(self._tokens.client(token.strip()), token.strip())
        except InvalidAccessToken as exc:
            code = "expired_token" if exc.expired else "invalid_token"
            raise CscError(falcon.HTTP_401, code, str(exc), _bearer_challenge(code)) from exc
