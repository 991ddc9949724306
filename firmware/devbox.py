"""A development box in a state directory: SoftHSM2 token, key on it, dev PKI, configuration.

`make run` and the tests call `init_dev`; it is idempotent, so a second start reuses the token,
the key and the PKI. Nothing here is used on a field box, whose token, key and certificate come
from the provisioning path instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from asn1crypto import pem

from hsm import KeyAlgorithm, KeyInfo, KeyNotFound, Token, TokenConfig

from .config import CONFIG_NAME, BoxConfig, default_value, parse
from .devpki import BOX_MAIL_ADDRESS, MAIL_USERS, DevPki
from .durable import write_durable
from .operations import chain_path, configstore
from .operations.tokens import init_softhsm, softhsm_settings

DEV_TOKEN_LABEL = "esignbox-dev"
DEV_KEY_LABEL = "box-signing"
DEV_MAIL_KEY_LABEL = "box-mail"  # the dev box's S/MIME key: its own, as a field box's should be
DEV_SIGNER_CA_LABEL = "signer-ca"  # certifies each envelope party's one-time key ([contracts])
DEFAULT_PKI_PORT = 9180
DEFAULT_API_PORT = 8080
# The directory and mail of `make run`: the dev mailbox (relay), the inbound listener, LDAP.
DEV_MAILBOX_PORT, DEV_INBOUND_PORT, DEV_LDAP_PORT = 1025, 2525, 1389
DEV_DIRECTORY_ADDRESS = "certificates@esignbox.dev"
def _local_url(port: int) -> str:
    """Where a development box's links point: its own API listener."""
    return f"http://127.0.0.1:{port}"


def port_changes(raw: dict[str, Any], port: int) -> dict[str, dict[str, Any]]:
    """What moves a development box's API to ``port`` (box.toml's settings ``raw`` as written):
    [api] port, and the links ([contracts] and [directory] public_base_url) that pointed at the
    old port, so an invitation sent by a box serving on ``port`` is a link to it. Links an admin
    pointed elsewhere are kept."""
    old_port = raw.get("api", {}).get("port", default_value("api.port"))
    if old_port == port:
        return {}
    changes: dict[str, dict[str, Any]] = {"api": {"port": port}}
    for section in ("contracts", "directory"):
        if str(raw.get(section, {}).get("public_base_url", "")).rstrip("/") == _local_url(old_port):
            changes[section] = {"public_base_url": _local_url(port)}
    return changes


def _write_config(state_dir: Path, pki_port: int, api_port: int | None, tsa_url: str, console: bool = False,
                  directory: bool = False) -> None:
    """A development box's box.toml, written once through the one box.toml writer: only what
    differs from the schema's defaults (firmware/config.py); later runs keep an admin's changes,
    but follow an ``api_port`` asked for (`port_changes`)."""
    path = state_dir / CONFIG_NAME
    contracts = {"enabled": True, "signer_ca_label": DEV_SIGNER_CA_LABEL,
                 "public_base_url": _local_url(api_port or DEFAULT_API_PORT), "organisation": "E-signature Box (dev)"}
    if path.exists():
        present = parse(path.read_text(), path)
        if console and "console" not in present:  # a dev box made before the console
            configstore.update(state_dir, {"console": {"enabled": True}}, actor="esignbox init-dev",
                               action="config.change", details={})
        if "webhooks" not in present:  # … or before webhook destinations were checked
            configstore.update(state_dir, {"webhooks": {"allow_loopback": True}}, actor="esignbox init-dev",
                               action="config.change", details={})
        if "contracts" not in present:  # … or before contract signing
            contracts["public_base_url"] = _local_url(BoxConfig.load(state_dir).api_port)
            configstore.update(state_dir, {"contracts": contracts}, actor="esignbox init-dev",
                               action="config.change", details={})
        moved = port_changes(parse(path.read_text(), path), api_port) if api_port is not None else {}
        if moved:
            configstore.update(state_dir, moved, actor="esignbox init-dev", action="config.change", details={})
        return
    api_port = api_port or DEFAULT_API_PORT
    settings = {
        "api": {"port": api_port},
        "token": softhsm_settings(DEV_TOKEN_LABEL),
        "signing": {"key_label": DEV_KEY_LABEL, "tsa_urls": [tsa_url]},
        "console": {"enabled": console},
        "contracts": contracts,
        "webhooks": {"allow_loopback": True},  # a business system tried out on the same machine
        "dev": {"pki_port": pki_port, **({"mailbox_port": DEV_MAILBOX_PORT} if directory else {})},
    }
    if directory:
        settings["directory"] = {"enabled": True, "trust_roots_file": "trust-roots.pem",
                                 "public_base_url": _local_url(api_port)}
        settings["mail"] = {"relay_host": "127.0.0.1", "relay_port": DEV_MAILBOX_PORT, "starttls": False,
                            "from_address": BOX_MAIL_ADDRESS, "key_label": DEV_MAIL_KEY_LABEL}
        settings["ldap"] = {"enabled": True, "port": DEV_LDAP_PORT, "ldaps_port": 0, "listen": ["127.0.0.1"]}
        settings["inbound"] = {"enabled": True, "host": "127.0.0.1", "port": DEV_INBOUND_PORT,
                               "address": DEV_DIRECTORY_ADDRESS}
    write_durable(path, configstore.render(settings, "esignbox init-dev").encode())


def _init_softhsm(state_dir: Path) -> TokenConfig:
    """The development token for this state directory; returns how to log in to it."""
    return init_softhsm(state_dir, DEV_TOKEN_LABEL)


def init_dev(
    state_dir: Path,
    pki_port: int | None = None,
    api_port: int | None = None,
    key_algorithm: KeyAlgorithm = KeyAlgorithm.RSA_2048,
    console: bool = False,
    directory: bool = False,
) -> BoxConfig:
    """Create (or reuse) everything a development box needs in ``state_dir``.

    An existing box keeps its PKI port unless another is asked for: the port is part of the
    URLs inside the issued certificates; an existing box moves to ``api_port`` when one is asked
    for (`port_changes`: `serve --dev --port X` sends links to port X).
    ``console=True`` (the CLI's choice) enables the admin
    console in box.toml; library callers such as the tests get it disabled, so that a test box
    does not listen on the LAN. ``directory=True`` (the CLI's choice too) enables the certificate
    directory with the dev PKI as its trust root, mail through the dev mailbox, LDAP and the
    inbound listener on loopback, on fixed ports (README); the dev PKI's people's certificates
    are written next to their keys as ``pki/mail-<name>.pem``.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    if pki_port is None:
        existing = state_dir / CONFIG_NAME
        pki_port = BoxConfig.load(state_dir).pki_port if existing.exists() else None
        pki_port = pki_port or DEFAULT_PKI_PORT
    token = Token(_init_softhsm(state_dir))
    try:
        key, mail_key = (_key_on(token, label, key_algorithm) for label in (DEV_KEY_LABEL, DEV_MAIL_KEY_LABEL))
        signer_ca = _key_on(token, DEV_SIGNER_CA_LABEL, KeyAlgorithm.EC_P256)
    finally:
        token.close()
    pki = DevPki(state_dir / "pki", f"http://127.0.0.1:{pki_port}")
    pki.ensure(key.public_key_info, mail_key.public_key_info, signer_ca.public_key_info)
    _write_config(state_dir, pki_port, api_port, pki.tsa_url(), console=console,
                  directory=directory)
    for name in MAIL_USERS:
        person = state_dir / "pki" / f"mail-{name}.pem"
        if not person.exists():
            write_durable(person, pem.armor("CERTIFICATE", pki.mail_user(name).cert))
    config = BoxConfig.load(state_dir)
    # Only what is missing: after a key rollover the chain file holds the new key's chain, and
    # the next `make run` must not put the dev key's chain back over it.
    if not config.chain_file.exists():
        write_durable(config.chain_file, b"".join(pem.armor("CERTIFICATE", der) for der in pki.box_chain()))
    if not config.trust_roots_file.exists():
        write_durable(config.trust_roots_file, pem.armor("CERTIFICATE", pki.root_cert()))
    for label, chain in ((DEV_MAIL_KEY_LABEL, pki.mail_chain()), (DEV_SIGNER_CA_LABEL, pki.signer_ca_chain())):
        chain_file = chain_path(state_dir, label)  # where the key life cycle keeps a key's chain
        if not chain_file.exists():
            chain_file.parent.mkdir(parents=True, exist_ok=True)
            write_durable(chain_file, b"".join(pem.armor("CERTIFICATE", der) for der in chain))
    return config


def _key_on(token: Token, label: str, algorithm: KeyAlgorithm) -> KeyInfo:
    try:
        return token.key(label)
    except KeyNotFound:
        return token.generate_key(label, algorithm)
