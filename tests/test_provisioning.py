"""USB provisioning: bundle format, every refusal, atomic apply, power cuts, the CA round trip, CLI.

Each test gets its own state directory whose box.toml points at the session's SoftHSM2 token
(the `box_config` dev box), so applying bundles never changes the box the other tests use.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import tomli_w
from cryptography import x509 as cx509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from firmware.config import BoxConfig
from firmware.operations import configstore
from firmware.store import audit
from firmware.store.clients import ClientRegistry
from firmware.store.db import Database
from hsm import Token
from provisioning import bundle as bundle_mod
from provisioning import keys as pkeys
from provisioning.apply import rollback
from provisioning.bundle import Limits
from provisioning.report import write_report
from provisioning.service import provision, provision_copied
from provisioning.state import HOOK_ENV, ProvisioningState

from .support import ESIGNBOX, issue_certificate

BOX_ID = "BOX-TEST-0001"


# -- helpers --------------------------------------------------------------------------------------

def new_manifest(counter: int, valid: timedelta = timedelta(days=7), created_in: timedelta = timedelta(0),
                 **sections) -> dict:
    """A manifest bound to the test box (BOX_ID) unless the test names another binding."""
    created = datetime.now(UTC).replace(microsecond=0) + created_in
    if "any_box" not in sections:
        sections.setdefault("box_serial", BOX_ID)
    sections = {name: value for name, value in sections.items() if value is not None}
    return {"format": "esignbox-bundle/1", "counter": counter, "created_at": created.isoformat(),
            "expires_at": (created + valid).isoformat(), **sections}


def make_bundle(path: Path, key, counter: int, files: dict[str, bytes] | None = None, **sections) -> Path:
    """A signed bundle directory at ``path``."""
    bundle_mod.write_dir(path, new_manifest(counter, **sections), files or {})
    if key is not None:
        bundle_mod.sign_dir(path, key)
    return path


def new_client(name: str, **settings) -> tuple[dict, str]:
    client_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    entry = {"id": client_id, "name": name, "key_sha256": hashlib.sha256(secret.encode()).hexdigest(), **settings}
    return entry, f"esb_{client_id}_{secret}"


class ProvBox:
    """A box state directory (own box.toml and box.db, the session's token) with a trusted key."""

    def __init__(self, state_dir: Path, key) -> None:
        self.state_dir, self.key = state_dir, key
        self.state = ProvisioningState(state_dir)

    def config(self) -> BoxConfig:
        return BoxConfig.load(self.state_dir)

    def provision(self, source: Path, **kwargs):
        return provision(self.state_dir, source, **kwargs).report

    def audit_actions(self) -> list[tuple[str, str, dict]]:
        conn = Database(self.state_dir / "box.db").connect()
        return [(row["actor"], row["action"], row["details"]) for row in audit.export(conn)]

    def refusals(self) -> list[dict]:
        return [details for actor, action, details in self.audit_actions() if action == "provision.refused"]


def write_box_toml(state_dir: Path, box_config: BoxConfig, **overrides) -> None:
    raw = tomllib.loads((box_config.state_dir / "box.toml").read_text())
    raw["token"]["pin_file"] = str(box_config.token.pin_file)
    raw["token"]["environment_files"] = dict(box_config.token.environment)
    raw["signing"]["chain_file"] = str(box_config.chain_file)
    raw["signing"]["trust_roots_file"] = str(box_config.trust_roots_file)
    raw.pop("console", None)
    for section, values in overrides.items():
        raw.setdefault(section, {}).update(values)
    (state_dir / "box.toml").write_text(tomli_w.dumps(raw))
    # the chains of the box's other keys (the signer CA's) live in the state directory
    shutil.copytree(box_config.state_dir / "chains", state_dir / "chains", dirs_exist_ok=True)


@pytest.fixture(scope="module")
def admin_key():
    return pkeys.generate("ed25519")


@pytest.fixture
def pbox(box_config: BoxConfig, tmp_path: Path, admin_key) -> ProvBox:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    write_box_toml(state_dir, box_config, api={"port": 18080}, signing={"tsa_urls": ["http://old-tsa.example/tsr"]})
    (state_dir / "box-id").write_text(BOX_ID + "\n")
    pkeys.enroll(state_dir, pkeys.public_pem(admin_key.public_key()))
    return ProvBox(state_dir, admin_key)


def assert_untouched(pbox: ProvBox) -> None:
    """The configuration the box had before: regular box.toml, old values, no generation."""
    config = pbox.config()
    assert not (pbox.state_dir / "box.toml").is_symlink()
    assert config.api_port == 18080 and config.tsa_urls == ["http://old-tsa.example/tsr"]
    assert pbox.state.numbered_generations() == [] and pbox.state.record() is None
    assert not pbox.state.pending_path.exists()


# -- the good path ------------------------------------------------------------------------------------

def test_good_bundle_applies_everything_atomically(pbox: ProvBox, tmp_path: Path, box_config: BoxConfig):
    client, api_key = new_client("billing", scopes=["hash"], calls=500, rate_per_minute=60)
    roots = box_config.trust_roots_file.read_bytes()
    source = make_bundle(
        tmp_path / "b", pbox.key, 7, files={"roots.pem": roots},
        box_serial=BOX_ID, box_name="signing-box-hq",
        network={"hostname": "esign-hq", "mode": "static", "address": "192.0.2.10/24", "gateway": "192.0.2.1",
                 "dns": ["192.0.2.53"], "ntp": ["ntp.example"], "api_host": "0.0.0.0", "api_port": 9443},
        services={"tsa_urls": ["http://tsa1.example/tsr", "http://tsa2.example/tsr"],
                  "ocsp_urls": ["http://ocsp.example"], "crl_urls": ["http://crl.example/ca.crl"]},
        clients=[client], trust_roots="roots.pem",
    )
    stick = tmp_path / "stick"
    stick.mkdir()
    outcome = provision(pbox.state_dir, source)
    report = outcome.report
    assert report.result == "applied", report.message
    write_report(stick, report, outcome.files)

    config = pbox.config()
    assert (config.api_host, config.api_port) == ("0.0.0.0", 9443)
    assert config.tsa_urls == ["http://tsa1.example/tsr", "http://tsa2.example/tsr"]
    assert config.trust_roots_file.read_bytes() == roots
    assert config.trust_roots_file.parent == pbox.state.generation_dir(report.generation).resolve()
    raw = tomllib.loads((pbox.state_dir / "box.toml").read_text())
    assert raw["box"]["name"] == "signing-box-hq"
    assert raw["network"] == {"hostname": "esign-hq", "mode": "static", "address": "192.0.2.10/24",
                              "gateway": "192.0.2.1", "dns": ["192.0.2.53"], "ntp": ["ntp.example"]}
    assert raw["revocation"] == {"ocsp_urls": ["http://ocsp.example"], "crl_urls": ["http://crl.example/ca.crl"]}
    assert raw["token"]["pin_file"] == str(box_config.token.pin_file)  # the rest is carried over as it was
    # the sections a bundle writes are read through the one schema, and box.toml has the one header
    assert (config.box.name, config.network.hostname, config.network.address) == (
        "signing-box-hq", "esign-hq", "192.0.2.10/24")
    assert config.revocation.crl_urls == ("http://crl.example/ca.crl",) and config.provisioned.counter == 7
    text = (pbox.state_dir / "box.toml").read_text()
    written_by = f"provisioning bundle counter 7 (generation {report.generation};"
    assert text.startswith(configstore.header("§").split("§")[0] + written_by)
    assert configstore.header("§").split("§")[1] in text

    # box.toml now follows `current`; the configuration before is kept as `previous`
    assert os.readlink(pbox.state_dir / "box.toml") == "provisioning/current/box.toml"
    previous = tomllib.loads((pbox.state.previous_link / "box.toml").read_text())
    assert previous["api"]["port"] == 18080
    assert pbox.state.record().counter == 7

    # the client exists with the key the administrator was shown, and the limits asked for
    registry = ClientRegistry(Database(pbox.state_dir / "box.db"))
    authenticated = registry.authenticate(api_key)
    assert authenticated is not None and authenticated.name == "billing"
    assert (authenticated.scopes, authenticated.calls_purchased, authenticated.rate_per_minute) == (("hash",), 500, 60)

    # audit: client change and the apply itself, by "provisioning", and the chain is intact
    actions = pbox.audit_actions()
    assert [a[:2] for a in actions] == [("operator", "provision.enroll"),  # the fixture's enrolment
                                        ("provisioning", "client.add"), ("provisioning", "provision.apply")]
    assert actions[2][2]["counter"] == 7 and actions[2][2]["bundle"] == report.bundle_digest
    assert audit.verify(Database(pbox.state_dir / "box.db").connect()).ok

    # the report on the stick
    on_stick = json.loads((stick / "esignbox-report" / "report.json").read_text())
    assert on_stick["result"] == "applied" and on_stick["box_serial"] == BOX_ID and on_stick["counter"] == 7
    assert "APPLIED" in (stick / "esignbox-report" / "report.txt").read_text()


def test_second_bundle_updates_and_carries_files_forward(pbox: ProvBox, tmp_path: Path, box_config: BoxConfig):
    client, _ = new_client("erp", calls=10)
    roots = box_config.trust_roots_file.read_bytes()
    first = make_bundle(tmp_path / "1", pbox.key, 1, files={"roots.pem": roots}, trust_roots="roots.pem",
                        clients=[client])
    assert pbox.provision(first).result == "applied"
    again = dict(client, id=secrets.token_hex(6), calls=None, scopes=["pdf"])  # same name: an update
    second = make_bundle(tmp_path / "2", pbox.key, 2, box_name="renamed", clients=[again])
    report = pbox.provision(second)
    assert report.result == "applied", report.message
    assert any("keeps id" in action for action in report.actions)
    config = pbox.config()
    assert config.trust_roots_file.read_bytes() == roots  # carried into the new generation
    assert config.trust_roots_file.parent == pbox.state.generation_dir(report.generation).resolve()
    client_now = ClientRegistry(Database(pbox.state_dir / "box.db")).get(client["id"])
    assert (client_now.scopes, client_now.calls_purchased) == (("pdf",), None)
    # only the current and previous generations are kept
    assert pbox.state.numbered_generations() == [pbox.state.previous_generation(), report.generation]

    assert rollback(pbox.state).generation == pbox.state.current_generation()
    assert "box" not in tomllib.loads((pbox.state_dir / "box.toml").read_text())
    assert ("provisioning", "provision.rollback") in [a[:2] for a in pbox.audit_actions()]


def test_tar_bundle_and_stick_layout(pbox: ProvBox, tmp_path: Path):
    source = make_bundle(tmp_path / "b", pbox.key, 3, box_name="from-tar")
    raw = bundle_mod.read_dir(source)
    stick = tmp_path / "stick"
    stick.mkdir()
    bundle_mod.write_tar(raw, stick / bundle_mod.BUNDLE_TAR)
    report = pbox.provision(stick)
    assert report.result == "applied" and report.bundle_digest == raw.digest


def test_same_bundle_again_is_already_applied_not_a_refusal(pbox: ProvBox, tmp_path: Path):
    source = make_bundle(tmp_path / "b", pbox.key, 5, box_name="x")
    assert pbox.provision(source).result == "applied"
    report = pbox.provision(source)
    assert report.result == "already-applied" and report.ok
    assert pbox.refusals() == []


# -- refusals: nothing changes, the reason is logged, audited and reported ------------------------------

def refused(pbox: ProvBox, source: Path, code: str, caplog=None, **kwargs):
    stick = source.parent / "report-stick"
    stick.mkdir(exist_ok=True)
    outcome = provision(pbox.state_dir, source, **kwargs)
    write_report(stick, outcome.report, outcome.files)
    report = outcome.report
    assert (report.result, report.code) == ("refused", code), report.message
    assert_untouched(pbox)
    assert pbox.refusals()[-1]["code"] == code
    on_stick = json.loads((stick / "esignbox-report" / "report.json").read_text())
    assert on_stick["result"] == "refused" and on_stick["code"] == code and on_stick["message"] == report.message
    if caplog is not None:
        assert any("REFUSED" in r.getMessage() and code in r.getMessage() for r in caplog.records)
    return report


def test_unsigned_bundle_is_refused(pbox: ProvBox, tmp_path: Path, caplog):
    source = make_bundle(tmp_path / "b", None, 1, box_name="x")
    report = refused(pbox, source, "unsigned", caplog)
    assert "not signed" in report.message


@pytest.mark.parametrize("tamper", ["file", "manifest", "added-file", "removed-file", "signature"])
def test_tampered_bundle_is_refused(pbox: ProvBox, tmp_path: Path, box_config: BoxConfig, tamper: str):
    roots = box_config.trust_roots_file.read_bytes()
    source = make_bundle(tmp_path / "b", pbox.key, 1, files={"roots.pem": roots}, trust_roots="roots.pem")
    if tamper == "file":
        (source / "files" / "roots.pem").write_bytes(roots.replace(b"A", b"B", 1))
    elif tamper == "manifest":
        manifest = json.loads((source / "manifest.json").read_text())
        manifest["counter"] = 999
        (source / "manifest.json").write_text(json.dumps(manifest))
    elif tamper == "added-file":
        (source / "files" / "extra.pem").write_bytes(roots)
    elif tamper == "removed-file":
        (source / "files" / "roots.pem").unlink()
    else:
        sig = json.loads((source / "manifest.sig").read_text())
        sig["signature"] = sig["signature"][:10] + ("A" if sig["signature"][10] != "A" else "B") + sig["signature"][11:]
        (source / "manifest.sig").write_text(json.dumps(sig))
    refused(pbox, source, "bad-signature")


def test_wrong_signer_is_refused(pbox: ProvBox, tmp_path: Path):
    for algorithm in pkeys.ALGORITHMS:
        source = make_bundle(tmp_path / algorithm, pkeys.generate(algorithm), 1, box_name="evil")
        report = refused(pbox, source, "untrusted-signer")
        assert pkeys.key_id(pbox.key.public_key())[:16] in report.message


def test_signature_claiming_the_trusted_key_id_is_still_checked(pbox: ProvBox, tmp_path: Path):
    source = make_bundle(tmp_path / "b", pkeys.generate("ed25519"), 1, box_name="evil")
    sig = json.loads((source / "manifest.sig").read_text())
    sig["key_id"] = pkeys.key_id(pbox.key.public_key())
    (source / "manifest.sig").write_text(json.dumps(sig))
    refused(pbox, source, "bad-signature")


def test_ecdsa_provisioning_key(box_config: BoxConfig, tmp_path: Path):
    key = pkeys.generate("ecdsa-p256")
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    write_box_toml(state_dir, box_config)
    (state_dir / "box-id").write_text(BOX_ID)
    pkeys.enroll(state_dir, pkeys.public_pem(key.public_key()))
    source = make_bundle(tmp_path / "b", key, 1, box_name="ec")
    assert provision(state_dir, source).report.result == "applied"


def test_expired_bundle_is_refused(pbox: ProvBox, tmp_path: Path):
    source = make_bundle(tmp_path / "b", pbox.key, 1, box_name="x")
    report = refused(pbox, source, "expired", now=datetime.now(UTC) + timedelta(days=8))
    assert "expired at" in report.message
    past = tmp_path / "past"
    bundle_mod.write_dir(past, new_manifest(2, valid=timedelta(days=7)) | {
        "created_at": "2020-01-01T00:00:00+00:00", "expires_at": "2020-01-08T00:00:00+00:00"}, {})
    bundle_mod.sign_dir(past, pbox.key)
    refused(pbox, past, "expired")


def test_replayed_bundle_is_refused(pbox: ProvBox, tmp_path: Path):
    assert pbox.provision(make_bundle(tmp_path / "5", pbox.key, 5, box_name="five")).result == "applied"
    before = (pbox.state_dir / "box.toml").read_text()
    for counter in (5, 4):
        report = pbox.provision(make_bundle(tmp_path / f"old{counter}", pbox.key, counter, box_name="older"))
        assert (report.result, report.code) == ("refused", "replay")
        assert "not above the last applied counter 5" in report.message
    assert (pbox.state_dir / "box.toml").read_text() == before
    assert pbox.state.record().counter == 5
    assert [r["code"] for r in pbox.refusals()] == ["replay", "replay"]


def test_refused_bundle_does_not_consume_the_counter(pbox: ProvBox, tmp_path: Path):
    bad = make_bundle(tmp_path / "bad", pbox.key, 9, box_name="x", box_serial="SOMEONE-ELSE")
    refused(pbox, bad, "wrong-box")
    assert pbox.provision(make_bundle(tmp_path / "good", pbox.key, 9, box_name="x")).result == "applied"


def test_bundle_for_another_box_is_refused(pbox: ProvBox, tmp_path: Path):
    report = refused(pbox, make_bundle(tmp_path / "b", pbox.key, 1, box_serial="BOX-OTHER"), "wrong-box")
    assert "BOX-OTHER" in report.message and BOX_ID in report.message
    assert pbox.provision(make_bundle(tmp_path / "mine", pbox.key, 1, box_serial=BOX_ID)).result == "applied"


def test_box_serial_is_the_token_serial_without_a_box_id_file(pbox: ProvBox, tmp_path: Path, box_config: BoxConfig):
    (pbox.state_dir / "box-id").unlink()
    token = Token(box_config.token_config())
    serial = str(token.info()["serial"]).strip()
    refused(pbox, make_bundle(tmp_path / "other", pbox.key, 1, box_serial=BOX_ID), "wrong-box")
    report = pbox.provision(make_bundle(tmp_path / "b", pbox.key, 1, box_serial=serial))
    assert report.result == "applied" and report.box_serial == serial
    # the administrator learns the serial to bind bundles to without a trip with an empty stick
    status = subprocess.run([ESIGNBOX, "--state-dir", str(pbox.state_dir), "provision", "status"],
                            capture_output=True, text=True, check=True)
    assert json.loads(status.stdout)["box_serial"] == serial


def test_bundle_without_a_box_binding_is_refused(pbox: ProvBox, tmp_path: Path):
    report = refused(pbox, make_bundle(tmp_path / "b", pbox.key, 1, box_serial=None), "invalid-content")
    assert "box_serial" in report.message and "any_box" in report.message
    both = make_bundle(tmp_path / "both", pbox.key, 1, box_serial=BOX_ID, any_box=True)
    assert "not both" in refused(pbox, both, "invalid-content").message
    refused(pbox, make_bundle(tmp_path / "false", pbox.key, 1, box_serial=None, any_box=False), "invalid-content")


def test_bundle_for_any_box_applies_and_says_so(pbox: ProvBox, tmp_path: Path):
    report = pbox.provision(make_bundle(tmp_path / "b", pbox.key, 1, box_serial=None, any_box=True))
    assert report.result == "applied" and report.any_box is True
    assert "any box" in report.to_text()
    applied = [details for _, action, details in pbox.audit_actions() if action == "provision.apply"]
    assert applied[-1]["any_box"] is True


def test_bundle_created_in_the_future_is_refused(pbox: ProvBox, tmp_path: Path):
    future = make_bundle(tmp_path / "future", pbox.key, 1, created_in=timedelta(days=30), valid=timedelta(days=7))
    report = refused(pbox, future, "not-yet-valid")
    assert "created" in report.message and "clock" in report.message
    # a few minutes of skew between the admin PC and the box is normal
    assert pbox.provision(make_bundle(tmp_path / "skew", pbox.key, 1, created_in=timedelta(minutes=3))).result == "applied"


def test_no_trusted_key_refuses_everything(box_config: BoxConfig, tmp_path: Path, admin_key):
    state_dir = tmp_path / "unenrolled"
    state_dir.mkdir()
    write_box_toml(state_dir, box_config, api={"port": 18080}, signing={"tsa_urls": ["http://old-tsa.example/tsr"]})
    (state_dir / "box-id").write_text(BOX_ID)
    refused(ProvBox(state_dir, admin_key), make_bundle(tmp_path / "b", admin_key, 1, box_name="x"), "no-trusted-key")


def test_enrolment_first_key_wins(pbox: ProvBox):
    other = pkeys.public_pem(pkeys.generate().public_key())
    with pytest.raises(pkeys.ProvisioningRefused):
        pkeys.enroll(pbox.state_dir, other)
    assert pkeys.enroll(pbox.state_dir, pkeys.public_pem(pbox.key.public_key()))[1] is False
    assert pkeys.enroll(pbox.state_dir, other, replace=True)[1] is True


@pytest.mark.parametrize("what", ["file", "too-many-files", "manifest", "total", "tar"])
def test_oversized_bundle_is_refused(pbox: ProvBox, tmp_path: Path, what: str):
    limits = Limits()
    files: dict[str, bytes] = {}
    if what == "file":
        files = {"big.pem": b"x" * (limits.file_bytes + 1)}
    elif what == "too-many-files":
        files = {f"f{i}.pem": b"x" for i in range(limits.files + 1)}
    elif what == "total":
        files = {f"f{i}.pem": b"x" * limits.file_bytes for i in range(limits.total_bytes // limits.file_bytes + 1)}
    source = tmp_path / "b"
    bundle_mod.write_dir(source, new_manifest(1), files)
    if what == "manifest":
        (source / "manifest.json").write_bytes(b" " * (limits.manifest_bytes + 1))
    if what == "tar":
        stick = tmp_path / "stick"
        stick.mkdir()
        with open(stick / bundle_mod.BUNDLE_TAR, "wb") as handle:
            handle.truncate(limits.tar_bytes + 1)
        source = stick
    refused(pbox, source, "oversized")


@pytest.mark.parametrize("attack", ["symlink-file", "symlink-manifest", "symlink-files-dir", "symlink-bundle-dir",
                                    "subdirectory", "bad-name", "fifo", "unexpected-top-level"])
def test_unsafe_paths_on_the_stick_are_refused(pbox: ProvBox, tmp_path: Path, attack: str):
    stick = tmp_path / "stick"
    source = make_bundle(stick / bundle_mod.BUNDLE_DIR, pbox.key, 1, files={"roots.pem": b"x"}, trust_roots="roots.pem")
    secret = pbox.state_dir / "secrets-of-the-box"
    secret.write_text("do not read")
    if attack == "symlink-file":
        (source / "files" / "roots.pem").unlink()
        (source / "files" / "roots.pem").symlink_to(secret)
    elif attack == "symlink-manifest":
        (source / "manifest.json").rename(tmp_path / "real-manifest.json")
        (source / "manifest.json").symlink_to(tmp_path / "real-manifest.json")
    elif attack == "symlink-files-dir":
        (source / "files").rename(tmp_path / "real-files")
        (source / "files").symlink_to(tmp_path / "real-files")
    elif attack == "symlink-bundle-dir":
        source.rename(tmp_path / "real-bundle")
        source.symlink_to(tmp_path / "real-bundle")
    elif attack == "subdirectory":
        (source / "files" / "sub").mkdir()
        (source / "files" / "sub" / "x.pem").write_bytes(b"x")
    elif attack == "bad-name":
        (source / "files" / "white space.pem").write_bytes(b"x")
    elif attack == "fifo":
        os.mkfifo(source / "files" / "pipe")
    else:
        (source / "run-me.sh").write_text("#!/bin/sh\nrm -rf /\n")
    report = refused(pbox, stick, "unsafe-path")
    assert "do not read" not in report.message


@pytest.mark.parametrize("member", ["../escape", "/etc/passwd", "files/../../x", "symlink", "hardlink", "device",
                                    "files/sub/x.pem"])
def test_unsafe_tar_members_are_refused(pbox: ProvBox, tmp_path: Path, member: str):
    raw = bundle_mod.read_dir(make_bundle(tmp_path / "b", pbox.key, 1, box_name="x"))
    stick = tmp_path / "stick"
    stick.mkdir()
    with tarfile.open(stick / bundle_mod.BUNDLE_TAR, "w") as archive:
        for name, data in (("manifest.json", raw.manifest), ("manifest.sig", raw.signature)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo({"symlink": "files/link.pem", "hardlink": "files/hard.pem",
                                "device": "files/dev.pem"}.get(member, member))
        if member == "symlink":
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/shadow"
        elif member == "hardlink":
            info.type, info.linkname = tarfile.LNKTYPE, "manifest.json"
        elif member == "device":
            info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
        else:
            info.size = 1
        archive.addfile(info, io.BytesIO(b"x") if info.size else None)
    refused(pbox, stick, "unsafe-path")


@pytest.mark.parametrize("problem, expected", [
    ({"surprise": 1}, "unknown field"),
    ({"network": {"mode": "static"}}, "needs an address"),
    ({"network": {"address": "300.1.1.1/24"}}, "network.address"),
    ({"services": {"tsa_urls": ["file:///etc/passwd"]}}, "http:// or https://"),
    ({"clients": [{"id": "zz", "name": "x", "key_sha256": "0" * 64}]}, "12 lower-case hex"),
    ({"clients": [{"id": "0123456789ab", "name": "x", "key_sha256": "0" * 64, "scopes": ["root"]}]}, "subset"),
    ({"key_request": {"label": "k", "algorithm": "dsa", "subject": "CN=x"}}, "must be one of"),
    ({"key_request": {"label": "k", "algorithm": "ec-p256", "subject": "O=no common name"}}, "needs a CN"),
    ({"trust_roots": "missing.pem"}, "not in the bundle"),
    ({"counter": True}, "whole number"),
])
def test_invalid_manifest_content_is_refused(pbox: ProvBox, tmp_path: Path, problem: dict, expected: str):
    source = tmp_path / "b"
    bundle_mod.write_dir(source, {**new_manifest(1), **problem}, {})
    bundle_mod.sign_dir(source, pbox.key)
    report = refused(pbox, source, "invalid-content")
    assert expected in report.message


def test_unreferenced_file_and_bad_pem_are_refused(pbox: ProvBox, tmp_path: Path):
    report = refused(pbox, make_bundle(tmp_path / "a", pbox.key, 1, files={"stray.pem": b"x"}), "invalid-content")
    assert "not named by the manifest" in report.message
    report = refused(pbox, make_bundle(tmp_path / "b", pbox.key, 1, files={"roots.pem": b"not pem"},
                                       trust_roots="roots.pem"), "invalid-content")
    assert "not PEM certificates" in report.message


def test_no_bundle_on_the_stick_still_reports_the_box(pbox: ProvBox, tmp_path: Path):
    stick = tmp_path / "stick"
    stick.mkdir()
    report = pbox.provision(stick)
    assert report.result == "no-bundle" and report.box_serial == BOX_ID
    assert report.trusted_key_id == pkeys.key_id(pbox.key.public_key())
    assert pbox.refusals() == []


# -- the CA round trip over the stick -------------------------------------------------------------------

def test_key_request_then_issued_chain(pbox: ProvBox, tmp_path: Path, box_config: BoxConfig):
    label = f"prov-{secrets.token_hex(4)}"
    request = {"label": label, "algorithm": "ec-p256", "subject": "CN=Signing Box,O=Example Ltd,C=BE"}
    stick = tmp_path / "stick"
    stick.mkdir()
    outcome = provision(pbox.state_dir, make_bundle(tmp_path / "req", pbox.key, 1, key_request=request))
    assert outcome.report.result == "applied", outcome.report.message
    write_report(stick, outcome.report, outcome.files)
    csr_pem = (stick / "esignbox-report" / f"{label}.csr").read_bytes()
    assert csr_pem == (pbox.state.csr_dir / f"{label}.csr").read_bytes()
    assert pbox.config().key_label == box_config.key_label  # not switched before a certificate exists
    token = Token(box_config.token_config())
    spki = token.key(label).public_key_info
    assert cx509.load_pem_x509_csr(csr_pem).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) == spki

    root_pem, leaf_pem = issue_certificate(csr_pem)
    # a chain for a different key is refused, and so is one no trust root issued
    other_root, other_leaf = issue_certificate(
        cx509.CertificateSigningRequestBuilder().subject_name(cx509.Name([])).sign(
            ec.generate_private_key(ec.SECP256R1()), hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    refused_chain = make_bundle(tmp_path / "wrong", pbox.key, 2, files={"chain.pem": other_leaf + other_root,
                                "roots.pem": other_root}, trust_roots="roots.pem",
                                signing_chain={"key_label": label, "file": "chain.pem"})
    report = pbox.provision(refused_chain)
    assert (report.result, report.code) == ("refused", "chain-mismatch") and "not for token key" in report.message
    unanchored = make_bundle(tmp_path / "unanchored", pbox.key, 2, files={"chain.pem": leaf_pem + root_pem,
                             "roots.pem": other_root}, trust_roots="roots.pem",
                             signing_chain={"key_label": label, "file": "chain.pem"})
    report = pbox.provision(unanchored)
    assert (report.result, report.code) == ("refused", "chain-mismatch") and "no trust root issued" in report.message

    good = make_bundle(tmp_path / "chain", pbox.key, 2, files={"chain.pem": leaf_pem, "roots.pem": root_pem},
                       trust_roots="roots.pem", signing_chain={"key_label": label, "file": "chain.pem"})
    report = pbox.provision(good)
    assert report.result == "applied", report.message
    config = pbox.config()
    assert config.key_label == label
    assert config.chain_file.read_bytes().strip() == leaf_pem.strip()
    assert config.chain_file.parent == pbox.state.generation_dir(report.generation).resolve()

    # the same key request again (e.g. after a crash) reuses the key rather than failing
    again = pbox.provision(make_bundle(tmp_path / "again", pbox.key, 3, key_request=request))
    assert again.result == "applied" and any("already on the token" in a for a in again.actions)


def test_setup_code_for_the_admin_console(pbox: ProvBox, tmp_path: Path):
    from firmware.operations import accounts
    code = "ABCD-EFGH-JKMN"
    report = pbox.provision(make_bundle(tmp_path / "b", pbox.key, 1, admin={"setup_code": code}))
    assert report.result == "applied", report.message
    db = Database(pbox.state_dir / "box.db")
    console = accounts.Accounts(db)
    assert console.setup_code_source() == "provisioning"
    attempt, nonce = console.check_setup_code(code, "127.0.0.1")
    assert attempt.ok and nonce
    generation_bundle = pbox.state.generation_dir(report.generation) / "bundle"
    assert oct(generation_bundle.stat().st_mode & 0o777) == "0o700"


def test_a_stick_resets_a_forgotten_admin_password(pbox: ProvBox, tmp_path: Path):
    """No shell on the box: the way back in is physical, a signed stick with a new set-up code."""
    from firmware.operations import accounts
    from webui.sessions import SessionStore

    db = Database(pbox.state_dir / "box.db")
    console = accounts.Accounts(db)
    first = "ABCD-EFGH-JKMN"
    assert pbox.provision(make_bundle(tmp_path / "1", pbox.key, 1, admin={"setup_code": first})).result == "applied"
    _, nonce = console.check_setup_code(first, "127.0.0.1")
    console.create_admin(nonce, "alice", "a long forgotten password", "a long forgotten password", "127.0.0.1")
    SessionStore(db, 900).create("127.0.0.1", admin="alice")
    again = pbox.provision(make_bundle(tmp_path / "2", pbox.key, 2, admin={"setup_code": "PQRS-TUVW-XYZ2"}))
    assert (again.result, again.code) == ("refused", "invalid-content") and "reset_admin" in again.message
    assert console.admins() == ["alice"]
    report = pbox.provision(make_bundle(tmp_path / "3", pbox.key, 3,
                                        admin={"setup_code": "PQRS-TUVW-XYZ2", "reset_admin": True}))
    assert report.result == "applied", report.message
    assert not console.admin_exists() and console.setup_code_source() == "provisioning"
    assert db.connect().execute("SELECT COUNT(*) FROM console_sessions WHERE admin IS NOT NULL").fetchone()[0] == 0
    attempt, nonce = console.check_setup_code("PQRS-TUVW-XYZ2", "127.0.0.1")
    assert attempt.ok and nonce
    reset = [details for _, action, details in pbox.audit_actions() if action == "admin.reset"]
    assert reset and reset[-1]["removed"] == ["alice"]


def test_root_copies_the_stick_then_applies_as_the_state_owner(box_config: BoxConfig, tmp_path: Path, admin_key):
    nobody = 65534
    base = Path(tempfile.mkdtemp(prefix="esb-owner-", dir="/tmp"))  # traversable by that user, unlike tmp_path
    try:
        os.chmod(base, 0o755)
        state_dir = base / "state"
        state_dir.mkdir()
        write_box_toml(state_dir, box_config)
        (state_dir / "box-id").write_text(BOX_ID)
        pkeys.enroll(state_dir, pkeys.public_pem(admin_key.public_key()))
        for path in [state_dir, *state_dir.rglob("*")]:
            os.chown(path, nobody, nobody)
        stick = tmp_path / "stick"  # 0700 root: only the copying parent can read it
        make_bundle(stick / bundle_mod.BUNDLE_DIR, admin_key, 1, box_name="owned", clients=[new_client("c")[0]])
        outcome = provision_copied(state_dir, stick)
        assert outcome.report.result == "applied", outcome.report.message
        assert BoxConfig.load(state_dir).state_dir == state_dir.resolve()
        owners = {str(p.relative_to(state_dir)): os.lstat(p).st_uid for p in state_dir.rglob("*")}
        assert set(owners.values()) == {nobody}, owners
        assert os.lstat(state_dir / "box.toml").st_uid == nobody and (state_dir / "box.toml").is_symlink()
    finally:
        shutil.rmtree(base)


# -- power cuts: SIGKILL at every step of the apply -----------------------------------------------------

def _kill_apply_at(pbox: ProvBox, source: Path, point: str) -> None:
    _kill_esignbox_at(pbox, point, "provision", "apply", str(source))


def _kill_esignbox_at(pbox: ProvBox, point: str, *args: str) -> None:
    env = dict(os.environ, **{HOOK_ENV: f"pause:{point}"})
    marker = pbox.state.root / "test-hook-paused"
    process = subprocess.Popen([ESIGNBOX, "--state-dir", str(pbox.state_dir), *args],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while not marker.exists():
        if process.poll() is not None:
            raise AssertionError(f"{args} ended before {point}: {process.stdout.read().decode()}")
        assert time.monotonic() < deadline, f"{args} never reached {point}"
        time.sleep(0.02)
    assert marker.read_text() == point
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    process.stdout.close()
    marker.unlink()


@pytest.mark.parametrize("point", ["staging", "staged"])
def test_power_cut_before_the_commit_keeps_the_old_configuration(pbox: ProvBox, tmp_path: Path, point: str):
    client, api_key = new_client("half")
    source = make_bundle(tmp_path / "b", pbox.key, 4, box_name="new", network={"api_port": 9443},
                         services={"tsa_urls": ["http://new-tsa.example/tsr"]}, clients=[client])
    _kill_apply_at(pbox, source, point)

    # before any recovery: box.toml loads and the previous values are in force
    config = pbox.config()
    assert config.api_port == 18080 and config.tsa_urls == ["http://old-tsa.example/tsr"]
    assert not (pbox.state_dir / "box.toml").is_symlink()
    assert pbox.state.record() is None
    assert ClientRegistry(Database(pbox.state_dir / "box.db")).authenticate(api_key) is None

    # the next attempt cleans up the half-done one, and the bundle (counter unused) applies
    report = pbox.provision(source)
    assert report.result == "applied", report.message
    assert pbox.config().api_port == 9443
    assert not list(pbox.state.generations.glob(".staging-*"))
    assert ClientRegistry(Database(pbox.state_dir / "box.db")).authenticate(api_key) is not None


@pytest.mark.parametrize("point", ["committed", "switched-current"])
def test_power_cut_after_the_commit_is_rolled_forward(pbox: ProvBox, tmp_path: Path, point: str):
    source = make_bundle(tmp_path / "b", pbox.key, 4, network={"api_port": 9443})
    _kill_apply_at(pbox, source, point)
    assert BoxConfig.load(pbox.state_dir).api_port in (18080, 9443)  # loads, old or new, never half
    assert pbox.state.pending_path.exists()

    done = subprocess.run([ESIGNBOX, "--state-dir", str(pbox.state_dir), "provision", "recover"],
                          capture_output=True, text=True, check=True)
    assert "finished switching" in done.stdout
    assert pbox.config().api_port == 9443
    assert os.readlink(pbox.state_dir / "box.toml") == "provisioning/current/box.toml"
    assert not pbox.state.pending_path.exists()
    assert pbox.provision(source).result == "already-applied"


# -- the administrator's commands -----------------------------------------------------------------------

def test_cli_keygen_make_sign_apply(pbox: ProvBox, tmp_path: Path, box_config: BoxConfig):
    admin = tmp_path / "admin-pc"
    admin.mkdir()
    (admin / "pass").write_text("correct horse battery staple\n")

    def esignbox(*args, check=True):
        return subprocess.run([ESIGNBOX, *args], capture_output=True, text=True, check=check, cwd=admin)

    esignbox("provision", "keygen", "--out", "prov", "--algorithm", "ecdsa-p256", "--passphrase-file", "pass")
    assert oct((admin / "prov.key").stat().st_mode & 0o777) == "0o600"
    assert b"ENCRYPTED" in (admin / "prov.key").read_bytes()
    enrolled = esignbox("--state-dir", str(pbox.state_dir), "provision", "enroll", "prov.pub", check=False)
    assert enrolled.returncode == 1 and "already enrolled" in enrolled.stderr
    esignbox("--state-dir", str(pbox.state_dir), "provision", "enroll", "--replace", "prov.pub")

    unbound = esignbox("provision", "make-bundle", "--out", "unbound", "--box-name", "x", check=False)
    assert unbound.returncode != 0 and "--box-serial" in unbound.stderr and "--any-box" in unbound.stderr
    made = esignbox("provision", "make-bundle", "--out", "bundle", "--box-serial", BOX_ID, "--box-name", "cli-box",
                    "--dhcp", "--hostname", "esign-cli", "--api-port", "9555", "--tsa-url", "http://t.example/tsr",
                    "--client", "erp:hash,pdf:1000", "--keys-out", "keys.txt",
                    "--trust-roots", str(box_config.trust_roots_file), "--counter", "42")
    api_key = (admin / "keys.txt").read_text().split("\t")[1].strip()
    assert api_key in made.stdout
    esignbox("provision", "sign-bundle", "bundle", "--key", "prov.key", "--passphrase-file", "pass",
             "--tar", "bundle.tar")

    stick = tmp_path / "stick"
    stick.mkdir()
    (stick / bundle_mod.BUNDLE_TAR).write_bytes((admin / "bundle.tar").read_bytes())
    applied = esignbox("--state-dir", str(pbox.state_dir), "provision", "apply", str(stick), "--report-dir", str(stick))
    assert "APPLIED" in applied.stdout
    assert json.loads((stick / "esignbox-report" / "report.json").read_text())["counter"] == 42
    assert pbox.config().api_port == 9555
    assert ClientRegistry(Database(pbox.state_dir / "box.db")).authenticate(api_key).name == "erp"

    again = esignbox("--state-dir", str(pbox.state_dir), "provision", "apply", str(admin / "bundle"), check=False)
    assert again.returncode == 0 and "ALREADY-APPLIED" in again.stdout
    (admin / "bundle" / "manifest.json").write_text((admin / "bundle" / "manifest.json").read_text()
                                                    .replace("cli-box", "evil-box"))
    tampered = esignbox("--state-dir", str(pbox.state_dir), "provision", "apply", str(admin / "bundle"), check=False)
    assert tampered.returncode == 2 and "bad-signature" in tampered.stdout

    status = json.loads(esignbox("--state-dir", str(pbox.state_dir), "provision", "status").stdout)
    assert status["last_counter"] == 42 and status["config_is_provisioned"] is True


# -- the console and the CLI change a provisioned box through the one writer ------------------------

def test_console_change_after_rollback_is_a_generation_and_rollback_says_what_it_discards(
        pbox: ProvBox, tmp_path: Path, box_config: BoxConfig):
    """Issue 9 item 8: apply, roll back, change in the console, roll back again."""
    def esignbox(*args: str) -> str:
        return subprocess.run([ESIGNBOX, "--state-dir", str(pbox.state_dir), *args], check=True,
                              capture_output=True, text=True, cwd=tmp_path).stdout

    link = pbox.state_dir / "box.toml"
    assert pbox.provision(make_bundle(tmp_path / "b", pbox.key, 1, box_name="first")).result == "applied"
    esignbox("provision", "rollback")
    before, snapshot = link.read_text(), pbox.state.current_generation()
    assert "first" not in before

    db = Database(pbox.state_dir / "box.db")
    change = configstore.update(pbox.state_dir, {"signing": {"default_level": "B-B"}}, actor="admin:alice",
                                action="settings.change", details={"default_level": "B-B"}, db=db)
    assert os.readlink(link) == "provisioning/current/box.toml"  # still the provisioning link, not a file
    assert change.generation == pbox.state.current_generation() > snapshot
    assert pbox.state.previous_generation() == snapshot
    assert change.changes == ["signing.default_level (unset)→B-B"]
    assert pbox.config().default_level == "B-B" == change.config.default_level
    assert pbox.state.record().generation == change.generation  # committed like every generation
    actor, action, details = pbox.audit_actions()[-1]
    assert (actor, action, details["generation"], details["changes"]) == (
        "admin:alice", "settings.change", change.generation, change.changes)

    said = esignbox("provision", "rollback")
    discarded = (f"generation {change.generation} (admin:alice settings.change: "
                 f"signing.default_level (unset)→B-B)")
    assert f"rolls back {discarded} to generation {snapshot}" in said, said
    assert link.read_text() == before and pbox.config().default_level == "B-T"
    actor, action, details = pbox.audit_actions()[-1]
    assert (actor, action, details["discards"]) == ("provisioning", "provision.rollback", discarded)

    # the command line writes through the same path: a provisioned box gets a new generation too
    esignbox("import-chain", str(box_config.chain_file), "--label", box_config.key_label)
    activated = esignbox("activate", box_config.key_label)
    assert f"generation {pbox.state.current_generation()}" in activated and "restart the service" in activated
    assert os.readlink(link) == "provisioning/current/box.toml"
    assert pbox.config().chain_file == (pbox.state_dir / "chains" / f"{box_config.key_label}.pem").resolve()


@pytest.mark.parametrize("point", ["staged", "switched-current"])
def test_power_cut_in_a_command_line_change_is_finished_or_undone_by_the_next_change(
        pbox: ProvBox, tmp_path: Path, box_config: BoxConfig, point: str):
    assert pbox.provision(make_bundle(tmp_path / "b", pbox.key, 1, box_name="first")).result == "applied"
    subprocess.run([ESIGNBOX, "--state-dir", str(pbox.state_dir), "import-chain", str(box_config.chain_file),
                    "--label", box_config.key_label], check=True, capture_output=True)
    bundle_generation = pbox.state.current_generation()
    _kill_esignbox_at(pbox, point, "activate", box_config.key_label)
    assert pbox.state.pending_path.exists()
    kept = (pbox.state_dir / "chains" / f"{box_config.key_label}.pem").resolve()
    assert pbox.config().chain_file in (box_config.chain_file, kept)  # loads, old or new, never half

    change = configstore.update(pbox.state_dir, {"signing": {"default_level": "B-B"}}, actor="admin:alice",
                                action="settings.change", details={})
    assert not pbox.state.pending_path.exists() and not list(pbox.state.generations.glob(".staging-*"))
    config = pbox.config()
    assert config.default_level == "B-B" and os.readlink(pbox.state_dir / "box.toml") == "provisioning/current/box.toml"
    if point == "staged":  # not committed: the activation is gone, the console's change follows the bundle
        assert config.chain_file == box_config.chain_file
        assert pbox.state.previous_generation() == bundle_generation
    else:  # committed: the activation is in force, and the console's change follows it
        assert config.chain_file == kept
        assert "operator key.activate" in pbox.state.describe(pbox.state.previous_generation())
    assert change.generation == pbox.state.current_generation()
