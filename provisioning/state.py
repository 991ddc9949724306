"""The box's provisioning state: the configuration generations (firmware/operations/generations.py) plus
what only provisioning keeps beside them.

Under ``<state>/provisioning/``, besides the generations, ``current``/``previous`` and the journal::

    trusted.pub                 the one provisioning public key this box accepts
    csr/<label>.csr             CSRs made for key requests
    reports/                    copies of the reports written to sticks

A bundle's generation also holds admin.json and bundle/ (the verified bundle's bytes). The
commit of a bundle records its counter (the replay guard) with the generation, the API-client
changes and the audit entry in one SQLite transaction (apply.py); console and command-line
changes make generations through the same store (firmware/operations/configstore.py), so a rollback always
goes back one change and says which.
"""

from __future__ import annotations

from pathlib import Path

from firmware.operations import HOOK_ENV, Generations, Record, test_hook

__all__ = ["HOOK_ENV", "ProvisioningState", "Record", "box_id_path", "test_hook"]


class ProvisioningState(Generations):
    def __init__(self, state_dir: Path) -> None:
        super().__init__(state_dir)
        self.csr_dir = self.root / "csr"
        self.reports_dir = self.root / "reports"


def box_id_path(state_dir: Path) -> Path:
    return Path(state_dir) / "box-id"
