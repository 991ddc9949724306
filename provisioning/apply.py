"""Applying a verified bundle: all of it or none of it, with the previous configuration kept.

1. Token work that cannot be undone but is harmless to repeat: generate the requested key (a key
   already carrying that label is reused), write its CSR; check an issued chain against its key
   (firmware.certificates.check_chain) and against the trust roots, signatures included.
2. Stage a new generation directory: box.toml rendered from the configuration in force plus the
   manifest, the files carried forward or replaced, admin.json, the verified bundle's bytes;
   every file fsynced, then the directory renamed into place. A half-written stage is a
   ``.staging-*`` directory that recovery deletes.
3. Journal (pending.json), then one SQLite transaction: API clients, the counter and generation,
   the audit entries. This commit is the point of no return.
4. Switch the ``current``/``previous`` symlinks (and turn box.toml into a link to the current
   generation the first time), remove the journal, prune old generations.

A one-time set-up code for the admin console is handed to firmware.operations.accounts right
after the commit (it keeps its own table); the journal makes recovery repeat that step if a crash
came in between.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from asn1crypto import pem, x509

from firmware.certificates import check_chain, check_issuers, load_certificates
from firmware.config import BoxConfig, ConfigError, parse
from firmware.durable import write_durable, write_new
from firmware.errors import InvalidRequest
from firmware.operations import Generations, RolledBack, accounts, build_csr, configstore, generate, parse_subject
from firmware.store import DEFAULT_SCOPES, audit, immediate
from firmware.store import clients as client_store
from hsm import KeyNotFound, Token, TokenError

from .bundle import FILES, MANIFEST, SIGNATURE
from .errors import ProvisioningRefused
from .manifest import ClientSpec, Manifest
from .state import ProvisioningState, Record, box_id_path, test_hook
from .verify import VerifiedBundle

log = logging.getLogger("esignbox.provisioning")

ACTOR = "provisioning"
CURRENT = "provisioning/current"
TRUST_ROOTS = "trust-roots.pem"
CHAIN = "box-chain.pem"


@dataclass
class ApplyResult:
    generation: int
    previous: int | None
    actions: list[str] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)  # for the stick: CSRs


class TokenAccess:
    """The token, opened only if a bundle needs it (key request, chain, binding to the token serial)."""

    def __init__(self, state_dir: Path, factory: Callable[[], Token] | None = None) -> None:
        self._state_dir = Path(state_dir)
        self._factory = factory or (lambda: Token(BoxConfig.load(self._state_dir).token_config()))
        self._token: Token | None = None
        self._serial: str | None = None

    def token(self) -> Token:
        if self._token is None:
            try:
                self._token = self._factory()
            except (ConfigError, TokenError, FileNotFoundError) as exc:
                raise ProvisioningRefused("token-error", f"cannot open the token: {exc}") from exc
        return self._token

    def serial(self) -> str:
        """This box's serial: the contents of <state>/box-id if present, else the token's serial."""
        if self._serial is None:
            path = box_id_path(self._state_dir)
            if path.exists():
                self._serial = path.read_text().strip()
            else:
                self._serial = str(self.token().info()["serial"]).strip()
        return self._serial

    def close(self) -> None:
        if self._token is not None:
            self._token.close()
            self._token = None


# -- the admin console's set-up code ------------------------------------------------------------------

def _check_setup_code(state: ProvisioningState, manifest: Manifest) -> None:
    if manifest.admin_setup_code is None:
        return
    if accounts.admins(state.database) and not manifest.admin_reset:
        raise ProvisioningRefused(
            "invalid-content", "an administrator exists already; a set-up code is only for the first set-up"
            " (to replace a forgotten administrator, the bundle says admin.reset_admin: true)"
        )


def post_commit(state: Generations, generation: int) -> list[str]:
    """What follows the commit outside box.db's provisioning transaction; safe to repeat."""
    manifest_path = state.generation_dir(generation) / "bundle" / MANIFEST
    if not manifest_path.exists():
        return []
    admin = json.loads(manifest_path.read_bytes()).get("admin") or {}
    code = admin.get("setup_code")
    if not code:
        return []
    try:
        accounts.set_setup_code(state.database, code, source="provisioning", reset_admin=bool(admin.get("reset_admin")))
    except Exception as exc:  # AccountError (an administrator appeared meanwhile): the bundle stays applied
        log.error("provisioning: the admin console set-up code was not set: %s", exc)
        return [f"admin console set-up code NOT set: {exc}"]
    return ["admin console set-up code set: enter it in the console to create the administrator"]


def recover(state: ProvisioningState) -> str | None:
    return state.recover(post_commit=post_commit)


# -- token work ---------------------------------------------------------------------------------------

def _key_request(tokens: TokenAccess, manifest: Manifest, state: ProvisioningState, result: ApplyResult) -> None:
    request = manifest.key_request
    assert request is not None
    token = tokens.token()
    try:
        try:
            existing = token.key(request.label)
            result.actions.append(f"key {request.label!r} already on the token ({existing.key_type}); CSR made for it")
        except KeyNotFound:
            # The manifest checked label and algorithm by the same rules. The provision.apply audit entry
            # covers the key request, so generate's key.generate details are not recorded separately.
            generate(token, request.label, request.algorithm)
            result.actions.append(f"generated key {request.label!r} ({request.algorithm}) on the token")
        csr = build_csr(token, request.label, parse_subject(request.subject))
    except TokenError as exc:
        raise ProvisioningRefused("token-error", f"key request {request.label!r} failed: {exc}") from exc
    state.csr_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_durable(state.csr_dir / f"{request.label}.csr", csr)
    result.files[f"{request.label}.csr"] = csr
    result.actions.append(f"wrote {request.label}.csr for subject {request.subject!r}: send it to the CA")


def _current_trust_roots(state: ProvisioningState) -> list[x509.Certificate]:
    try:
        path = BoxConfig.load(state.state_dir).trust_roots_file
    except ConfigError:
        return []
    if not path.exists():
        return []
    return load_certificates(path)


def _check_chain(tokens: TokenAccess, verified: VerifiedBundle, state: ProvisioningState, result: ApplyResult) -> None:
    manifest = verified.manifest
    spec = manifest.signing_chain
    assert spec is not None
    chain = verified.certificates[spec.file]
    try:
        check_chain(tokens.token(), spec.key_label, chain)
    except KeyNotFound as exc:
        raise ProvisioningRefused("chain-mismatch", f"no key labelled {spec.key_label!r} on the token") from exc
    except InvalidRequest as exc:
        raise ProvisioningRefused("chain-mismatch", str(exc)) from exc
    except TokenError as exc:
        raise ProvisioningRefused("token-error", f"cannot read key {spec.key_label!r}: {exc}") from exc
    roots = verified.certificates[manifest.trust_roots] if manifest.trust_roots else _current_trust_roots(state)
    if not roots:
        raise ProvisioningRefused("chain-mismatch", "no trust roots to check the chain against; add trust_roots")
    try:
        check_issuers(chain, roots)
    except InvalidRequest as exc:
        raise ProvisioningRefused("chain-mismatch", str(exc)) from exc
    result.actions.append(
        f"certificate chain ({len(chain)} certificate(s)) checked against key {spec.key_label!r} and the trust roots"
    )


# -- the new configuration ----------------------------------------------------------------------

def _render_config(base: dict[str, Any], verified: VerifiedBundle, generation: int, applied_at: str) -> str:
    m = verified.manifest
    raw = json.loads(json.dumps(base))  # a deep copy of plain TOML data
    if m.box_name is not None:
        raw.setdefault("box", {})["name"] = m.box_name
    if m.network is not None:
        net = m.network
        table = {"hostname": net.hostname, "mode": net.mode, "address": net.address, "gateway": net.gateway}
        raw["network"] = {k: v for k, v in table.items() if v is not None}
        if net.dns:
            raw["network"]["dns"] = list(net.dns)
        if net.ntp:
            raw["network"]["ntp"] = list(net.ntp)
        if net.api_host is not None:
            raw.setdefault("api", {})["host"] = net.api_host
        if net.api_port is not None:
            raw.setdefault("api", {})["port"] = net.api_port
    raw = configstore.merged(raw, configstore.service_changes({k: list(v) for k, v in m.services.items()}))
    signing = raw.setdefault("signing", {})
    if m.trust_roots is not None:
        signing["trust_roots_file"] = f"{CURRENT}/{TRUST_ROOTS}"
    if m.signing_chain is not None:
        signing["chain_file"] = f"{CURRENT}/{CHAIN}"
        signing["key_label"] = m.signing_chain.key_label
    raw["provisioned"] = {
        "generation": generation, "counter": m.counter, "bundle": verified.raw.digest,
        "key_id": verified.key_id, "applied_at": applied_at,
    }
    return configstore.render(raw, f"provisioning bundle counter {m.counter} (generation {generation};"
                                   " the next bundle replaces edits made here)")


def _stage_snapshot(state: ProvisioningState, number: int, base_text: str, carry_from: Path | None) -> None:
    """Keep a box.toml that is no generation (first provisioning, or replaced by hand) for rollback."""
    with state.staging(number) as staging:
        write_new(staging / "box.toml", base_text.encode())
        state.carry_forward(carry_from, staging, set())
        write_new(staging / "state.json", json.dumps({"generation": number, "adopted": True}).encode())


def _stage(state: ProvisioningState, number: int, base: dict[str, Any], carry_from: Path | None,
           verified: VerifiedBundle, applied_at: str, source: str) -> BoxConfig:
    """Stage generation ``number``; the configuration it makes, checked as the box will load it."""
    m, raw = verified.manifest, verified.raw
    with state.staging(number) as staging:
        text = _render_config(base, verified, number, applied_at)
        write_new(staging / "box.toml", text.encode())
        test_hook("staging", state.root)
        try:
            config = BoxConfig.load(staging)
        except ConfigError as exc:
            raise ProvisioningRefused("invalid-content", f"the resulting box.toml would not load: {exc}") from exc
        replaced = set()
        if m.trust_roots is not None:
            certs = verified.certificates[m.trust_roots]
            write_new(staging / TRUST_ROOTS, b"".join(pem.armor("CERTIFICATE", c.dump()) for c in certs))
            replaced.add(TRUST_ROOTS)
        if m.signing_chain is not None:
            certs = verified.certificates[m.signing_chain.file]
            write_new(staging / CHAIN, b"".join(pem.armor("CERTIFICATE", c.dump()) for c in certs))
            replaced.add(CHAIN)
        state.carry_forward(carry_from, staging, replaced)
        copy = staging / "bundle"  # root-only: it may hold a one-time set-up code
        (copy / FILES).mkdir(mode=0o700, parents=True)
        os.chmod(copy, 0o700)
        write_new(copy / MANIFEST, raw.manifest, mode=0o600)
        if raw.signature is not None:
            write_new(copy / SIGNATURE, raw.signature, mode=0o600)
        for name, data in raw.files.items():
            write_new(copy / FILES / name, data, mode=0o600)
        status = {"generation": number, "adopted": False, "counter": m.counter, "bundle": raw.digest,
                  "key_id": verified.key_id, "applied_at": applied_at, "sections": m.sections(), "source": source}
        write_new(staging / "state.json", json.dumps(status, indent=2).encode() + b"\n")
    return config


# -- API clients, inside the commit transaction -------------------------------------------------------

def _check_client_ids(conn: sqlite3.Connection, clients: tuple[ClientSpec, ...]) -> None:
    for spec in clients:
        row = conn.execute("SELECT name FROM clients WHERE id = ?", (spec.id,)).fetchone()
        if row is not None and row["name"] != spec.name:
            raise ProvisioningRefused("invalid-content", f"client id {spec.id} belongs to client {row['name']!r}")


def _apply_clients(conn: sqlite3.Connection, clients: tuple[ClientSpec, ...], free_calls: int) -> tuple[list[audit.AuditEntry], list[str]]:
    """Create or update clients by name (keys of existing clients are left alone)."""
    entries, actions = [], []
    for spec in clients:
        s = spec.settings
        row = conn.execute("SELECT * FROM clients WHERE name = ?", (spec.name,)).fetchone()
        if row is None:
            entries.append(client_store.insert_client(
                conn, spec.id, spec.name, bytes.fromhex(spec.key_sha256), ACTOR, tuple(s.get("scopes", DEFAULT_SCOPES)),
                s.get("calls", free_calls), s.get("rate_per_minute"), s.get("rate_per_day")))
            actions.append(f"API client {spec.name!r} created (id {spec.id}); its key is the one make-bundle printed")
            continue
        client_id, changed = row["id"], []
        if "scopes" in s and ",".join(s["scopes"]) != row["scopes"]:
            entries.append(client_store.update_scopes(conn, client_id, tuple(s["scopes"]), ACTOR))
            changed.append(f"scopes {entries[-1].details['scopes']}")
        limits = (s.get("calls", row["calls_purchased"]), s.get("rate_per_minute", row["rate_per_minute"]),
                  s.get("rate_per_day", row["rate_per_day"]))
        if limits != (row["calls_purchased"], row["rate_per_minute"], row["rate_per_day"]):
            entries.append(client_store.update_limits(conn, client_id, ACTOR, *limits))
            changed.append("limits " + ", ".join(f"{k}={v}" for k, v in entries[-1].details.items()))
        note = "" if client_id == spec.id else f"; it keeps id {client_id} and its key (the bundle's new key is unused)"
        actions.append(f"API client {spec.name!r} " + (f"updated: {'; '.join(changed)}" if changed else "unchanged") + note)
    return entries, actions


# -- the whole apply -------------------------------------------------------------------------------

def apply_bundle(state: ProvisioningState, verified: VerifiedBundle, tokens: TokenAccess, source: str = "") -> ApplyResult:
    """Apply a verified bundle (the caller holds `state.locked()` and ran `state.recover()`)."""
    m, raw = verified.manifest, verified.raw
    if not state.box_toml.exists():
        raise ProvisioningRefused("invalid-content", f"{state.box_toml} not found: the box image must provide one")
    base_text = state.box_toml.read_text()
    try:
        base = parse(base_text, state.box_toml)
    except ConfigError as exc:
        raise ProvisioningRefused("invalid-content", f"the box.toml in force does not parse: {exc}") from exc
    conn = state.connect()
    _check_client_ids(conn, m.clients)
    _check_setup_code(state, m)

    linked = state.config_is_linked()
    current = state.current_generation()
    result = ApplyResult(generation=0, previous=current if linked else None)
    if m.key_request is not None:
        _key_request(tokens, m, state, result)
    if m.signing_chain is not None:
        _check_chain(tokens, verified, state, result)

    applied_at = datetime.now(UTC).isoformat(timespec="seconds")
    number = state.next_generation()
    current_dir = state.generation_dir(current) if current is not None else None
    created: list[int] = []
    committed = False
    try:
        if not linked:
            # Keep the configuration in force (not made by a bundle) as the rollback target.
            _stage_snapshot(state, number, base_text, current_dir)
            created.append(number)
            result.previous, number = number, number + 1
            current_dir = state.generation_dir(result.previous)
        result.generation = number
        config = _stage(state, number, base, current_dir, verified, applied_at, source)
        created.append(number)
        state.write_pending(number, result.previous, created, post_commit=m.admin_setup_code is not None)
        test_hook("staged", state.root)

        with immediate(conn):
            last = state.record(conn)
            if last is not None and m.counter <= last.counter:
                raise ProvisioningRefused("replay", f"counter {m.counter} is not above {last.counter}")
            entries, client_actions = _apply_clients(conn, m.clients, config.free_calls)
            state.store_record(conn, Record(m.counter, number, raw.digest, verified.key_id, applied_at))
            result.actions.extend(client_actions)
            entries.append(audit.AuditEntry(ACTOR, "provision.apply", None, {
                "counter": m.counter, "bundle": raw.digest, "key_id": verified.key_id, "generation": number,
                "previous": result.previous, "sections": m.sections(), "source": source, "any_box": m.any_box,
            }))
            audit.append(conn, entries)
        committed = True
    except BaseException:
        if not committed:
            for leftover in created:
                shutil.rmtree(state.generation_dir(leftover), ignore_errors=True)
            state.pending_path.unlink(missing_ok=True)
        raise
    test_hook("committed", state.root)
    state.switch(number, result.previous)
    result.actions.extend(post_commit(state, number))
    state.finish()
    result.actions.extend(_describe(m))
    log.info("provisioning: applied bundle counter %d as generation %d", m.counter, number)
    return result


def _describe(m: Manifest) -> list[str]:
    said = []
    if m.box_name is not None:
        said.append(f"box name set to {m.box_name!r}")
    if m.network is not None:
        said.append("network settings replaced" + (f" (api on {m.network.api_host or '…'}:{m.network.api_port or '…'})"
                                                   if m.network.api_host or m.network.api_port else ""))
    for name, urls in m.services.items():
        said.append(f"{name} set to {', '.join(urls) or '(none)'}")
    if m.trust_roots is not None:
        said.append("trust roots replaced")
    if m.signing_chain is not None:
        said.append(f"signing key is now {m.signing_chain.key_label!r} with the new chain")
    said.append("restart the signing service to serve with the new configuration")
    return said


def rollback(state: ProvisioningState) -> RolledBack:
    """Make the previous generation current again (configuration files only; clients stay as they are).

    The result and the audit entry say which generation, made by whom and changing what, is discarded.
    """
    try:
        return state.rollback(ACTOR)
    except ConfigError as exc:
        raise ProvisioningRefused("invalid-content", str(exc)) from exc
