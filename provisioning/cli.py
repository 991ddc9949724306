"""`esignbox provision …`: the administrator's commands (keygen, make-bundle, sign-bundle) and the
box's (enroll, apply, watch, status, recover, rollback). Registered by the entry point, esignbox.py."""

from __future__ import annotations

import argparse
import getpass
import hashlib
import json
import secrets
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyudev

from firmware.durable import write_new
from hsm import KEY_ALGORITHMS

from . import bundle as bundle_mod
from . import keys as pkeys
from .apply import TokenAccess, recover, rollback
from .enrol import ENROL_DIR, write_enrolment
from .errors import ProvisioningRefused
from .manifest import FORMAT
from .report import write_report
from .service import Outcome, provision_copied
from .state import ProvisioningState, box_id_path
from .usb import DEFAULT_FILESYSTEMS, DEFAULT_LABELS, StickWatcher


def _read_secret_file(path: str | None) -> bytes | None:
    if not path:
        return None
    return Path(path).read_text().rstrip("\r\n").encode()


# -- on the administrator's PC -------------------------------------------------------------------------

def cmd_keygen(args: argparse.Namespace) -> None:
    key = pkeys.generate(args.algorithm)
    prefix = Path(args.out)
    private, public = prefix.with_name(prefix.name + ".key"), prefix.with_name(prefix.name + ".pub")
    if private.exists() or public.exists():
        raise SystemExit(f"{private} or {public} exists; refusing to overwrite a provisioning key")
    passphrase = _read_secret_file(args.passphrase_file)
    if passphrase is None:
        print("warning: the private key is not encrypted (use --passphrase-file)", file=sys.stderr)
    write_new(private, pkeys.private_pem(key, passphrase), mode=0o600)
    write_new(public, pkeys.public_pem(key.public_key()))
    print(f"private key: {private} (keep it off the box)\npublic key:  {public}\n"
          f"key id:      {pkeys.key_id(key.public_key())}")


def _client_entry(text: str) -> tuple[dict[str, Any], str]:
    name, _, rest = text.partition(":")
    scopes_text, _, calls_text = rest.partition(":")
    client_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    entry: dict[str, Any] = {"id": client_id, "name": name, "key_sha256": hashlib.sha256(secret.encode()).hexdigest()}
    if scopes_text:
        entry["scopes"] = [s for s in scopes_text.split(",") if s]
    if calls_text:
        entry["calls"] = None if calls_text == "unlimited" else int(calls_text)
    return entry, f"esb_{client_id}_{secret}"


def cmd_make_bundle(args: argparse.Namespace) -> None:
    manifest: dict[str, Any] = json.loads(Path(args.settings).read_text()) if args.settings else {}
    now = datetime.now(UTC).replace(microsecond=0)
    manifest.update({
        "format": FORMAT,
        "counter": args.counter if args.counter is not None else int(time.time()),
        "created_at": now.isoformat(),
        "expires_at": (now + timedelta(days=args.valid_days)).isoformat(),
    })
    files: dict[str, bytes] = {}
    if bool(args.box_serial) == bool(args.any_box):
        raise SystemExit("name the box the bundle is for with --box-serial, or make it apply to every box"
                         " trusting the key with --any-box (one of the two)")
    if args.box_serial:
        manifest["box_serial"] = args.box_serial
    else:
        manifest["any_box"] = True
    if args.box_name:
        manifest["box_name"] = args.box_name
    network = manifest.get("network", {})
    for flag, name in (("hostname", "hostname"), ("address", "address"), ("gateway", "gateway"),
                       ("api_host", "api_host"), ("api_port", "api_port")):
        if getattr(args, flag) is not None:
            network[name] = getattr(args, flag)
    if args.dhcp:
        network["mode"] = "dhcp"
    elif args.address:
        network["mode"] = "static"
    if args.dns:
        network["dns"] = args.dns
    if args.ntp:
        network["ntp"] = args.ntp
    if network:
        manifest["network"] = network
    setup_code = args.setup_code
    if args.generate_setup_code:
        alphabet = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"  # as the console's own codes: no 0/O, 1/I/L
        chars = "".join(secrets.choice(alphabet) for _ in range(12))
        setup_code = "-".join(chars[i:i + 4] for i in range(0, 12, 4))
    if args.reset_admin and not setup_code:
        raise SystemExit("--reset-admin needs --setup-code or --generate-setup-code: the code the new administrator enters")
    if setup_code:
        manifest["admin"] = {"setup_code": setup_code, **({"reset_admin": True} if args.reset_admin else {})}
    services = manifest.get("services", {})
    for flag in ("tsa_urls", "ocsp_urls", "crl_urls"):
        if getattr(args, flag):
            services[flag] = getattr(args, flag)
    if services:
        manifest["services"] = services
    keys_shown = []
    if args.client:
        clients = manifest.setdefault("clients", [])
        for text in args.client:
            entry, api_key = _client_entry(text)
            clients.append(entry)
            keys_shown.append((entry["name"], api_key))
    if args.trust_roots:
        files["trust-roots.pem"] = Path(args.trust_roots).read_bytes()
        manifest["trust_roots"] = "trust-roots.pem"
    if args.chain:
        if not args.chain_key_label:
            raise SystemExit("--chain needs --chain-key-label (the token key the chain certifies)")
        files["box-chain.pem"] = Path(args.chain).read_bytes()
        manifest["signing_chain"] = {"key_label": args.chain_key_label, "file": "box-chain.pem"}
    if args.key_request:
        if not args.subject:
            raise SystemExit("--key-request needs --subject, e.g. 'CN=Signing Box,O=Example Ltd,C=BE'")
        manifest["key_request"] = {"label": args.key_request, "algorithm": args.key_algorithm, "subject": args.subject}
    out = Path(args.out)
    bundle_mod.write_dir(out, manifest, files)
    print(f"unsigned bundle written to {out} (counter {manifest['counter']}, expires {manifest['expires_at']});"
          f" sign it with `esignbox provision sign-bundle {out} --key …`")
    if args.generate_setup_code:
        print(f"admin console set-up code (first set-up only; keep the stick safe until then): {setup_code}")
    if keys_shown:
        lines = [f"{name}\t{key}" for name, key in keys_shown]
        if args.keys_out:
            write_new(Path(args.keys_out), ("\n".join(lines) + "\n").encode(), mode=0o600)
            print(f"API keys of the new clients written to {args.keys_out} (0600)")
        print("API keys, shown only now; each works once the box has applied the bundle and created that client:")
        print("\n".join(lines))


def cmd_make_reset(args: argparse.Namespace) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    manifest = {"format": FORMAT, "counter": args.counter if args.counter is not None else int(time.time()),
                "created_at": now.isoformat(), "expires_at": (now + timedelta(days=args.valid_days)).isoformat(),
                "box_serial": args.box_serial, "factory_reset": True}
    bundle_mod.write_dir(Path(args.out), manifest, {})
    print(f"unsigned reset bundle for box {args.box_serial} written to {args.out}; sign it with"
          f" `esignbox provision sign-bundle {args.out} --key …`. The box it is for destroys its keys and forgets"
          " everything but its serial, the provisioning key and its resets.log")


def cmd_sign_bundle(args: argparse.Namespace) -> None:
    passphrase = _read_secret_file(args.passphrase_file)
    data = Path(args.key).read_bytes()
    try:
        key = pkeys.load_private(data, passphrase)
    except TypeError:  # encrypted and no passphrase given
        key = pkeys.load_private(data, getpass.getpass("provisioning key passphrase: ").encode())
    raw = bundle_mod.sign_dir(Path(args.bundle), key)
    print(f"signed {args.bundle} with key {pkeys.key_id(key.public_key())[:16]}… (bundle {raw.digest[:16]}…)")
    if args.tar:
        bundle_mod.write_tar(raw, Path(args.tar))
        print(f"tar written to {args.tar}: copy it to the root of a stick labelled ESIGNBOX")
    else:
        print(f"copy the directory to the root of a stick labelled ESIGNBOX as {bundle_mod.BUNDLE_DIR}/")


def cmd_make_enrolment(args: argparse.Namespace) -> None:
    try:
        target = write_enrolment(Path(args.out), Path(args.key).read_bytes(), args.code)
    except ValueError as exc:
        raise SystemExit(f"{args.key}: {exc}") from exc
    print(f"enrolment written to {target}: copy {ENROL_DIR}/ to the root of a stick labelled ESIGNBOX and put it into"
          " the box while its screen shows that set-up code (it works once, on a box that trusts no key yet)")


# -- on the box -------------------------------------------------------------------------------------------

def _print_report(outcome: Outcome) -> None:
    print(outcome.report.to_text(), end="")


def cmd_enroll(args: argparse.Namespace) -> None:
    key_id, changed = pkeys.enroll(Path(args.state_dir), Path(args.public_key).read_bytes(), replace=args.replace)
    print(f"provisioning key {key_id} {'enrolled' if changed else 'was already enrolled'}")


def cmd_apply(args: argparse.Namespace) -> None:
    if args.report_dir and not Path(args.report_dir).is_dir():
        raise SystemExit(f"esignbox: report directory {args.report_dir} does not exist; nothing was applied")
    outcome = provision_copied(Path(args.state_dir), Path(args.bundle))
    if args.report_dir:
        write_report(Path(args.report_dir), outcome.report, outcome.files)
    _print_report(outcome)
    if not outcome.report.ok:
        raise SystemExit(2 if outcome.report.result == "refused" else 1)


def _watcher(args: argparse.Namespace) -> StickWatcher:
    return StickWatcher(
        Path(args.state_dir),
        labels=tuple(args.label or DEFAULT_LABELS),
        filesystems=tuple(args.filesystem or DEFAULT_FILESYSTEMS),
        require_usb=not args.any_bus,
        mount_root=Path(args.mount_root),
        source=getattr(args, "source", "auto"),
    )


def cmd_stick(args: argparse.Namespace) -> None:
    watcher = _watcher(args)
    device = pyudev.Devices.from_device_file(watcher.context(), args.device)
    info = watcher.classify(device)
    if isinstance(info, str):
        raise SystemExit(f"{args.device} is not a provisioning stick: {info}")
    outcome = watcher.handle(info)
    _print_report(outcome)
    if not outcome.report.ok:
        raise SystemExit(2 if outcome.report.result == "refused" else 1)


def cmd_watch(args: argparse.Namespace) -> None:
    state = ProvisioningState(Path(args.state_dir))
    with state.locked():
        recover(state)
    _watcher(args).run()


def _box_serial(state_dir: Path) -> str | None:
    """The serial bundles are bound to (box-id file, else the token's), or None if the token is unreachable."""
    tokens = TokenAccess(state_dir)
    try:
        return tokens.serial()
    except ProvisioningRefused:
        return None
    finally:
        tokens.close()


def cmd_status(args: argparse.Namespace) -> None:
    state = ProvisioningState(Path(args.state_dir))
    with state.locked():
        recovered = recover(state)
    info: dict[str, Any] = {"state_dir": str(state.state_dir)}
    try:
        info["trusted_key_id"] = pkeys.key_id(pkeys.trusted_key(state.state_dir))
    except ProvisioningRefused as exc:
        info["trusted_key_id"] = None
        info["trusted_key_problem"] = exc.reason
    record = state.record()
    info["last_counter"] = record.counter if record else None
    info["generation"] = state.current_generation()
    info["previous_generation"] = state.previous_generation()
    info["config_is_provisioned"] = state.config_is_linked()
    info["box_id_file"] = box_id_path(state.state_dir).read_text().strip() if box_id_path(state.state_dir).exists() else None
    info["box_serial"] = _box_serial(state.state_dir)  # what make-bundle --box-serial must name
    info["pending_csrs"] = sorted(p.name for p in state.csr_dir.glob("*.csr")) if state.csr_dir.exists() else []
    if recovered:
        info["recovered"] = recovered
    print(json.dumps(info, indent=2))


def cmd_recover(args: argparse.Namespace) -> None:
    state = ProvisioningState(Path(args.state_dir))
    with state.locked():
        done = recover(state)
    print(done or "nothing to recover")


def cmd_rollback(args: argparse.Namespace) -> None:
    state = ProvisioningState(Path(args.state_dir))
    with state.locked():
        recover(state)
        rolled = rollback(state)
    print(f"{rolled.summary}\ngeneration {rolled.generation} is current again; restart the signing service")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The `provision` command group, added to `esignbox`'s subcommands."""
    s = sub.add_parser("provision", help="USB-stick provisioning: bundles, keys, the watcher")
    psub = s.add_subparsers(dest="action", required=True)

    c = psub.add_parser("keygen", help="(admin PC) create the provisioning key pair")
    c.add_argument("--out", required=True, help="path prefix: writes PREFIX.key (0600) and PREFIX.pub")
    c.add_argument("--algorithm", choices=pkeys.ALGORITHMS, default="ed25519", help="key type (default ed25519)")
    c.add_argument("--passphrase-file", help="encrypt the private key with the passphrase in this file")
    c.set_defaults(func=cmd_keygen)

    c = psub.add_parser("make-bundle", help="(admin PC) write an unsigned bundle directory")
    c.add_argument("--out", required=True, help="bundle directory to write")
    c.add_argument("--settings", help="JSON with manifest sections (box_name, network, services, clients, …)")
    c.add_argument("--counter", type=int, help="replay counter, above the last one applied (default: Unix time)")
    c.add_argument("--valid-days", type=float, default=7, help="the bundle expires after this (default 7)")
    c.add_argument("--box-serial", help="bind the bundle to one box (its token serial or box-id); or --any-box")
    c.add_argument("--any-box", action="store_true",
                   help="let every box that trusts the key apply the bundle (the report and audit log say so)")
    c.add_argument("--box-name", help="the box's display name ([box] name)")
    c.add_argument("--hostname", help="the box's host name on the LAN")
    c.add_argument("--dhcp", action="store_true", help="take the address from DHCP")
    c.add_argument("--address", help="static address with prefix, e.g. 192.0.2.10/24")
    c.add_argument("--gateway", help="default gateway, with --address")
    c.add_argument("--dns", action="append", help="DNS server address (repeat for more)")
    c.add_argument("--ntp", action="append", help="NTP server (repeat for more)")
    c.add_argument("--api-host", help="address the signing API listens on ([api] host)")
    c.add_argument("--api-port", type=int, help="port of the signing API ([api] port)")
    c.add_argument("--setup-code", help="one-time admin console set-up code (first set-up of a box only)")
    c.add_argument("--generate-setup-code", action="store_true", help="make a set-up code and print it")
    c.add_argument("--reset-admin", action="store_true",
                   help="with a set-up code: remove the administrator first (a forgotten console password)")
    c.add_argument("--tsa-url", dest="tsa_urls", action="append", help="RFC 3161 TSA URL, tried in order (repeat)")
    c.add_argument("--ocsp-url", dest="ocsp_urls", action="append", help="OCSP responder URL (repeat)")
    c.add_argument("--crl-url", dest="crl_urls", action="append", help="CRL URL (repeat)")
    c.add_argument("--client", action="append", help="NAME[:SCOPES[:CALLS|unlimited]]; a key is generated here")
    c.add_argument("--keys-out", help="also write the generated API keys to this new 0600 file")
    c.add_argument("--trust-roots", help="PEM file of trusted root certificates")
    c.add_argument("--chain", help="PEM chain issued for a token key, leaf first")
    c.add_argument("--chain-key-label", help="the token key the chain certifies")
    c.add_argument("--key-request", metavar="LABEL", help="ask the box to generate this key and write its CSR")
    c.add_argument("--key-algorithm", default="ec-p256", choices=KEY_ALGORITHMS,
                   help="algorithm of the key the box generates (default ec-p256)")
    c.add_argument("--subject", help="CSR subject, e.g. 'CN=Signing Box,O=Example Ltd,C=BE'")
    c.set_defaults(func=cmd_make_bundle)

    c = psub.add_parser("make-reset", help="(admin PC) write an unsigned factory-reset bundle for one box")
    c.add_argument("--out", required=True, help="bundle directory to write")
    c.add_argument("--box-serial", required=True, help="the box to reset (a reset is never for any box)")
    c.add_argument("--counter", type=int, help="replay counter, above the last one applied (default: Unix time)")
    c.add_argument("--valid-days", type=float, default=1, help="the reset bundle expires after this (default 1)")
    c.set_defaults(func=cmd_make_reset)

    c = psub.add_parser("sign-bundle", help="(admin PC) sign a bundle directory with the provisioning key")
    c.add_argument("bundle", help="the bundle directory make-bundle wrote")
    c.add_argument("--key", required=True, help="the provisioning private key (PEM)")
    c.add_argument("--passphrase-file", help="file holding the private key's passphrase")
    c.add_argument("--tar", help="also write the signed bundle as one tar file")
    c.set_defaults(func=cmd_sign_bundle)

    c = psub.add_parser("make-enrolment", help="(admin PC) write an enrolment stick: public key + the box's set-up code")
    c.add_argument("--key", required=True, help="the PREFIX.pub file `provision keygen` wrote")
    c.add_argument("--code", required=True, help="the one-time set-up code the box's screen shows")
    c.add_argument("out", help="the stick's root (or a directory to copy there): esignbox-enrol/ is written in it")
    c.set_defaults(func=cmd_make_enrolment)

    c = psub.add_parser("enroll", help="(box) trust this provisioning public key; the first one wins")
    c.add_argument("public_key", help="the PREFIX.pub file `provision keygen` wrote")
    c.add_argument("--replace", action="store_true", help="replace a different key already enrolled")
    c.set_defaults(func=cmd_enroll)

    c = psub.add_parser("apply", help="(box) verify and apply a bundle directory, tar or stick root")
    c.add_argument("bundle", help="bundle directory, bundle tar, or the root of a mounted stick")
    c.add_argument("--report-dir", help="also write esignbox-report/ into this directory")
    c.set_defaults(func=cmd_apply)

    def stick_options(c: argparse.ArgumentParser) -> None:
        c.add_argument("--label", action="append", help="filesystem label to accept (default ESIGNBOX)")
        c.add_argument("--filesystem", action="append", help="filesystem type to accept (default vfat, exfat)")
        c.add_argument("--mount-root", default="/run/esignbox/media", help="where sticks are mounted read-only")
        c.add_argument("--any-bus", action="store_true", help="accept non-USB block devices (testing only)")

    c = psub.add_parser("watch", help="(box, root) watch for provisioning sticks and apply their bundles")
    stick_options(c)
    c.add_argument("--source", choices=["auto", "udev", "kernel"], default="auto",
                   help="where device events come from (default: udev if running, else kernel uevents)")
    c.set_defaults(func=cmd_watch, log_info=True)

    c = psub.add_parser("stick", help="(box, root) provision from one stick now, e.g. from a udev-started unit")
    c.add_argument("device", help="block device, e.g. /dev/sdb1")
    stick_options(c)
    c.set_defaults(func=cmd_stick)

    psub.add_parser("status", help="(box) trusted key, last counter, generations").set_defaults(func=cmd_status)
    psub.add_parser("recover", help="(box) finish or undo an interrupted apply").set_defaults(func=cmd_recover)
    psub.add_parser("rollback", help="(box) make the previous configuration current again").set_defaults(
        func=cmd_rollback)
