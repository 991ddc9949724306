"""The one exception of the provisioning path: a bundle (or a stick) the box will not apply."""

from __future__ import annotations


class ProvisioningRefused(Exception):
    """A bundle was refused. ``code`` is a stable word for reports and tests, ``reason`` is for people.

    Codes: no-bundle, unsafe-path, oversized, malformed, unsigned, no-trusted-key,
    untrusted-signer, bad-signature, expired, replay, wrong-box, invalid-content,
    chain-mismatch, token-error, busy.
    """

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason
