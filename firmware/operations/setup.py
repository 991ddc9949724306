"""A box's set-up: the one place that says how far it got, and the steps that take it further.

A box is **set up** (`is_set_up`) when box.toml names a token and its ``[signing] chain_file``
exists: then `esignbox serve` can assemble the signing service (firmware/box.py checks the chain
against the key when it does). Until then `serve` runs only the admin console, in set-up mode,
and waits for this to become true; a provisioning stick that makes it true works as well.

The console's set-up walks the steps below (`Step`), and `SetUp.progress` decides which one the
box is at by looking at what exists, never at a record of clicks: an administrator who stops
halfway, a restart, or a stick that did part of the work all resume at the first step not done.

    ADMIN     no console administrator yet (firmware/operations/accounts.py: code, then password)
    TOKEN     box.toml has no [token], or the token does not answer (firmware/operations/tokens.py)
    KEY       the token has no key [signing] key_label
    CHAIN     no chain for it in chains/<label>.pem (checked against the key, its links and its root)
    SERVICES  no TSA in [signing] tsa_urls (the default level B-T needs one)
    CLIENT    no API client
    START     all there: activating the key (writing [signing] chain_file) makes the box set up
    READY     set up

Every step writes what the same change made elsewhere writes, through the same functions: box.toml
through firmware/operations/configstore.py (as a provisioning stick's bundle does), keys, CSRs and
chains through firmware/operations/keys.py (as `esignbox keygen/csr/import-chain` and the
Keys page do), clients through the client registry; each with its audit entry.
"""

from __future__ import annotations

import enum
import threading
from dataclasses import dataclass
from pathlib import Path

from asn1crypto import x509

from hsm import KeyNotFound, Token, TokenConfig, TokenError

from ..certificates import check_issuers, load_certificates
from ..config import CONFIG_NAME, BoxConfig, ConfigError
from ..durable import write_durable
from ..errors import InvalidRequest
from ..store import audit
from ..store.clients import Client, ClientRegistry
from ..store.db import Database
from . import configstore
from .accounts import admins
from .keys import activation, build_csr, chain_details, chain_path, chain_pem, generate, install_chain, parse_subject
from .tokens import BOX_TOKEN_LABEL, ModuleKind, find_tokens, init_softhsm, softhsm_settings, token_settings

__all__ = ["FIRST_SETTINGS", "Progress", "SetUp", "Step", "current_config", "is_set_up", "own_token", "token_changes"]


class Step(enum.Enum):
    ADMIN = "admin"
    TOKEN = "token"
    KEY = "key"
    CHAIN = "chain"
    SERVICES = "services"
    CLIENT = "client"
    START = "start"
    READY = "ready"


def current_config(state_dir: Path) -> BoxConfig:
    """box.toml as the box reads it; the schema's defaults while there is none (a box never set up)."""
    if (state_dir / CONFIG_NAME).exists():
        return BoxConfig.load(state_dir)
    return BoxConfig.from_text(state_dir, "")


def is_set_up(state_dir: Path) -> bool:
    """Whether `esignbox serve` can start the signing service: the one rule, cheap (no token opened).

    A box.toml that does not load is "set up" here, so that `serve` stops with its error instead
    of offering a set-up over a configuration someone wrote.
    """
    try:
        config = current_config(state_dir)
    except ConfigError:
        return True
    return config.token is not None and config.chain_file.exists()


@dataclass(frozen=True)
class Progress:
    step: Step
    detail: str = ""  # why the box is at this step, when there is more to say (the token's error)


class SetUp:
    """The set-up of the box in ``state_dir``, for the console while `serve` waits in set-up mode.

    It keeps the token open once one is configured (opening one logs in: not on every page).
    """

    def __init__(self, state_dir: Path, db: Database) -> None:
        self.state_dir = Path(state_dir)
        self.db = db
        self.clients = ClientRegistry(db)
        self._lock = threading.Lock()
        self._token: tuple[TokenConfig, Token] | None = None

    @property
    def config(self) -> BoxConfig:
        return current_config(self.state_dir)

    def token(self) -> Token:
        """The configured token, opened once; TokenError if it does not answer, ConfigError if none."""
        wanted = self.config.token_config()
        with self._lock:
            if self._token is not None and self._token[0] != wanted:
                self._token[1].close()
                self._token = None
            if self._token is None:
                self._token = (wanted, Token(wanted))
            return self._token[1]

    def close(self) -> None:
        """Let the token go: the signing service opens its own once the box is set up."""
        with self._lock:
            if self._token is not None:
                self._token[1].close()
                self._token = None

    def progress(self) -> Progress:
        if is_set_up(self.state_dir):
            return Progress(Step.READY)
        if not admins(self.db):
            return Progress(Step.ADMIN)
        config = self.config
        if config.token is None:
            return Progress(Step.TOKEN)
        try:
            self.token().key(config.key_label)
        except KeyNotFound:
            return Progress(Step.KEY)
        except TokenError as exc:
            return Progress(Step.TOKEN, f"the token {config.token.label!r} does not answer: {exc}")
        if not chain_path(self.state_dir, config.key_label).exists():
            return Progress(Step.CHAIN)
        if not config.tsa_urls:
            return Progress(Step.SERVICES)
        if not self.clients.list():
            return Progress(Step.CLIENT)
        return Progress(Step.START)

    # -- TOKEN --------------------------------------------------------------------------------
    def tokens_found(self) -> list[ModuleKind]:
        return find_tokens(self.state_dir)

    def use_softhsm(self, actor: str) -> configstore.ConfigChange:
        """Make the box's own SoftHSM2 token (software) and name it in box.toml."""
        changes, details = own_token(self.state_dir)
        return configstore.update(self.state_dir, changes, actor=actor, action="setup.token", details=details,
                                  db=self.db)

    def use_token(self, kind: ModuleKind, label: str, pin: str, actor: str) -> configstore.ConfigChange:
        """Name a found token (a YubiHSM2) in box.toml, once a login with ``pin`` worked."""
        changes, details = token_changes(token_settings(self.state_dir, kind, label, pin), kind.name)
        return configstore.update(self.state_dir, changes, actor=actor, action="setup.token", details=details,
                                  db=self.db)

    # -- KEY, CSR, CHAIN ----------------------------------------------------------------------
    def generate_key(self, algorithm: str, actor: str) -> str:
        label = self.config.key_label
        _, details = generate(self.token(), label, algorithm)
        self._record(actor, "key.generate", details)
        return label

    def csr(self, subject: str, actor: str) -> bytes:
        label, name = self.config.key_label, parse_subject(subject)
        request = build_csr(self.token(), label, name)
        self._record(actor, "key.csr", {"label": label, "subject": name.human_friendly})
        return request

    def chain(self) -> list[x509.Certificate]:
        """The chain kept for the key (after the CHAIN step), leaf first."""
        return load_certificates(chain_path(self.state_dir, self.config.key_label))

    def install_chain(self, data: bytes, actor: str) -> list[x509.Certificate]:
        """Check the CA's chain against the key, link by link and against a root; keep it.

        The trust roots are the box's if it has them (a stick may have brought them), else the
        chain's own self-signed top, which then becomes the box's trust root: the administrator
        vouches for it by uploading it here, as they would by putting it on a stick.
        """
        config, token = self.config, self.token()
        roots_file = config.trust_roots_file
        chain = install_chain(self.state_dir, token, config.key_label, data, check=lambda chain: check_issuers(
            chain, load_certificates(roots_file) if roots_file.exists() else _own_root(chain)))
        if not roots_file.exists():
            write_durable(roots_file, chain_pem(chain[-1:]))
        self._record(actor, "chain.import", chain_details(config.key_label, chain))
        return chain

    # -- SERVICES, CLIENT, START --------------------------------------------------------------
    def set_services(self, services: dict[str, list[str]], actor: str) -> configstore.ConfigChange:
        if not services.get("tsa_urls"):
            raise InvalidRequest("at least one TSA URL is needed: signatures at the default level B-T carry a timestamp")
        return configstore.update(self.state_dir, configstore.service_changes(services), actor=actor,
                                  action="setup.services", details={}, db=self.db)

    def add_client(self, name: str, actor: str) -> tuple[Client, str]:
        return self.clients.add(name, actor=actor, calls=None)

    def start(self, actor: str) -> configstore.ConfigChange:
        """Make the key the signing key: box.toml's [signing] chain_file now exists, the box is set up.

        The token is let go first: `serve` opens its own as soon as it sees the box set up, and
        closing ours after that would log the process's sessions out (login state is the token's).
        """
        config = self.config
        change = activation(config, self.token(), config.key_label)
        self.close()
        return configstore.update(self.state_dir, change.changes, actor=actor, action="key.activate",
                                  details={**change.details, "setup": True}, db=self.db)

    def _record(self, actor: str, action: str, details: dict[str, object]) -> None:
        audit.record(self.db.connect(), audit.AuditEntry(actor, action, None, details))


# What every box set up here has besides its token, written with the token's change (a box set up
# from the browser, or from a stick on a box without box.toml, keeps it): the console switched on,
# and the loopback trusted as a proxy — such a box is the image, whose nginx on the same machine is
# the API's network face, so X-Forwarded-For from 127.0.0.1 names the client in envelope trails and
# refusals (firmware/api/client_ip.py); a header from any other peer is still ignored.
FIRST_SETTINGS: dict[str, dict[str, object]] = {"console": {"enabled": True},
                                                 "api": {"trusted_proxies": ["127.0.0.1", "::1"]}}


def token_changes(settings: dict[str, object], kind: str) -> tuple[dict[str, dict[str, object]], dict[str, object]]:
    """The set-up's TOKEN step as a change to box.toml, and its audit details."""
    return {"token": settings, **FIRST_SETTINGS}, {"kind": kind, "label": settings["label"]}


def own_token(state_dir: Path) -> tuple[dict[str, dict[str, object]], dict[str, object]]:
    """The box's own SoftHSM2 token, made now if it is not there yet, as the TOKEN step's change."""
    init_softhsm(state_dir, BOX_TOKEN_LABEL)
    return token_changes(softhsm_settings(BOX_TOKEN_LABEL), "SoftHSM2")


def _own_root(chain: list[x509.Certificate]) -> list[x509.Certificate]:
    top = chain[-1]
    if top.self_signed == "no":
        raise InvalidRequest("the file must include the CA's root certificate (the box has no trust roots yet)")
    return [top]

