"""`esignbox`: the operator's command line. Each subcommand is a thin call into the services."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from pathlib import Path

from asn1crypto import pem

from hsm import KeyAlgorithm, Token

from .config import BoxConfig

log = logging.getLogger("esignbox")


def _config(args) -> BoxConfig:
    return BoxConfig.load(Path(args.state_dir))


def cmd_init_dev(args) -> None:
    from .devbox import init_dev

    config = init_dev(Path(args.state_dir), pki_port=args.pki_port, api_port=args.port,
                      key_algorithm=KeyAlgorithm(args.key_algorithm))
    print(f"development box ready in {config.state_dir}")


def cmd_pki_serve(args) -> None:
    from .devpki import DevPki, PkiServer

    config = _config(args)
    pki = DevPki(config.state_dir / "pki", f"http://127.0.0.1:{config.pki_port}")
    with PkiServer(pki, config.pki_port) as server:
        print(f"dev PKI serving on {server.base_url}; Ctrl-C stops it")
        while True:
            time.sleep(3600)


def _dev_client_key(box, state_dir: Path) -> Path:
    """In dev mode, one API client whose key sits in a 0600 file, so `make run` is usable at once."""
    path = state_dir / "secrets" / "dev-api-key"
    if not path.exists():
        _, api_key = box.clients.add(f"dev-{os.urandom(3).hex()}")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(api_key + "\n")
    return path


def cmd_serve(args) -> None:
    import waitress

    from .box import Box

    # systemd and the tests stop the box with SIGTERM; turn it into an orderly exit so the
    # dev PKI child process is stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    state_dir = Path(args.state_dir)
    pki_server = None
    if args.dev:
        from .devbox import init_dev
        from .devpki import DevPki, PkiServer

        config = init_dev(state_dir)
        pki_server = PkiServer(DevPki(config.state_dir / "pki", f"http://127.0.0.1:{config.pki_port}"), config.pki_port)
        pki_server.start()
    config = _config(args)
    box = Box.open(config)
    host, port = args.host or config.api_host, args.port or config.api_port
    if args.dev:
        key_file = _dev_client_key(box, config.state_dir)
        print(
            f"\nE-signature Box serving on http://{host}:{port}  (dev PKI on {pki_server.base_url})\n"
            f"Try:\n  curl -s -H \"Authorization: Bearer $(cat {key_file})\" -H 'Content-Type: application/json' \\\n"
            f"    -d '{{\"hash_algorithm\":\"sha256\",\"hash\":\"'$(printf hello | openssl dgst -sha256 -binary | base64)'\","
            f"\"level\":\"B-T\"}}' http://{host}:{port}/v1/signatures\n",
            flush=True,
        )
    try:
        waitress.serve(
            box.app(), host=host, port=port, threads=config.threads,
            max_request_body_size=config.max_pdf_bytes + 1024 * 1024, ident="esignbox",
        )
    finally:
        if pki_server is not None:
            pki_server.stop()


def cmd_keygen(args) -> None:
    token = Token(_config(args).token_config())
    key = token.generate_key(args.label, KeyAlgorithm(args.algorithm))
    print(pem.armor("PUBLIC KEY", key.public_key_info).decode(), end="")


def cmd_csr(args) -> None:
    from .keys import build_csr, parse_subject

    config = _config(args)
    request = build_csr(Token(config.token_config()), args.label or config.key_label, parse_subject(args.subject))
    Path(args.out).write_bytes(request) if args.out else sys.stdout.write(request.decode())


def cmd_import_chain(args) -> None:
    from .box import load_certificates
    from .keys import check_chain

    config = _config(args)
    chain = load_certificates(Path(args.file))
    check_chain(Token(config.token_config()), config.key_label, chain)
    config.chain_file.write_bytes(b"".join(pem.armor("CERTIFICATE", c.dump()) for c in chain))
    print(f"imported {len(chain)} certificate(s) for key {config.key_label!r}; restart the service")


def cmd_clients(args) -> None:
    from .store.clients import ClientRegistry
    from .store.db import Database

    registry = ClientRegistry(Database(_config(args).database))
    if args.action == "add":
        client, api_key = registry.add(args.name)
        print(f"client {client.id} ({client.name}) created. Its API key, shown only now:\n{api_key}")
    elif args.action == "list":
        for client in registry.list():
            state = "active" if client.active else f"disabled {client.disabled_at}"
            print(f"{client.id}  {client.name:30}  created {client.created_at}  {state}")
    else:
        client = registry.disable(args.client_id)
        print(f"client {client.id} disabled")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="esignbox", description="E-signature Box operator commands")
    p.add_argument("--state-dir", default=os.environ.get("ESIGNBOX_STATE_DIR", "var"))
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("init-dev", help="create a dev token, key and PKI in the state directory")
    s.add_argument("--pki-port", type=int, help="port of the dev PKI servers (default 9180)")
    s.add_argument("--port", type=int, default=8080)
    s.add_argument("--key-algorithm", choices=[a.value for a in KeyAlgorithm], default="rsa2048")
    s.set_defaults(func=cmd_init_dev)

    s = sub.add_parser("serve", help="serve the signing API")
    s.add_argument("--dev", action="store_true", help="set up and start the dev token and PKI first")
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("pki-serve", help="serve the dev PKI (TSA, OCSP, CRLs) in the foreground")
    s.set_defaults(func=cmd_pki_serve)

    s = sub.add_parser("keygen", help="generate a key pair on the token")
    s.add_argument("--label", required=True)
    s.add_argument("--algorithm", choices=[a.value for a in KeyAlgorithm], default="rsa2048")
    s.set_defaults(func=cmd_keygen)

    s = sub.add_parser("csr", help="write a CSR signed by a token key")
    s.add_argument("--label")
    s.add_argument("--subject", required=True, help="e.g. 'CN=Signing Box,O=Example Ltd,C=BE'")
    s.add_argument("--out")
    s.set_defaults(func=cmd_csr)

    s = sub.add_parser("import-chain", help="install the CA-issued chain (leaf first) for the signing key")
    s.add_argument("file")
    s.set_defaults(func=cmd_import_chain)

    s = sub.add_parser("clients", help="manage API clients")
    csub = s.add_subparsers(dest="action", required=True)
    c = csub.add_parser("add")
    c.add_argument("name")
    csub.add_parser("list")
    c = csub.add_parser("disable")
    c.add_argument("client_id")
    s.set_defaults(func=cmd_clients)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parser().parse_args(argv)
    try:
        args.func(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # an operator gets one line, not a traceback
        if os.environ.get("ESIGNBOX_DEBUG"):
            raise
        print(f"esignbox: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0
