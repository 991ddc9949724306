"""The firmware's commands of `esignbox`: each a thin call into the services.

The entry point that adds the other faces (the admin console, USB provisioning) is esignbox.py at
the top level: nothing under firmware/ imports webui/ or provisioning/.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from asn1crypto import pem

from hsm import KEY_ALGORITHMS, KeyAlgorithm, Token

from .anchoring import anchor, anchor_and_log
from .config import BoxConfig, default_value, effective_value
from .durable import write_durable, write_new
from .health_board import PUBLISH_INTERVAL_S, HealthBoard
from .instance import hold_state_dir
from .lan_tls import tls_files
from .network import apply as apply_network
from .operations import box_state, configstore, reports, setup
from .operations.keys import (
    activation,
    build_csr,
    chain_details,
    chain_path,
    generate,
    install_chain,
    parse_subject,
    rollback_activation,
)
from .periodic import Periodic
from .serving import bind, serve
from .store import audit
from .store.clients import Client, ClientRegistry
from .store.db import Database
from .workers import Supervisor

if TYPE_CHECKING:  # the signing services load pyHanko: only `serve` needs them at run time
    from .box import Box
    from .contracts import ContractsService
    from .directory import DirectoryService
    from .signing.contract_signing import ContractSigning

log = logging.getLogger("esignbox")


def _config(args: argparse.Namespace) -> BoxConfig:
    return BoxConfig.load(Path(args.state_dir))


def cmd_init_dev(args: argparse.Namespace) -> None:
    from .devbox import init_dev  # optional heavy dependency: certomancer, for development boxes only

    config = init_dev(Path(args.state_dir), pki_port=args.pki_port, api_port=args.port,
                      key_algorithm=KeyAlgorithm(args.key_algorithm), console=True, directory=True)
    print(f"development box ready in {config.state_dir}")


def _dev_pki_port(config: BoxConfig) -> int:
    if config.pki_port is None:
        raise SystemExit(f"{config.state_dir} is not a development box: box.toml has no [dev] pki_port")
    return config.pki_port


def cmd_pki_serve(args: argparse.Namespace) -> None:
    from .devpki import DevPki, PkiServer  # optional heavy dependency: certomancer, for development boxes only

    config = _config(args)
    port = _dev_pki_port(config)
    pki = DevPki(config.state_dir / "pki", f"http://127.0.0.1:{port}")
    with PkiServer(pki, port) as server:
        print(f"dev PKI serving on {server.base_url}; Ctrl-C stops it")
        while True:
            time.sleep(3600)


def _dev_client_key(box: Box, state_dir: Path) -> Path:
    """In dev mode, one API client whose key sits in a 0600 file, so `make run` is usable at once."""
    path = state_dir / "secrets" / "dev-api-key"
    if not path.exists():
        _, api_key = box.clients.add(f"dev-{os.urandom(3).hex()}")
        write_new(path, (api_key + "\n").encode(), mode=0o600)
    return path


def cmd_serve(args: argparse.Namespace) -> None:
    """The supervising parent: the API's listener, the jobs that run once per box, the workers.

    Everything here runs once: the dev PKI and mailbox, the console, the mail and webhook
    senders, the directory's faces, the contract sweep and audit anchoring. The signing API
    itself is served by ``[api] workers`` processes (firmware/workers.py) on the sockets bound
    here, so a port in use is reported before anything else starts.
    """
    from .box import Box  # optional heavy dependency: the signing services load pyHanko; only `serve` needs them

    # systemd and the tests stop the box with SIGTERM; turn it into an orderly exit so the
    # workers, the dev PKI and nginx child processes are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with contextlib.ExitStack() as running:  # whatever was started is stopped, whatever fails
        running.enter_context(hold_state_dir(Path(args.state_dir)))
        pki_server = None
        if args.dev:
            # optional heavy dependency: certomancer, for development boxes only
            from .devbox import init_dev
            from .devmail import DevMailbox
            from .devpki import DevPki, PkiServer

            config = init_dev(Path(args.state_dir), pki_port=args.pki_port, api_port=args.port, console=True,
                              directory=True)
            port = _dev_pki_port(config)
            pki_server = PkiServer(DevPki(config.state_dir / "pki", f"http://127.0.0.1:{port}"), port)
            pki_server.start()
            running.callback(pki_server.stop)
            if config.dev.mailbox_port is not None:  # the dev box's mail relay: messages kept in var/dev-mail/
                running.enter_context(DevMailbox(config.state_dir, config.dev.mailbox_port))
        state_dir = Path(args.state_dir)
        config = setup.current_config(state_dir)
        host, port = args.host or config.api_host, args.port or config.api_port
        sockets = bind(host, port)  # a port in use is reported now, not after a set-up
        for sock in sockets:
            running.callback(sock.close)
        console = None
        if not setup.is_set_up(state_dir):
            console = _set_up(args, config, running)
        config = _config(args).serving_on(host, port)
        box = Box.open(config)
        if pki_server is not None:
            key_file = _dev_client_key(box, config.state_dir)
            print(
                f"\nE-signature Box serving on http://{host}:{port}  (dev PKI on {pki_server.base_url})\n"
                f"Try:\n  curl -s -H \"Authorization: Bearer $(cat {key_file})\" -H 'Content-Type: application/json' \\\n"
                f"    -d '{{\"hash_algorithm\":\"sha256\",\"hash\":\"'$(printf hello | openssl dgst -sha256 -binary | base64)'\","
                f"\"level\":\"B-T\"}}' http://{host}:{port}/v1/signatures\n",
                flush=True,
            )
        if console is not None:
            console.serving(box)
        elif config.console.enabled and not args.no_console and args.console is not None:
            try:
                running.callback(args.console(config, box).stop)
            except Exception as exc:  # the signing API serves even if the console cannot start
                log.error("admin console NOT started: %s", exc, exc_info=not isinstance(exc, ConsoleFailure))
        mail_sender = box.mail_sender()
        if mail_sender is not None:  # the outbox delivers while the box serves, and after a restart
            mail_sender.start()
            running.callback(mail_sender.stop)
        if box.directory is not None:
            _start_directory_faces(box, box.directory, config, running)
        if box.contracts is not None and box.contract_signing is not None:
            _start_contract_jobs(box, box.contracts, box.contract_signing, config, running)
        if box.timestamper is not None:
            timestamper = box.timestamper
            anchoring = Periodic("audit anchoring", config.anchor_interval_s,
                                 lambda: anchor_and_log(box.db, timestamper))
            anchoring.start()
            running.callback(anchoring.stop)
        board = HealthBoard(config.state_dir)
        board.publish(box.health_parts)  # before the workers start: they read which parts there are
        publishing = Periodic("health reports", PUBLISH_INTERVAL_S, lambda: board.publish(box.health_parts))
        publishing.start()
        running.callback(publishing.stop)
        Supervisor(config.state_dir, sockets, (host, port), config.api.workers).run()


SET_UP_POLL_S = 0.5  # how soon the signing service starts once the set-up (or a stick) finished it


def _set_up(args: argparse.Namespace, config: BoxConfig, running: contextlib.ExitStack) -> ConsoleHandle:
    """Set-up mode: the console alone, until the box is set up (firmware/operations/setup.py).

    Whatever finishes the set-up (the console's last step, a provisioning stick) ends the wait:
    the signing service then starts in this process, nobody restarts it by hand.
    """
    if args.no_console or args.console is None:
        raise SystemExit(f"{config.state_dir} is not set up (no signing key with its certificate chain): set it up"
                         " in the admin console (serve without --no-console) or with a provisioning stick")
    starter: ConsoleStarter = args.console
    console = starter(config, None)
    running.callback(console.stop)
    log.info("set-up mode: waiting for the set-up to finish")
    while not setup.is_set_up(config.state_dir):
        time.sleep(SET_UP_POLL_S)
    log.info("the box is set up: starting the signing service")
    return console


def cmd_serve_worker(args: argparse.Namespace) -> None:
    """One of `serve`'s worker processes (firmware/workers.py), on the listening sockets it inherited."""
    # optional heavy dependency: the signing services load pyHanko; only the workers need them
    from .operations.live import SigningService

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # the parent's stop: finish what is in flight, exit
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group; the parent stops us
    sockets = [socket.socket(fileno=fd) for fd in args.listen_fd]
    state_dir = Path(args.state_dir)
    service = SigningService.open(state_dir, (args.host, args.port))
    service.box.health_parts.update(HealthBoard(state_dir).reports())
    serve(service, service.box.config.api, sockets)


DIRECTORY_RECHECK_S = 24 * 3600.0  # revoked or expired certificates leave the directory within a day


def _start_directory_faces(box: Box, directory: DirectoryService, config: BoxConfig,
                           running: contextlib.ExitStack) -> None:
    """LDAP for mail clients and the inbound SMTP listener, when enabled; the nightly re-check."""
    # optional heavy dependency: pyHanko (signed mail) and aiosmtpd, which only `serve` needs
    from .inbound import InboundListener
    from .ldap import LdapServer
    from .operations.directory_links import InboundSubmissions, LdapDirectory

    if config.ldap.enabled:
        running.enter_context(LdapServer(config, LdapDirectory(directory, box.db, config.ldap.lookups_per_minute)))
    if config.inbound.enabled:
        listener = InboundListener(config.inbound, tls_files(config, config.inbound.tls_cert_file,
                                                             config.inbound.tls_key_file),
                                   InboundSubmissions(directory))
        listener.start()
        running.callback(listener.stop)
    recheck = Periodic("directory re-check", DIRECTORY_RECHECK_S, lambda: _recheck(directory))
    recheck.start()
    running.callback(recheck.stop)


CONTRACTS_SWEEP_S = 60.0  # overdue envelopes expire, and ones a crash left unfinished complete, within a minute


def _start_contract_jobs(box: Box, contracts: ContractsService, signing: ContractSigning, config: BoxConfig,
                         running: contextlib.ExitStack) -> None:
    """Envelopes' background work: party keys a crash left on the token are destroyed, webhooks
    are delivered, and every minute overdue envelopes expire and finished ones are completed."""
    left = signing.cleanup()
    if left:
        log.warning("contracts: destroyed %d party key(s) left on the token by an interrupted signature", left)
    from .webhooks import WebhookSender  # optional heavy dependency: requests, which only `serve` needs

    webhooks = WebhookSender(box.db, config.webhooks)
    webhooks.start()
    running.callback(webhooks.stop)
    sweep = Periodic("contracts sweep", CONTRACTS_SWEEP_S, lambda: _sweep(contracts), run_first=True)
    sweep.start()
    running.callback(sweep.stop)


def _sweep(contracts: ContractsService) -> None:
    completed = contracts.resume()
    if completed:
        log.info("contracts: completed %d envelope(s) an interruption had left", completed)


def _recheck(directory: DirectoryService) -> None:
    for change in directory.recheck():
        log.info("directory: certificate %s… unpublished: %s", change.fingerprint[:16], change.reason)


OPERATOR = "operator"  # the audit actor of every command run here
RESTART = "restart the service: a running box does not see this change until then"
# box.toml changes reach a running box's signing API at once (firmware/operations/live.py); the
# jobs its parent process started with the old configuration keep it until a restart.
FOLLOWED = ("a running box signs with it from its next request; restart the service so that its background jobs"
            " (the envelopes' sweep) use it too")


def _audit(config: BoxConfig, action: str, details: dict[str, Any]) -> None:
    audit.record(Database(config.database).connect(), audit.AuditEntry(OPERATOR, action, None, details))


def cmd_keygen(args: argparse.Namespace) -> None:
    config = _config(args)
    info, details = generate(Token(config.token_config()), args.label, args.algorithm)
    _audit(config, "key.generate", details)
    print(pem.armor("PUBLIC KEY", info.public_key_info).decode(), end="")


def cmd_csr(args: argparse.Namespace) -> None:
    config = _config(args)
    label, subject = args.label or config.key_label, parse_subject(args.subject)
    request = build_csr(Token(config.token_config()), label, subject)
    _audit(config, "key.csr", {"label": label, "subject": subject.human_friendly})
    write_durable(Path(args.out), request) if args.out else sys.stdout.write(request.decode())


def cmd_import_chain(args: argparse.Namespace) -> None:
    config = _config(args)
    label = args.label or config.key_label
    chain = install_chain(config.state_dir, Token(config.token_config()), label, Path(args.file).read_bytes())
    details = chain_details(label, chain)
    _audit(config, "chain.import", details)
    print(f"installed {len(chain)} certificate(s) for key {label!r}: {details['subject']}, serial {details['serial']}, "
          f"valid until {details['not_after'][:10]}")
    if label == config.key_label and chain_path(config.state_dir, label).resolve() == config.chain_file:
        print(f"it is the chain of the active key now: {RESTART}")
    else:
        print(f"make it the signing key with: esignbox activate {label}")


def _apply_activation(args: argparse.Namespace, rollback: bool) -> None:
    config = _config(args)
    token = Token(config.token_config())
    change = rollback_activation(config, token) if rollback else activation(config, token, args.label)
    done = configstore.update(config.state_dir, change.changes, actor=OPERATOR,
                              action="key.rollback" if rollback else "key.activate", details=change.details)
    where = f"box.toml generation {done.generation}" if done.generation is not None else "box.toml"
    print(f"key {change.label!r} (certificate serial {change.serial}) is now the signing key in {where}; "
          f"the previous one was {change.previous!r} (`esignbox rollback-key` goes back)")
    print(FOLLOWED)


def cmd_activate(args: argparse.Namespace) -> None:
    _apply_activation(args, rollback=False)


def cmd_rollback_key(args: argparse.Namespace) -> None:
    _apply_activation(args, rollback=True)


def _registry(args: argparse.Namespace) -> ClientRegistry:
    return ClientRegistry(Database(_config(args).database))


def _scopes(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip())


_CLIENT_COLUMNS = "{:12}  {:24}  {:9}  {:20}  {:16}  {}"
CLIENT_HEADER = _CLIENT_COLUMNS.format("ID", "NAME", "SCOPES", "CALLS", "RATES", "STATE")


def _show_client(client: Client) -> str:
    state = "active" if client.active else f"disabled {client.disabled_at}"
    calls = "unlimited" if client.calls_purchased is None else f"{client.calls_used}/{client.calls_purchased} calls"
    rates = ", ".join(f"{v}/{unit}" for v, unit in ((client.rate_per_minute, "min"), (client.rate_per_day, "day")) if v)
    return _CLIENT_COLUMNS.format(client.id, client.name, ",".join(client.scopes), calls, rates or "no rate limit", state)


def cmd_clients(args: argparse.Namespace) -> None:
    registry = _registry(args)
    if args.action == "add":
        calls = None if args.unlimited else (args.calls if args.calls is not None else _config(args).free_calls)
        client, api_key = registry.add(args.name, scopes=_scopes(args.scopes), calls=calls,
                                       rate_per_minute=args.rate_per_minute, rate_per_day=args.rate_per_day)
        print(f"{_show_client(client)}\nIts API key, shown only now:\n{api_key}")
    elif args.action == "list":
        print(CLIENT_HEADER)
        for client in registry.list():
            print(_show_client(client))
    elif args.action == "rotate":
        client, api_key = registry.rotate(args.client_id)
        print(f"new key for {client.id}; the old one no longer works. Shown only now:\n{api_key}")
    elif args.action == "limits":
        changes = {}
        if args.calls is not None:
            changes["calls"] = args.calls
        if args.unlimited:
            changes["calls"] = None
        if args.rate_per_minute is not None:
            changes["rate_per_minute"] = args.rate_per_minute or None
        if args.rate_per_day is not None:
            changes["rate_per_day"] = args.rate_per_day or None
        print(_show_client(registry.set_limits(args.client_id, add_calls=args.add_calls, **changes)))
    elif args.action == "scopes":
        print(_show_client(registry.set_scopes(args.client_id, _scopes(args.scopes))))
    else:
        print(_show_client(getattr(registry, args.action)(args.client_id)))


def cmd_usage(args: argparse.Namespace) -> None:
    rows = reports.usage(Database(_config(args).database), args.client, args.days)
    if args.json:
        print(json.dumps([asdict(row) for row in rows], indent=2))
        return
    print(f"{'DAY':10}  {'CLIENT':12}  {'NAME':24}  {'ENDPOINT':8}  SIGNATURES")
    for row in rows:
        print(f"{row.day:10}  {row.client_id:12}  {row.client_name or '':24}  {row.endpoint:8}"
              f"  {row.signatures:>10}")


def cmd_audit(args: argparse.Namespace) -> None:
    config = _config(args)
    db = Database(config.database)
    if args.action == "verify":
        report = reports.check_audit(db)
        if not report.ok:
            raise SystemExit("audit chain BROKEN: " + "; ".join(report.problems))
        print(f"audit chain intact: {report.checked} entries, head {report.head_seq} {report.head_hash}")
    elif args.action == "export":
        for item in reports.export_audit(db, args.after):
            print(json.dumps(item, sort_keys=True))
    else:
        from .signing.timestamps import FallbackTimeStamper  # optional heavy dependency: pyHanko's TSA client

        anchored = anchor(db, FallbackTimeStamper(config.tsa_urls))
        print(f"anchored at entry {anchored}" if anchored else "nothing new to anchor")


def _shown(value: Any) -> str:
    """A setting as a script reads it: TOML's true/false, a list's items separated by spaces, nothing for unset."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return " ".join(_shown(item) for item in value)
    return str(value)


def cmd_config(args: argparse.Namespace) -> None:
    state_dir = Path(args.state_dir)
    values = [default_value(key, state_dir) if args.default else effective_value(state_dir, key) for key in args.keys]
    for value in values:
        print(_shown(value))


def cmd_network(args: argparse.Namespace) -> None:
    for done in apply_network(_config(args).network, Path(args.run_dir)):
        print(done)


def cmd_status(args: argparse.Namespace) -> None:
    state = box_state.box_state(Path(args.state_dir))
    print(box_state.screen_text(state) if args.screen else state.state)


class ConsoleFailure(RuntimeError):
    """The console said why it could not start (no traceback needed in the log)."""


class ConsoleHandle(Protocol):
    """The admin console running in the supervising parent."""

    def serving(self, box: Box) -> None:
        """The box is set up: the console works on its signing service from now on."""

    def stop(self) -> None: ...


# Starts the admin console (in the supervising parent) for a serving box, or with None in set-up
# mode (firmware/operations/setup.py). A change the console makes to box.toml reaches the workers
# through the file itself (firmware/operations/live.py).
ConsoleStarter = Callable[[BoxConfig, "Box | None"], ConsoleHandle]


def parser(console: ConsoleStarter | None = None,
           extensions: Iterable[Callable[[Any], None]] = ()) -> argparse.ArgumentParser:
    """The operator's commands; ``console`` and ``extensions`` are the faces the entry point
    (esignbox.py) wires in: this package never imports them."""
    p = argparse.ArgumentParser(prog="esignbox", description="E-signature Box operator commands")
    p.add_argument("--state-dir", default=os.environ.get("ESIGNBOX_STATE_DIR", "var"),
                   help="the box's state directory with box.toml and box.db (default: $ESIGNBOX_STATE_DIR or var)")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("init-dev", help="create a dev token, key and PKI in the state directory")
    s.add_argument("--pki-port", type=int, help="port of the dev PKI servers (default 9180)")
    s.add_argument("--port", type=int, help="API port (default 8080); an existing dev box moves to it, links too")
    s.add_argument("--key-algorithm", choices=[a.value for a in KeyAlgorithm], default="rsa2048",
                   help="algorithm of the dev signing key (default rsa2048)")
    s.set_defaults(func=cmd_init_dev)

    s = sub.add_parser("serve", help="serve the signing API")
    s.add_argument("--dev", action="store_true", help="set up and start the dev token and PKI first")
    s.add_argument("--pki-port", type=int, help="with --dev, on a new state dir: port of the dev PKI (default 9180)")
    s.add_argument("--host", help="address the API listens on (default: [api] host in box.toml)")
    s.add_argument("--port", type=int, help="API port (default: [api] port in box.toml; with --dev the dev box"
                   " moves to it, links too)")
    s.add_argument("--no-console", action="store_true", help="do not start the admin console ([console] in box.toml)")
    s.set_defaults(func=cmd_serve, log_info=True, console=console)

    s = sub.add_parser("serve-worker", help=argparse.SUPPRESS)  # internal: started by `serve` (firmware/workers.py), not listed
    s.add_argument("--listen-fd", type=int, action="append", required=True, help="an inherited listening socket")
    s.add_argument("--host", required=True, help="the address the sockets serve (BoxConfig.serving_on)")
    s.add_argument("--port", type=int, required=True, help="the port the sockets serve")
    s.set_defaults(func=cmd_serve_worker, log_info=True)

    s = sub.add_parser("pki-serve", help="serve the dev PKI (TSA, OCSP, CRLs) in the foreground")
    s.set_defaults(func=cmd_pki_serve, log_info=True)

    s = sub.add_parser("keygen", help="generate a key pair on the token")
    s.add_argument("--label", required=True, help="label of the new key on the token, e.g. box-2027")
    s.add_argument("--algorithm", choices=KEY_ALGORITHMS, default="rsa2048", help="key type (default rsa2048)")
    s.set_defaults(func=cmd_keygen)

    s = sub.add_parser("csr", help="write a CSR signed by a token key")
    s.add_argument("--label", help="the token key to certify (default: the active signing key)")
    s.add_argument("--subject", required=True, help="e.g. 'CN=Signing Box,O=Example Ltd,C=BE'")
    s.add_argument("--out", help="write the CSR (PEM) to this file instead of standard output")
    s.set_defaults(func=cmd_csr)

    s = sub.add_parser("import-chain", help="install the CA-issued chain for a token key (checked against the key)")
    s.add_argument("file", help="PEM file with the issued certificate and its CA certificates (any order), or one DER")
    s.add_argument("--label", help="the token key the chain is for (default: the active signing key)")
    s.set_defaults(func=cmd_import_chain)

    s = sub.add_parser("activate", help="make a token key with an installed chain the signing key (then restart)")
    s.add_argument("label", help="the token key, e.g. box-2027")
    s.set_defaults(func=cmd_activate)

    s = sub.add_parser("rollback-key", help="make the key before the last activation the signing key again")
    s.set_defaults(func=cmd_rollback_key)

    s = sub.add_parser("clients", help="manage API clients, their scopes and quotas")
    csub = s.add_subparsers(dest="action", required=True)
    c = csub.add_parser("add", help="create a client and print its key (once)")
    c.add_argument("name", help="a name that says which system uses the key, e.g. billing")
    c.add_argument("--scopes", default="hash,pdf", help="comma-separated: hash, pdf, timestamp (default hash,pdf)")
    c.add_argument("--calls", type=int, help="calls it may make (default: [metering] free_calls)")
    c.add_argument("--unlimited", action="store_true", help="no total call limit")
    c.add_argument("--rate-per-minute", type=int, help="signatures allowed per minute")
    c.add_argument("--rate-per-day", type=int, help="signatures allowed per UTC day")
    csub.add_parser("list", help="every client with its scopes, quota, rates and state")
    for action, text in (("disable", "stop a client's key working (reversible)"),
                         ("enable", "let a disabled client sign again"),
                         ("rotate", "give a client a new key; the old one stops working at once")):
        csub.add_parser(action, help=text).add_argument("client_id", help="the client's id (see clients list)")
    c = csub.add_parser("limits", help="change quotas (0 removes a rate limit)")
    c.add_argument("client_id", help="the client's id (see clients list)")
    c.add_argument("--calls", type=int, help="set the total of purchased calls")
    c.add_argument("--add-calls", type=int, default=0, help="top up the purchased calls")
    c.add_argument("--unlimited", action="store_true", help="remove the total call limit")
    c.add_argument("--rate-per-minute", type=int, help="signatures allowed per minute (0: no limit)")
    c.add_argument("--rate-per-day", type=int, help="signatures allowed per UTC day (0: no limit)")
    c = csub.add_parser("scopes", help="set which endpoint families a client may use")
    c.add_argument("client_id", help="the client's id (see clients list)")
    c.add_argument("scopes", help="comma-separated: hash, pdf, timestamp")
    s.set_defaults(func=cmd_clients)

    s = sub.add_parser("usage", help="signatures per client, endpoint and day")
    s.add_argument("--client", help="only this client id")
    s.add_argument("--days", type=int, default=31, help="how many days back (default 31)")
    s.add_argument("--json", action="store_true", help="JSON instead of a table")
    s.set_defaults(func=cmd_usage)

    s = sub.add_parser("audit", help="verify, export or anchor the audit log")
    asub = s.add_subparsers(dest="action", required=True)
    asub.add_parser("verify", help="check the hash chain and its anchors; exit 1 on a break")
    asub.add_parser("export", help="JSON lines on stdout").add_argument(
        "--after", type=int, default=0, metavar="SEQ", help="only entries after this sequence number")
    asub.add_parser("anchor", help="timestamp the chain's head now")
    s.set_defaults(func=cmd_audit)

    s = sub.add_parser("config", help="read box.toml's settings as the box sees them")
    csub = s.add_subparsers(dest="action", required=True)
    c = csub.add_parser("get", help="print settings in force (defaults applied), one line each; exit 1 if box.toml is invalid")
    c.add_argument("keys", nargs="+", metavar="SECTION.KEY", help="e.g. api.port (a list prints space-separated)")
    c.add_argument("--default", action="store_true", help="the defaults, whatever box.toml says")
    s.set_defaults(func=cmd_config)

    s = sub.add_parser("network", help="apply [network] of box.toml to the system (esignbox-network.service)")
    nsub = s.add_subparsers(dest="action", required=True)
    c = nsub.add_parser("apply", help="write the systemd-networkd/timesyncd files and set the host name")
    c.add_argument("--run-dir", default="/run", help="where systemd reads the files from (default /run)")
    s.set_defaults(func=cmd_network)

    s = sub.add_parser("status", help="the box's state: not set up, ready, token missing, clock not synchronised")
    s.add_argument("--screen", action="store_true", help="the text for the box's screen (above its login prompt): state, console"
                   " addresses, its CA fingerprint, the one-time set-up code (firmware/operations/box_state.py)")
    s.set_defaults(func=cmd_status)

    for extend in extensions:
        extend(sub)
    return p


def _one_line(exc: Exception) -> str:
    """What went wrong, for a person: the message, not the exception's class."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return str(exc) or f"unexpected {type(exc).__name__} (ESIGNBOX_DEBUG=1 shows where)"


def run(commands: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse ``argv`` with ``commands`` and run the command: its result, or one line saying why not."""
    args = commands.parse_args(argv)
    # The services log what they do; an operator's one-off command should print only its result.
    level = logging.INFO if getattr(args, "log_info", False) else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        args.func(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # an operator gets one line, not a traceback
        if os.environ.get("ESIGNBOX_DEBUG"):
            raise
        print(f"esignbox: {_one_line(exc)}", file=sys.stderr)
        return 1
    return 0
