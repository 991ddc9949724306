"""Enrolling the first provisioning key from a stick: trust on first use, bounded by being in the room.

A box that trusts no provisioning key yet accepts the first stick carrying, at its root::

    esignbox-enrol/
        provisioning.pub    the administrator's public key (PEM, from `provision keygen`)
        code.txt            the one-time set-up code the box's screen shows

The code is what makes it more than "whoever plugs in first": it is on the box's screen only, so
the stick's author saw the box. It is checked by the console's own attempt-limited check
(firmware.operations.accounts `Accounts.check_setup_code`, peer ``usb-stick``): a wrong code counts
towards the same lockout as a wrong code typed into the console, and is audited. The key is
trusted in the transaction that accepts the code (firmware.operations.trust), then written to
trusted.pub. The code is not consumed: it still creates the console's administrator.

Refused: a box that trusts a key already (a different one: only signed bundles from then on; the
same one again is reported as already enrolled), and a box with an administrator, which shows
no code any more and so cannot tell a stick in the room from any other: such a box has its key
built into the image, or gets it back with a factory reset signed by the key it trusts.

`esignbox provision make-enrolment` writes the directory on the administrator's PC.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from firmware.operations import accounts, trust

from . import keys as pkeys
from .errors import ProvisioningRefused
from .fsutil import open_dir_nofollow, read_regular_nofollow
from .state import ProvisioningState

__all__ = ["CODE", "ENROL_DIR", "PEER", "PUBLIC_KEY", "EnrolmentRequest", "enrol_first_key", "read_enrolment",
           "write_enrolment"]

ENROL_DIR = "esignbox-enrol"
PUBLIC_KEY = "provisioning.pub"
CODE = "code.txt"
PEER = "usb-stick"  # the lockout key of codes coming from sticks (the console's are per address)
_KEY_BYTES, _CODE_BYTES = 4096, 256


@dataclass(frozen=True)
class EnrolmentRequest:
    """Copied off the stick; nothing in it is trusted until the code checks out."""

    public_pem: bytes
    code: str


def _read(dir_fd: int, name: str, limit: int) -> bytes:
    try:
        data = read_regular_nofollow(name, dir_fd, limit)
    except FileNotFoundError as exc:
        raise ProvisioningRefused("malformed", f"{ENROL_DIR}/ has no {name}") from exc
    except (OSError, ValueError) as exc:
        raise ProvisioningRefused("unsafe-path", f"{ENROL_DIR}/{name} is a symlink or not a plain file") from exc
    if data is None:
        raise ProvisioningRefused("oversized", f"{ENROL_DIR}/{name} is larger than {limit} bytes")
    return data


def read_enrolment(source: Path) -> EnrolmentRequest | None:
    """The enrolment request at the root of the stick ``source``, or None if it carries none."""
    try:
        if not stat.S_ISDIR(os.stat(source, follow_symlinks=False).st_mode):
            return None
    except FileNotFoundError:
        return None
    root = open_dir_nofollow(str(source))
    try:
        try:
            sub = open_dir_nofollow(ENROL_DIR, root)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise ProvisioningRefused("unsafe-path", f"{ENROL_DIR} is a symlink or not a directory") from exc
            raise
        try:
            key, code = _read(sub, PUBLIC_KEY, _KEY_BYTES), _read(sub, CODE, _CODE_BYTES)
        finally:
            os.close(sub)
    finally:
        os.close(root)
    try:
        return EnrolmentRequest(key, code.decode("utf-8").strip())
    except UnicodeDecodeError as exc:
        raise ProvisioningRefused("malformed", f"{ENROL_DIR}/{CODE} is not text") from exc


def enrol_first_key(state: ProvisioningState, request: EnrolmentRequest) -> tuple[str, bool]:
    """Trust the request's key if this box trusts none yet and the code is the screen's. (key id, changed)."""
    try:
        key = pkeys.load_public(request.public_pem)
    except ValueError as exc:
        raise ProvisioningRefused("invalid-content", f"{ENROL_DIR}/{PUBLIC_KEY}: {exc}") from exc
    wanted = pkeys.key_id(key)
    if pkeys.trusted_key_path(state.state_dir).exists():
        current = pkeys.key_id(pkeys.trusted_key(state.state_dir))
        if current == wanted:
            return wanted, False
        raise ProvisioningRefused(
            "already-enrolled", f"this box already trusts provisioning key {current[:16]}…; a stick enrols only the"
            " first key, and from then on the box takes only bundles signed by that key")
    db = state.database
    if accounts.admins(db):
        raise ProvisioningRefused(
            "no-setup-code", "this box has an administrator, so its screen shows no one-time code and a stick cannot"
            " prove it was made in front of the box; build the key into the image, or have an operator run"
            " `esignbox provision enroll`")
    attempt, _ = accounts.Accounts(db).check_setup_code(
        request.code, PEER, on_success=lambda conn: pkeys.record_trust(
            conn, key, "stick", "provisioning", {"peer": PEER, "trust": "first use, with the screen's set-up code"}))
    if not attempt.ok:
        raise ProvisioningRefused("wrong-code", attempt.message)
    trust.write_files(state.state_dir, db)
    return wanted, True


def write_enrolment(out: Path, public_pem: bytes, code: str) -> Path:
    """(Admin PC) the enrolment directory for a stick's root; returns it."""
    pkeys.load_public(public_pem)  # refuse a file that is no provisioning key here, not at the box
    target = out / ENROL_DIR
    target.mkdir(parents=True, exist_ok=True)
    (target / PUBLIC_KEY).write_bytes(public_pem)
    (target / CODE).write_text(code.strip() + "\n")
    return target
