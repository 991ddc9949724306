"""What a PKCS#11 module offers: its slots and the tokens in them, asked in a child process.

The box's set-up (firmware/operations/setup.py) shows the administrator which token it found
before anything is written. It asks in a child process (`python -m hsm.discovery MODULE`)
because loading a module initialises it for the life of the process: SoftHSM2 reads its
configuration once, and a YubiHSM2 holds a device session. The process that later signs must
meet the module for the first time with the configuration the set-up chose.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass, field

import pkcs11
from pkcs11 import TokenFlag

__all__ = ["FoundToken", "ModuleScan", "scan"]

SCAN_TIMEOUT_S = 20.0  # a YubiHSM2 answers in well under a second; a hung module must not hang the console


@dataclass(frozen=True)
class FoundToken:
    slot: int
    label: str  # "" for a slot whose token is not initialised (a free slot)
    serial: str
    model: str
    initialized: bool


@dataclass(frozen=True)
class ModuleScan:
    module: str
    tokens: list[FoundToken] = field(default_factory=list)
    error: str = ""  # why the module could not be asked; then tokens is empty

    @property
    def free_slots(self) -> int:
        return sum(1 for token in self.tokens if not token.initialized)

    @property
    def initialized(self) -> list[FoundToken]:
        return [token for token in self.tokens if token.initialized]


def _ask(module: str) -> list[FoundToken]:
    """In this process: every slot with a token present (called by the child only)."""
    lib = pkcs11.lib(module)
    found = []
    for slot in lib.get_slots(token_present=True):
        token = slot.get_token()
        found.append(FoundToken(slot.slot_id, token.label.strip(), token.serial.decode(errors="replace").strip(),
                                token.model.strip(), bool(token.flags & TokenFlag.TOKEN_INITIALIZED)))
    return found


def scan(module: str, environment: dict[str, str] | None = None) -> ModuleScan:
    """Ask ``module`` (a path) in a child process with ``environment`` added (SOFTHSM2_CONF, …)."""
    if not os.path.exists(module):
        return ModuleScan(module, error="module not installed")
    try:
        done = subprocess.run([sys.executable, "-m", "hsm.discovery", module], capture_output=True, text=True,
                              timeout=SCAN_TIMEOUT_S, env={**os.environ, **(environment or {})}, check=False)
    except subprocess.TimeoutExpired:
        return ModuleScan(module, error=f"the module did not answer within {SCAN_TIMEOUT_S:g} s")
    if done.returncode != 0:
        lines = (done.stderr.strip() or f"exit status {done.returncode}").splitlines()
        return ModuleScan(module, error=lines[-1][:300])
    return ModuleScan(module, [FoundToken(**item) for item in json.loads(done.stdout)])


if __name__ == "__main__":
    print(json.dumps([asdict(token) for token in _ask(sys.argv[1])]))
