"""The box's API with the signature ledger replaced by a no-op, for `make bench` only.

It exists to measure what metering and the audit log cost per request (the issue's "on vs off"
figure); the firmware itself has no way to switch them off.
"""

from __future__ import annotations

import sys
from pathlib import Path

import waitress

from firmware.box import Box
from firmware.config import BoxConfig
from firmware.signing import HashSigningService


class _NoLedger:
    def admit(self, client_id: str, count: int) -> None:
        return None

    def record(self, records) -> None:
        return None


def main() -> None:
    state_dir, port = Path(sys.argv[1]), int(sys.argv[2])
    box = Box.open(BoxConfig.load(state_dir))
    box.hash_signing = HashSigningService(box.signer, box.timestamper, box.revocation, _NoLedger())
    waitress.serve(box.app(), host="127.0.0.1", port=port, threads=box.config.api.threads)


if __name__ == "__main__":
    main()
