"""One provisioning attempt from start to finish: copy → verify → apply → report.

`esignbox provision apply <path>`, `provision stick <device>` and the USB watcher all call
`provision_copied()`; the watcher only adds mounting and writing the report onto the stick.
Every refusal is logged, written to the audit log ("provision.refused", actor "provisioning")
and returned as a report.

Privileges: mounting needs root, the signing service runs as its own user. The bundle is copied
by the caller (root can read a stick mounted for root only), then, if the caller is root and
the state directory belongs to another user, a child process drops to that user (with its
groups, e.g. the token device group) to verify and apply, so every file provisioning writes is
the service's own.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import pwd
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TypedDict, Unpack

from firmware.config import BoxConfig, ConfigError
from firmware.durable import write_durable
from firmware.operations import reset
from firmware.store import audit, immediate
from hsm import Token

from . import keys as pkeys
from .apply import ACTOR, TokenAccess, apply_bundle, recover
from .bundle import DEFAULT_LIMITS, Limits, RawBundle, read_source
from .enrol import EnrolmentRequest, enrol_first_key, read_enrolment
from .errors import ProvisioningRefused
from .report import Report
from .state import ProvisioningState
from .verify import AlreadyApplied, VerifiedBundle, verify

log = logging.getLogger("esignbox.provisioning")
_KEEP_REPORTS = 50


@dataclass
class Outcome:
    report: Report
    files: dict[str, bytes] = field(default_factory=dict)  # to write next to the report (CSRs)


class ProvisionOptions(TypedDict, total=False):
    """What `provision_copied` passes on to `provision` besides the copy."""

    now: datetime | None
    token_factory: Callable[[], Token] | None
    enrolment: Callable[[], EnrolmentRequest | None] | None


def provision_copied(state_dir: Path, source: Path, *, limits: Limits = DEFAULT_LIMITS,
                     **kwargs: Unpack[ProvisionOptions]) -> Outcome:
    """Copy the bundle at ``source`` now, as the caller; verify and apply as the state directory's owner."""
    copied: RawBundle | ProvisioningRefused
    try:
        copied = read_source(Path(source), limits)
    except ProvisioningRefused as exc:
        copied = exc
    enrolment_copied: EnrolmentRequest | ProvisioningRefused | None
    try:
        enrolment_copied = read_enrolment(Path(source))
    except ProvisioningRefused as exc:
        enrolment_copied = exc

    def copy() -> RawBundle:
        if isinstance(copied, ProvisioningRefused):
            raise copied
        return copied

    def enrolment() -> EnrolmentRequest | None:
        if isinstance(enrolment_copied, ProvisioningRefused):
            raise enrolment_copied
        return enrolment_copied

    kwargs["enrolment"] = enrolment

    owner = os.stat(state_dir)
    if os.geteuid() != 0 or owner.st_uid == 0:
        return provision(state_dir, source, limits=limits, copy=copy, **kwargs)
    return _as_user(owner.st_uid, owner.st_gid, lambda: provision(state_dir, source, limits=limits, copy=copy, **kwargs))


def _as_user(uid: int, gid: int, work: Callable[[], Outcome]) -> Outcome:
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to the owner for good, do the work, send the outcome back
        status = 1
        try:
            os.close(read_fd)
            try:
                os.initgroups(pwd.getpwuid(uid).pw_name, gid)
            except KeyError:
                os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            outcome = work()
            payload = {"report": asdict(outcome.report),
                       "files": {name: base64.b64encode(data).decode() for name, data in outcome.files.items()}}
            with os.fdopen(write_fd, "wb") as pipe:
                pipe.write(json.dumps(payload).encode())
            status = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(status)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    if status != 0 or not data:
        log.error("the provisioning process (uid %d) failed with status %d", uid, status)
        return Outcome(Report(result="error", code="internal", message="the provisioning process failed; see the log"))
    payload = json.loads(data)
    return Outcome(Report(**payload["report"]),
                   {name: base64.b64decode(text) for name, text in payload["files"].items()})


def provision(
    state_dir: Path,
    source: Path,
    *,
    limits: Limits = DEFAULT_LIMITS,
    now: datetime | None = None,
    token_factory: Callable[[], Token] | None = None,
    copy: Callable[[], RawBundle] | None = None,
    enrolment: Callable[[], EnrolmentRequest | None] | None = None,
) -> Outcome:
    """Provision the box in ``state_dir`` from the stick (or bundle directory, or tar) at ``source``.

    A stick may carry an enrolment request (provisioning/enrol.py) besides, or instead of, a
    bundle: the key is enrolled first, so one stick can enrol the key and apply a bundle it signed.
    """
    state = ProvisioningState(Path(state_dir))
    tokens = TokenAccess(state.state_dir, token_factory)
    with state.locked():
        try:
            recover(state)
            return _attempt(state, tokens, source, limits, now, copy,
                            enrolment or (lambda: read_enrolment(Path(source))))
        finally:
            tokens.close()


def _enrol(state: ProvisioningState, request: EnrolmentRequest | None, report: Report) -> bool:
    """Enrol the stick's key if it carries one; whether it did (a refusal raises)."""
    if request is None:
        return False
    key_id, changed = enrol_first_key(state, request)
    report.trusted_key_id = key_id
    report.actions.append(
        f"provisioning key {key_id[:16]}… enrolled: trusted on first use, with the set-up code on the box's screen;"
        " from now on the box applies only bundles signed by it" if changed else
        f"provisioning key {key_id[:16]}… was already the trusted key")
    if changed:
        log.warning("provisioning: key %s enrolled from a stick (trust on first use, set-up code checked)", key_id)
    return changed


def _attempt(state: ProvisioningState, tokens: TokenAccess, source: Path, limits: Limits, now: datetime | None,
             copy: Callable[[], RawBundle] | None, enrolment: Callable[[], EnrolmentRequest | None]) -> Outcome:
    report = Report(result="error", message="")
    raw: RawBundle | None = None
    enrolled = False
    try:
        try:
            enrolled = _enrol(state, enrolment(), report)
            trusted = pkeys.trusted_key(state.state_dir)
            report.trusted_key_id = pkeys.key_id(trusted)
            # The copy: from here on only these bytes are looked at, whatever happens on the stick.
            raw = copy() if copy is not None else read_source(Path(source), limits)
            report.bundle_digest = raw.digest
            last = state.record()
            report.last_counter = last.counter if last else None
            verified = verify(raw, trusted, last, tokens.serial, now)
            report.counter, report.any_box = verified.manifest.counter, verified.manifest.any_box
            if verified.manifest.factory_reset:
                return _reset(state, tokens, verified, report, str(source))
            result = apply_bundle(state, verified, tokens, str(source))
        except AlreadyApplied as exc:
            report.result, report.code, report.message = "already-applied", exc.code, exc.reason
            log.info("provisioning: %s (%s)", exc.reason, source)
            return _finish(state, tokens, report, {})
        except ProvisioningRefused as exc:
            if exc.code == "no-bundle" and enrolled:
                report.result, report.message = "enrolled", "provisioning key enrolled (the stick carries no bundle)"
                return _finish(state, tokens, report, {})
            report.result = "no-bundle" if exc.code == "no-bundle" else "refused"
            report.code, report.message = exc.code, exc.reason
            if exc.code == "no-bundle":
                log.info("provisioning: no bundle at %s", source)
            else:
                log.warning("provisioning: bundle from %s REFUSED (%s): %s", source, exc.code, exc.reason)
                _audit_refusal(state, exc, raw, str(source))
            return _finish(state, tokens, report, {})
    except Exception as exc:  # a fault of the box, not of the bundle: say so and keep the old state
        log.exception("provisioning from %s failed", source)
        report.result, report.code, report.message = "error", "internal", f"{type(exc).__name__}: {exc}"
        _audit_refusal(state, ProvisioningRefused("internal", report.message), raw, str(source))
        return _finish(state, tokens, report, {})
    report.result, report.generation = "applied", result.generation
    report.message = f"bundle applied as configuration generation {result.generation}"
    report.actions += result.actions
    report.files = sorted(result.files)
    return _finish(state, tokens, report, result.files)


def _reset(state: ProvisioningState, tokens: TokenAccess, verified: VerifiedBundle, report: Report,
           source: str) -> Outcome:
    """A verified reset bundle: firmware.operations.reset wipes the box; the report says what went."""
    try:
        config: BoxConfig | None = BoxConfig.load(state.state_dir)
    except (ConfigError, FileNotFoundError):
        config = None
    token = tokens.token() if config is not None and config.token is not None else None
    serial = tokens.serial()  # before the wipe: the report names the box that was reset
    request = reset.ResetRequest(verified.key_id, verified.raw.digest, verified.manifest.counter, source)
    report.actions += reset.factory_reset(state.state_dir, state.database, config, token, request)
    tokens.forget()
    state.forget_database()
    log.warning("provisioning: box reset to factory state by key %s (bundle %s)", verified.key_id, verified.raw.digest)
    report.result, report.box_serial = "reset", serial
    report.message = "the box was reset: keys destroyed, state wiped, set-up starts over (see resets.log)"
    return _finish(state, tokens, report, {})


def _audit_refusal(state: ProvisioningState, exc: ProvisioningRefused, raw: RawBundle | None, source: str) -> None:
    details = {"code": exc.code, "reason": exc.reason, "source": source,
               "bundle": raw.digest if raw is not None else None}
    try:
        conn = state.connect()
        with immediate(conn):
            audit.append(conn, [audit.AuditEntry(ACTOR, "provision.refused", None, details)])
    except Exception:  # the refusal stands even if it cannot be recorded
        log.exception("could not write the provisioning refusal to the audit log")


def _finish(state: ProvisioningState, tokens: TokenAccess, report: Report, files: dict[str, bytes]) -> Outcome:
    try:
        report.box_serial = tokens.serial()
    except Exception as exc:  # the report is still worth writing
        report.box_serial = f"unknown ({exc})"
    try:
        report.box_name = BoxConfig.load(state.state_dir).box.name
    except (ConfigError, OSError):  # the report is still worth writing without it
        pass
    if report.last_counter is None or report.result == "applied":
        record = state.record()
        report.last_counter = record.counter if record else None
    try:
        state.reports_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        stamp = report.time.replace(":", "").replace("+0000", "Z")
        write_durable(state.reports_dir / f"{stamp}-{report.result}.json", report.to_json(), mode=0o600)
        for old in sorted(state.reports_dir.glob("*.json"))[:-_KEEP_REPORTS]:
            old.unlink(missing_ok=True)
    except OSError:
        log.exception("could not keep a copy of the provisioning report")
    return Outcome(report, files)
