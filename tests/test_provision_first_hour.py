"""The first hour with a box (issue 14): enrolling the provisioning key from a stick with the code on
the box's screen (trust on first use), a bundle on a box the image left without box.toml, and a
signed factory reset.

Real parts throughout: stick directories written by the `esignbox provision` commands, reports
written back onto them, box.db and its audit log, `esignbox status --screen` as the image runs it.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from firmware.config import BoxConfig
from firmware.operations import accounts, trust
from firmware.store import audit, immediate
from firmware.store.db import Database
from provisioning import keys as pkeys
from provisioning.bundle import BUNDLE_DIR
from provisioning.report import REPORT_DIR, write_report
from provisioning.service import provision_copied

from .support import ESIGNBOX
from .test_provisioning import BOX_ID, make_bundle, write_box_toml


def esignbox(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([ESIGNBOX, *args], capture_output=True, text=True, timeout=120, check=check)


def audit_log(state_dir: Path) -> list[dict]:
    return list(audit.export(Database(state_dir / "box.db").connect()))


def screen(state_dir: Path) -> list[str]:
    return esignbox("--state-dir", str(state_dir), "status", "--screen").stdout.splitlines()


def put_in(state_dir: Path, stick: Path) -> dict:
    """What the box does with a stick: copy, verify, apply, write the report back; the report as the stick has it."""
    outcome = provision_copied(state_dir, stick)
    write_report(stick, outcome.report, outcome.files)
    return json.loads((stick / REPORT_DIR / "report.json").read_text())


def enrolment_stick(tmp_path: Path, name: str, public_key: Path, code: str) -> Path:
    stick = tmp_path / name
    stick.mkdir()
    esignbox("provision", "make-enrolment", "--key", str(public_key), "--code", code, str(stick))
    return stick


@pytest.fixture
def fresh_box(box_config: BoxConfig, tmp_path: Path) -> tuple[Path, str]:
    """A box that trusts no provisioning key and shows a one-time set-up code (as `serve` leaves it)."""
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    write_box_toml(state_dir, box_config, api={"port": 18081})
    (state_dir / "box-id").write_text(BOX_ID + "\n")
    code = accounts.Accounts(Database(state_dir / "box.db")).ensure_setup_code()
    assert code is not None and accounts.shown_setup_code(state_dir) == code
    return state_dir, code


@pytest.fixture
def admin_keys(tmp_path: Path) -> tuple[pkeys.PrivateKey, Path]:
    esignbox("provision", "keygen", "--out", str(tmp_path / "admin"))
    private = pkeys.load_private((tmp_path / "admin.key").read_bytes(), None)
    return private, tmp_path / "admin.pub"


# -- trust on first use ------------------------------------------------------------------------------

def test_the_first_stick_with_the_screen_code_enrols_its_key_once(fresh_box, admin_keys, tmp_path: Path):
    state_dir, code = fresh_box
    private, public = admin_keys
    key_id = pkeys.key_id(private.public_key())
    assert "Provisioning key: none — a stick with the administrator's public key and the set-up code below enrols it" \
        in screen(state_dir)

    report = put_in(state_dir, enrolment_stick(tmp_path, "stick1", public, code))
    assert report["result"] == "enrolled" and report["trusted_key_id"] == key_id, report
    assert any("trusted on first use, with the set-up code" in action for action in report["actions"])
    assert "ENROLLED" in (tmp_path / "stick1" / REPORT_DIR / "report.txt").read_text()
    assert pkeys.key_id(pkeys.trusted_key(state_dir)) == key_id
    entries = audit_log(state_dir)
    enrolled = [e for e in entries if e["action"] == "provision.enroll"]
    assert len(enrolled) == 1 and enrolled[0]["details"]["key_id"] == key_id
    assert enrolled[0]["details"]["how"] == "stick" and enrolled[0]["actor"] == "provisioning"
    accepted = entries.index(next(e for e in entries if e["action"] == "admin.setup_code_accepted"))
    assert entries[accepted + 1]["action"] == "provision.enroll"  # one transaction: code accepted, key trusted
    lines = screen(state_dir)
    assert any(line.startswith(f"Provisioning key: {key_id[:16]}… (enrolled from a stick at ") for line in lines), lines
    assert accounts.shown_setup_code(state_dir) == code  # not consumed: it still creates the administrator

    # From now on only bundles signed by that key; a second "first" stick is refused and changes nothing.
    other = pkeys.generate()
    (tmp_path / "other.pub").write_bytes(pkeys.public_pem(other.public_key()))
    report = put_in(state_dir, enrolment_stick(tmp_path, "stick2", tmp_path / "other.pub", code))
    assert report["result"] == "refused" and report["code"] == "already-enrolled", report
    assert "already trusts provisioning key" in (tmp_path / "stick2" / REPORT_DIR / "report.txt").read_text()
    assert pkeys.key_id(pkeys.trusted_key(state_dir)) == key_id
    assert [e["details"]["code"] for e in audit_log(state_dir) if e["action"] == "provision.refused"] == \
        ["already-enrolled"]

    stick = tmp_path / "stick3"
    make_bundle(stick / BUNDLE_DIR, private, 1, box_name="enrolled-box")
    assert put_in(state_dir, stick)["result"] == "applied"
    assert BoxConfig.load(state_dir).box.name == "enrolled-box"


def test_one_stick_enrols_the_key_and_applies_the_bundle_it_signed(fresh_box, admin_keys, tmp_path: Path):
    state_dir, code = fresh_box
    private, public = admin_keys
    stick = enrolment_stick(tmp_path, "stick", public, code)
    make_bundle(stick / BUNDLE_DIR, private, 1, box_name="one-stick")
    report = put_in(state_dir, stick)
    assert report["result"] == "applied", report
    assert "enrolled" in report["actions"][0] and BoxConfig.load(state_dir).box.name == "one-stick"


def test_a_wrong_code_is_refused_and_counts_towards_the_lockout(fresh_box, admin_keys, tmp_path: Path):
    state_dir, code = fresh_box
    _, public = admin_keys
    for attempt in range(5):
        report = put_in(state_dir, enrolment_stick(tmp_path, f"wrong{attempt}", public, "AAAA-BBBB-CCCC"))
        assert report["result"] == "refused" and report["code"] == "wrong-code", report
    assert "locked" in report["message"]
    assert not pkeys.trusted_key_path(state_dir).exists()
    # Locked now: even the right code is not checked (the console's own lockout, shared with sticks).
    report = put_in(state_dir, enrolment_stick(tmp_path, "right", public, code))
    assert report["result"] == "refused" and report["code"] == "wrong-code" and "locked" in report["message"]
    assert not pkeys.trusted_key_path(state_dir).exists()
    entries = audit_log(state_dir)
    failed = [e for e in entries if e["action"] == "admin.login_failed"]
    assert len(failed) == 5 and {e["details"]["peer"] for e in failed} == {"usb-stick"}
    assert [e for e in entries if e["action"] == "admin.lockout"]
    assert not [e for e in entries if e["action"] == "provision.enroll"]


def test_no_stick_enrols_a_key_once_an_administrator_exists(fresh_box, admin_keys, tmp_path: Path):
    state_dir, code = fresh_box
    _, public = admin_keys
    db = Database(state_dir / "box.db")
    console = accounts.Accounts(db)
    attempt, nonce = console.check_setup_code(code, "192.0.2.7")
    assert attempt.ok and nonce
    console.create_admin(nonce, "alice", "correct horse battery", "correct horse battery", "192.0.2.7")
    report = put_in(state_dir, enrolment_stick(tmp_path, "stick", public, code))
    assert report["result"] == "refused" and report["code"] == "no-setup-code", report
    assert not pkeys.trusted_key_path(state_dir).exists()
    assert "Provisioning key: none — sticks are refused; a key must be built into the image or enrolled by an operator" \
        in screen(state_dir)


def test_an_enrolment_committed_before_a_crash_gets_its_file(fresh_box, admin_keys, tmp_path: Path):
    """The row and its audit entry are the commit; trusted.pub follows, and the next stick finishes it."""
    state_dir, _ = fresh_box
    private, _ = admin_keys
    db = Database(state_dir / "box.db")
    with immediate(db.connect()) as conn:  # what enrol_first_key commits before writing the file
        pkeys.record_trust(conn, private.public_key(), "stick", "provisioning", {})
    assert not pkeys.trusted_key_path(state_dir).exists()
    stick = tmp_path / "stick"
    make_bundle(stick / BUNDLE_DIR, private, 1, box_name="recovered")
    assert put_in(state_dir, stick)["result"] == "applied"
    assert pkeys.key_id(pkeys.trusted_key(state_dir)) == pkeys.key_id(private.public_key())
    assert trust.trusted(db) is not None


# -- a bundle on a box the image left without box.toml --------------------------------------------------

@pytest.fixture
def imaged_box(tmp_path: Path, admin_keys) -> Path:
    """A freshly written image's state directory: a box id and a trusted key, no box.toml."""
    state_dir = tmp_path / "imaged"
    state_dir.mkdir()
    (state_dir / "box-id").write_text(BOX_ID + "\n")
    pkeys.enroll(state_dir, admin_keys[1].read_bytes())
    return state_dir


def test_a_bundle_on_a_box_without_box_toml_writes_a_complete_one(imaged_box: Path, admin_keys, tmp_path: Path):
    """Its key request needs a token: the box makes its own, as the console's set-up does (SoftHSM2)."""
    stick = tmp_path / "stick"
    make_bundle(stick / BUNDLE_DIR, admin_keys[0], 1, box_name="from-a-stick",
                services={"tsa_urls": ["http://tsa.example/tsr"]},
                key_request={"label": "box-2027", "algorithm": "ec-p256", "subject": "CN=Stick Box,O=Example,C=BE"})
    done = esignbox("--state-dir", str(imaged_box), "provision", "apply", str(stick), "--report-dir", str(stick),
                    check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    config = BoxConfig.load(imaged_box)
    assert config.box.name == "from-a-stick" and config.tsa_urls == ["http://tsa.example/tsr"]
    assert config.token is not None and config.token.label == "esignbox" and config.console.enabled
    assert config.api.trusted_proxies == ("127.0.0.1", "::1")  # the image's nginx in front: trails name clients
    assert (imaged_box / "tokens").is_dir() and (stick / REPORT_DIR / "box-2027.csr").exists()
    actions = [(e["actor"], e["action"]) for e in audit_log(imaged_box)]
    assert ("provisioning", "setup.token") in actions and actions[-1] == ("provisioning", "provision.apply")
    status = esignbox("--state-dir", str(imaged_box), "status").stdout.strip()
    assert status == "not set up"  # no chain yet: the console's set-up goes on at the chain


def test_a_bundle_without_key_work_on_a_box_without_box_toml_leaves_the_token_to_the_console(
        imaged_box: Path, admin_keys, tmp_path: Path):
    stick = tmp_path / "stick"
    make_bundle(stick / BUNDLE_DIR, admin_keys[0], 1, box_name="named", services={"tsa_urls": ["http://tsa.example/tsr"]})
    report = put_in(imaged_box, stick)
    assert report["result"] == "applied", report
    config = BoxConfig.load(imaged_box)
    assert config.box.name == "named" and config.console.enabled and config.token is None
    assert config.api.trusted_proxies == ("127.0.0.1", "::1")
    assert not (imaged_box / "tokens").exists()


# -- factory reset -----------------------------------------------------------------------------------

def token_labels(state_dir: Path) -> list[str]:
    """The key labels on the box's token, asked in a process of its own (its SoftHSM2 configuration)."""
    code = ("import sys; from pathlib import Path; from firmware.config import BoxConfig; from hsm import Token; "
            "t = Token(BoxConfig.load(Path(sys.argv[1])).token_config()); print(*sorted(k.label for k in t.keys()))")
    done = subprocess.run([str(Path(ESIGNBOX).parent / "python"), "-c", code, str(state_dir)], capture_output=True,
                          text=True, check=True, timeout=60)
    return done.stdout.split()


def reset_stick(tmp_path: Path, name: str, key_file: Path | None, serial: str = BOX_ID, counter: int = 100) -> Path:
    stick = tmp_path / name
    esignbox("provision", "make-reset", "--box-serial", serial, "--counter", str(counter),
             "--out", str(stick / BUNDLE_DIR))
    if key_file is not None:
        esignbox("provision", "sign-bundle", str(stick / BUNDLE_DIR), "--key", str(key_file))
    return stick


def apply_stick(state_dir: Path, stick: Path) -> dict:
    esignbox("--state-dir", str(state_dir), "provision", "apply", str(stick), "--report-dir", str(stick), check=False)
    return json.loads((stick / REPORT_DIR / "report.json").read_text())


def test_a_signed_reset_returns_the_box_to_not_set_up_and_says_so(imaged_box: Path, admin_keys, tmp_path: Path):
    state_dir = imaged_box
    stick = tmp_path / "setup-stick"
    make_bundle(stick / BUNDLE_DIR, admin_keys[0], 1, box_name="before-reset",
                key_request={"label": "box-2027", "algorithm": "ec-p256", "subject": "CN=Reset Box,O=Example,C=BE"})
    assert apply_stick(state_dir, stick)["result"] == "applied"
    assert token_labels(state_dir) == ["box-2027"]
    before = (state_dir / "box.toml").read_text()

    # Refused, and nothing changes: unsigned, signed by a stranger, for another box.
    (tmp_path / "stranger").mkdir()
    esignbox("provision", "keygen", "--out", str(tmp_path / "stranger" / "k"))
    for name, key_file, serial, code in (("unsigned", None, BOX_ID, "unsigned"),
                                         ("foreign", tmp_path / "stranger" / "k.key", BOX_ID, "untrusted-signer"),
                                         ("other-box", tmp_path / "admin.key", "BOX-OTHER", "wrong-box")):
        report = apply_stick(state_dir, reset_stick(tmp_path, name, key_file, serial))
        assert (report["result"], report["code"]) == ("refused", code), report
        assert (state_dir / "box.toml").read_text() == before and token_labels(state_dir) == ["box-2027"]
        assert not (state_dir / "resets.log").exists()

    good = reset_stick(tmp_path, "reset", tmp_path / "admin.key")
    report = apply_stick(state_dir, good)
    assert report["result"] == "reset" and report["box_serial"] == BOX_ID, report
    assert any("box-2027" in action for action in report["actions"])
    assert "RESET" in (good / REPORT_DIR / "report.txt").read_text()
    assert esignbox("--state-dir", str(state_dir), "status").stdout.strip() == "not set up"
    assert not (state_dir / "box.toml").exists() and not (state_dir / "tokens").exists()
    assert pkeys.key_id(pkeys.trusted_key(state_dir)) == pkeys.key_id(admin_keys[0].public_key())
    entries = audit_log(state_dir)
    assert entries[0]["action"] == "box.reset" and entries[0]["details"]["keys_destroyed"] == ["box-2027"]
    assert entries[0]["details"]["bundle"] == report["bundle_digest"]
    assert audit.verify(Database(state_dir / "box.db").connect()).ok
    log = [json.loads(line) for line in (state_dir / "resets.log").read_text().splitlines()]
    assert [line["event"] for line in log] == ["started", "done"] and "box-2027" in log[0]["labels"]

    # The same stick again, or an older bundle, changes nothing on the fresh box.
    assert apply_stick(state_dir, good)["result"] == "already-applied"
    assert apply_stick(state_dir, stick)["code"] == "replay"
    assert len((state_dir / "resets.log").read_text().splitlines()) == 2
    # The same administrator provisions the box again.
    again = tmp_path / "again"
    make_bundle(again / BUNDLE_DIR, admin_keys[0], 101, box_name="after-reset")
    assert apply_stick(state_dir, again)["result"] == "applied"
    assert BoxConfig.load(state_dir).box.name == "after-reset"
