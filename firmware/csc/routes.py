"""Mounting the CSC API on the box's Falcon app: /csc/v1/ (what pyHanko's CSCSigner speaks) and /csc/v2/."""

from __future__ import annotations

from dataclasses import dataclass

import falcon

from ..signing.hash_signing import MAX_BATCH, HashSigningService
from ..signing.raw_signing import RawSigningService
from ..signing.timestamps import FallbackTimeStamper
from ..signing.token_signer import TokenSigner
from ..store.clients import ClientRegistry
from ..store.csc_grants import AccessTokens, SadStore
from ..store.db import Database
from ..store.ledger import SignatureLedger
from .auth import CscAuth
from .credential import Credential
from .resources import CscServices, served
from .timestamping import TimestampService
from .versions import V1, V2


@dataclass(frozen=True)
class CscSessions:
    """Access tokens and SADs. They live in the box's database, so they outlive a reassembly of the
    signing services (the console's key rollover) and a restart, and every serving process shares them."""

    tokens: AccessTokens
    sads: SadStore

    @classmethod
    def open(cls, db: Database) -> CscSessions:
        return cls(AccessTokens(db), SadStore(db))


def add_csc_routes(
    app: falcon.App[falcon.Request, falcon.Response],
    *,
    sessions: CscSessions,
    signer: TokenSigner,
    raw_signing: RawSigningService,
    hash_signing: HashSigningService,
    timestamper: FallbackTimeStamper | None,
    clients: ClientRegistry,
    ledger: SignatureLedger,
) -> None:
    """Both versions share one token and SAD store: a token from v1's login works on v2."""
    services = CscServices(
        auth=CscAuth(clients, sessions.tokens),
        credential=Credential(signer, raw_signing, multisign=MAX_BATCH),
        sads=sessions.sads,
        raw_signing=raw_signing,
        hash_signing=hash_signing,
        timestamps=TimestampService(timestamper, ledger),
    )
    for version in (V1, V2):
        for name, resource in served(version).items():
            app.add_route(f"{version.root}/{name}", resource(services, version))
