"""PDF signing, PAdES B-B: `POST /v1/pdf/sign` against pyHanko on the same token and key directly.

"Direct" is what the API would cost without HTTP, the box's checks and its ledger: pyHanko's
PdfSigner with the box's TokenSigner, in the bench process. One request at a time, so the figures
are latencies; the runs of both alternate, so a burst of load elsewhere hits both alike.
"""

from __future__ import annotations

import contextlib
import io
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import requests
from boxes import DevBox, Server, progress

from firmware.certificates import load_certificates
from firmware.signing import TokenSigner
from hsm import Token

__all__ = ["PDF_SIZES", "bench_pdf", "percentile"]

# label, bytes, share of the runs (20 MB takes seconds per run through the API)
PDF_SIZES = (("10 KB", 10 * 1024, 1.0), ("1 MB", 1024 * 1024, 1.0), ("20 MB", 20 * 1024 * 1024, 0.25))


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile: with fewer than 100 values, p99 is the slowest."""
    ordered = sorted(values)
    return ordered[max(0, -(-len(ordered) * p // 100) - 1)]


def make_pdf(size: int) -> bytes:
    """A one-page PDF padded to about ``size`` bytes with a stream of random (incompressible) bytes.

    The filler hangs off the catalogue under a private key, so every reader keeps it but none
    renders it.
    """
    from pyhanko.pdf_utils import generic
    from pyhanko.pdf_utils.writer import PageObject, PdfFileWriter

    writer = PdfFileWriter()
    text = generic.StreamObject(stream_data=b"BT /F1 24 Tf 72 720 Td (E-signature Box bench) Tj ET")
    font = generic.DictionaryObject({
        generic.pdf_name("/Type"): generic.pdf_name("/Font"),
        generic.pdf_name("/Subtype"): generic.pdf_name("/Type1"),
        generic.pdf_name("/BaseFont"): generic.pdf_name("/Helvetica"),
    })
    resources = generic.DictionaryObject({
        generic.pdf_name("/Font"): generic.DictionaryObject({generic.pdf_name("/F1"): font}),
    })
    writer.insert_page(PageObject(writer.add_object(text), (0, 0, 595, 842), resources))
    filler = generic.StreamObject(stream_data=os.urandom(max(0, size - 2048)))
    writer.root[generic.pdf_name("/EsignboxBenchFiller")] = writer.add_object(filler)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def _api_signer(server: Server, api_key: str) -> Callable[[bytes], None]:
    session = requests.Session()
    session.headers.update({"Authorization": f"Bearer {api_key}", "Content-Type": "application/pdf"})

    def sign(pdf: bytes) -> None:
        response = session.post(f"{server.url}/v1/pdf/sign", params={"level": "B-B"}, data=pdf, timeout=300)
        if not response.ok or not response.content.startswith(b"%PDF"):
            raise RuntimeError(f"PDF endpoint failed: HTTP {response.status_code} {response.text[:200]!r}")

    return sign


@contextlib.contextmanager
def _direct_signer(box: DevBox) -> Iterator[Callable[[bytes], None]]:
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.sign import fields, signers

    config = box.config
    token = Token(config.token_config())
    signer = TokenSigner(token, config.key_label, load_certificates(config.chain_file), config.prefer_pss)
    metadata = signers.PdfSignatureMetadata(field_name="BenchSignature", subfilter=fields.SigSeedSubFilter.PADES)

    def sign(pdf: bytes) -> None:
        signers.PdfSigner(metadata, signer=signer).sign_pdf(IncrementalPdfFileWriter(io.BytesIO(pdf)),
                                                            output=io.BytesIO())

    try:
        yield sign
    finally:
        token.close()


def _seconds(function: Callable[[bytes], None], pdf: bytes) -> float:
    t0 = time.perf_counter()
    function(pdf)
    return time.perf_counter() - t0


def bench_pdf(box: DevBox, server: Server, runs: int) -> list[dict[str, Any]]:
    """Per size: p50/p99 milliseconds through the API and directly, and API p50 over direct p50."""
    rows = []
    api = _api_signer(server, box.api_key)
    with _direct_signer(box) as direct:
        warm = make_pdf(10 * 1024)
        direct(warm)  # imports, key handle, pyHanko's first-use caches
        for _ in range(2):  # the measured connection's worker: its first PDFs load and cache more
            api(warm)
        for label, size, share in PDF_SIZES:
            n = max(2, round(runs * share))
            progress(f"PDF: {label}, {n} runs each")
            pdf = make_pdf(size)
            api_s, direct_s = [], []
            for _ in range(n):
                api_s.append(_seconds(api, pdf))
                direct_s.append(_seconds(direct, pdf))
            row: dict[str, Any] = {"size": label, "bytes": len(pdf), "runs": n}
            for name, timings in (("api", api_s), ("direct", direct_s)):
                row[f"{name}_p50_ms"] = 1000 * percentile(timings, 50)
                row[f"{name}_p99_ms"] = 1000 * percentile(timings, 99)
            row["api_over_direct"] = row["api_p50_ms"] / row["direct_p50_ms"]
            rows.append(row)
    return rows
