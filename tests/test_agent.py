"""The local e-Signing Agent against a real box: the PDF stays here, only its digest travels.

A recording HTTP proxy sits between agent and box, so the test sees every byte the agent sent.
"""

from __future__ import annotations

import base64
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from firmware.agent import sign_pdf_locally
from firmware.certificates import load_certificates
from firmware.errors import InvalidRequest
from firmware.store.db import Database

from .pdfs import MB, PAGE_TEXT, assert_trusted, assert_well_formed, make_pdf, reader, validate

AGENT = str(Path(sys.executable).with_name("esignbox-agent"))


class RecordingProxy:
    """Forwards every request to the box and keeps (method, path, body) of each."""

    def __init__(self, target: str) -> None:
        self.requests: list[tuple[str, str, bytes]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                proxy.requests.append((self.command, self.path, body))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                answer = requests.request(self.command, target + self.path, data=body, headers=headers, timeout=60)
                self.send_response(answer.status_code)
                self.send_header("Content-Type", answer.headers.get("Content-Type", "application/octet-stream"))
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = _forward

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def proxy(box) -> Iterator[RecordingProxy]:
    recording = RecordingProxy(box.url)
    yield recording
    recording.close()


@pytest.fixture(scope="module")
def document() -> bytes:
    return make_pdf(pages=2, size=MB, seed=7)


def _last_ledger_row(box_config, client_id: str) -> tuple:
    return tuple(Database(box_config.database).connect().execute(
        "SELECT kind, hash_algorithm, document_hash, level, profile FROM signatures WHERE client_id = ?"
        " ORDER BY id DESC LIMIT 1", (client_id,),
    ).fetchone())


@pytest.mark.parametrize("level", ["B-T", "B-LT"])
def test_agent_signs_locally_and_sends_only_the_hash(proxy, api_key, clients, box_config, document, tmp_path, level):
    signed = sign_pdf_locally(document, proxy.url, api_key, level, reason="Payroll run")

    assert_well_formed(signed, tmp_path)
    roots = load_certificates(box_config.trust_roots_file)
    assert_trusted(validate(signed, roots))
    if level == "B-LT":
        assert_trusted(validate(signed, roots, offline=True))
    [sig] = reader(signed).embedded_regular_signatures
    digest = sig.compute_digest()

    assert [(m, p) for m, p, _ in proxy.requests] == [("GET", "/v1/certificate"), ("POST", "/v1/signatures")]
    sent = proxy.requests[1][2]
    assert len(sent) < 300 and PAGE_TEXT.encode() not in sent
    assert base64.b64encode(digest) in sent
    client_id = clients.authenticate(api_key).id
    assert _last_ledger_row(box_config, client_id) == ("hash", "sha256", digest.hex(), level, "PAdES")


def test_agent_command_line(box, api_key, box_config, document, tmp_path):
    (tmp_path / "in.pdf").write_bytes(document)
    (tmp_path / "key").write_text(api_key + "\n")
    done = subprocess.run(
        [AGENT, "sign", "--box", box.url, "--api-key-file", str(tmp_path / "key"), "--level", "B-LT",
         str(tmp_path / "in.pdf"), str(tmp_path / "out.pdf")],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    signed = (tmp_path / "out.pdf").read_bytes()
    assert_well_formed(signed, tmp_path)
    assert_trusted(validate(signed, load_certificates(box_config.trust_roots_file)))

    (tmp_path / "wrong-key").write_text("esb_000000000000_not-a-key")
    refused = subprocess.run(
        [AGENT, "sign", "--box", box.url, "--api-key-file", str(tmp_path / "wrong-key"),
         str(tmp_path / "in.pdf"), str(tmp_path / "never.pdf")],
        capture_output=True, text=True, timeout=60,
    )
    assert refused.returncode == 1 and "401" in refused.stderr and not (tmp_path / "never.pdf").exists()


def test_agent_refuses_b_lta_without_calling_the_box(document):
    with pytest.raises(InvalidRequest, match="B-LTA"):
        sign_pdf_locally(document, "http://127.0.0.1:9", "unused", "B-LTA")
