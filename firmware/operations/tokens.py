"""Which token the box signs with: finding one, making a SoftHSM2 one, and the [token] settings for it.

Two kinds, as the image carries both modules:

- a **YubiHSM2** (or another PKCS#11 token) plugged in: its module is asked which tokens it
  has (in a child process, hsm/discovery.py); the administrator gives the PIN, which the box
  keeps in ``secrets/token.pin`` (0600) and checks by logging in before anything is written;
- a **SoftHSM2** token in the state directory (software, for trying the box out): made here,
  with random PINs in ``secrets/``, as a development box makes its own (firmware/devbox.py).

The result is always the ``[token]`` table of box.toml, written by the caller through the one
box.toml writer (firmware/operations/configstore.py).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hsm import Token, TokenConfig, TokenError
from hsm.discovery import ModuleScan, scan

from ..durable import write_durable, write_new
from ..errors import InvalidRequest

__all__ = ["BOX_TOKEN_LABEL", "SOFTHSM_MODULES", "ModuleKind", "find_tokens", "init_softhsm", "softhsm_module",
           "softhsm_settings", "token_settings"]

SOFTHSM_MODULES = ("/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
                   "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so")
# The YubiHSM2 module (Yubico's yubihsm-pkcs11 package) and the image's configuration for it
# (image/rootfs/etc/esignbox/yubihsm_pkcs11.conf: direct USB).
YUBIHSM_MODULES = ("/usr/lib/x86_64-linux-gnu/pkcs11/yubihsm_pkcs11.so",
                   "/usr/lib/aarch64-linux-gnu/pkcs11/yubihsm_pkcs11.so")
YUBIHSM_CONF = "/etc/esignbox/yubihsm_pkcs11.conf"
BOX_TOKEN_LABEL = "esignbox"  # the SoftHSM2 token a box makes for itself
SOFTHSM_CONF = "softhsm2.conf"  # in the state directory: SoftHSM2 keeps that box's tokens under tokens/
TOKEN_PIN = "secrets/token.pin"  # a PIN the administrator gave (YubiHSM2: auth key id + password)


def softhsm_module() -> str:
    for path in SOFTHSM_MODULES:
        if Path(path).exists():
            return path
    raise FileNotFoundError("SoftHSM2 is not installed (Debian package softhsm2)")


def _secret_file(path: Path, length: int) -> str:
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_new(path, secrets.token_hex(length).encode(), mode=0o600)
    return path.read_text().strip()


def init_softhsm(state_dir: Path, label: str) -> TokenConfig:
    """A SoftHSM2 token labelled ``label`` for this state directory (made once); how to log in to it."""
    tokens = state_dir / "tokens"
    tokens.mkdir(mode=0o700, parents=True, exist_ok=True)
    conf = state_dir / SOFTHSM_CONF
    write_durable(conf, f"directories.tokendir = {tokens.resolve()}\nobjectstore.backend = file\nlog.level = ERROR\n".encode())
    os.environ["SOFTHSM2_CONF"] = str(conf.resolve())
    user_pin = _secret_file(state_dir / "secrets" / "user.pin", 8)
    so_pin = _secret_file(state_dir / "secrets" / "so.pin", 8)
    util = shutil.which("softhsm2-util")
    if util is None:
        raise FileNotFoundError("softhsm2-util not found (Debian package softhsm2)")
    listing = subprocess.run([util, "--show-slots"], capture_output=True, text=True, check=True)
    if not re.search(rf"^\s*Label:\s+{re.escape(label)}\s*$", listing.stdout, re.MULTILINE):
        subprocess.run([util, "--init-token", "--free", "--label", label, "--pin", user_pin, "--so-pin", so_pin],
                       check=True, capture_output=True)
    return TokenConfig(softhsm_module(), label, user_pin, sessions=1)


def softhsm_settings(label: str) -> dict[str, Any]:
    """box.toml's [token] for a SoftHSM2 token `init_softhsm` made in the state directory."""
    return {"module": softhsm_module(), "label": label, "pin_file": "secrets/user.pin",
            "environment_files": {"SOFTHSM2_CONF": SOFTHSM_CONF}}


@dataclass(frozen=True)
class ModuleKind:
    """A PKCS#11 module the box knows how to configure, and what it has now."""

    name: str  # "YubiHSM2", "SoftHSM2"
    scan: ModuleScan
    environment: dict[str, str]  # what the module reads (YUBIHSM_PKCS11_CONF, SOFTHSM2_CONF)


def find_tokens(state_dir: Path) -> list[ModuleKind]:
    """Every installed module the box knows, each with the tokens it has now (asked in a child process).

    SoftHSM2 is asked with the state directory's configuration only: tokens elsewhere on the
    system are none of the box's business. Before the box made its SoftHSM2 configuration, the
    module has nothing to show, and is not asked.
    """
    found = []
    for module in YUBIHSM_MODULES:
        if Path(module).exists():
            environment = {"YUBIHSM_PKCS11_CONF": YUBIHSM_CONF}
            found.append(ModuleKind("YubiHSM2", scan(module, environment), environment))
    for module in SOFTHSM_MODULES:
        if Path(module).exists():
            conf = state_dir / SOFTHSM_CONF
            environment = {"SOFTHSM2_CONF": str(conf.resolve())}
            found.append(ModuleKind("SoftHSM2", scan(module, environment) if conf.exists() else ModuleScan(module),
                                    environment))
            break
    return found


def token_settings(state_dir: Path, kind: ModuleKind, label: str, pin: str) -> dict[str, Any]:
    """box.toml's [token] for token ``label`` of a found module, once a login with ``pin`` worked.

    The PIN is kept in secrets/token.pin (0600), never in box.toml. Raises InvalidRequest when
    the token is not there or refuses the PIN; nothing is written then.
    """
    if label not in {token.label for token in kind.scan.initialized}:
        raise InvalidRequest(f"{kind.name} has no token labelled {label!r}")
    if not pin:
        raise InvalidRequest("the token's PIN is needed")
    os.environ.update(kind.environment)
    try:
        Token(TokenConfig(kind.scan.module, label, pin, sessions=1)).close()
    except TokenError as exc:
        raise InvalidRequest(f"the token refused the login: {exc}") from exc
    path = state_dir / TOKEN_PIN
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_durable(path, pin.encode(), mode=0o600)
    return {"module": kind.scan.module, "label": label, "pin_file": TOKEN_PIN, "sessions": 1,
            "environment_files": kind.environment}
