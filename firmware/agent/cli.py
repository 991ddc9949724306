"""`esignbox-agent sign`: sign a PDF file locally through a box, e.g. from a business system's job."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import InvalidRequest
from ..signing.levels import Level
from .local import AgentError, sign_pdf_locally


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="esignbox-agent", description="Sign PDFs locally; only their hash goes to the box")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("sign", help="sign IN and write the signed PDF to OUT")
    s.add_argument("--box", required=True, help="the box's URL, e.g. http://esignbox.lan:8080")
    s.add_argument("--api-key-file", required=True, type=Path, help="file holding the client's API key")
    s.add_argument("--level", default=Level.B_T.value, choices=[level.value for level in Level if level is not Level.B_LTA])
    s.add_argument("--reason")
    s.add_argument("--location")
    s.add_argument("--field", help="signature field name (default: the first free SignatureN)")
    s.add_argument("input", type=Path)
    s.add_argument("output", type=Path)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        api_key = args.api_key_file.read_text().strip()
        signed = sign_pdf_locally(
            args.input.read_bytes(), args.box, api_key, args.level,
            reason=args.reason, location=args.location, field_name=args.field,
        )
        args.output.write_bytes(signed)
    except (AgentError, InvalidRequest, OSError) as exc:
        print(f"esignbox-agent: {exc}", file=sys.stderr)
        return 1
    print(f"signed {args.input} -> {args.output} ({args.level})")
    return 0
