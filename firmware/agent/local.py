"""Sign a PDF next to the business system; only the document's digest travels to the box.

pyHanko's interrupted signing flow does the PDF work here: it adds the signature field, reserves
/Contents and digests the signed byte ranges. The box's hash API (`POST /v1/signatures`,
profile PAdES) turns that digest into a CMS with the signature timestamp and, for B-LT, hands
back the revocation data, which the agent writes into the PDF's DSS. The document itself never
leaves this machine — the privacy bottom line of the e-Signing Agent.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NotRequired, TypedDict, TypeVar, cast

import requests
from asn1crypto import cms, crl, ocsp, pem, x509
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.sign.general import SigningError
from pyhanko.sign.signers.pdf_byterange import PreparedByteRangeDigest
from pyhanko.sign.signers.pdf_cms import ExternalSigner
from pyhanko.sign.signers.pdf_signer import PdfTBSDocument
from pyhanko.sign.validation import DocumentSecurityStore
from pyhanko_certvalidator.registry import SimpleCertificateStore

from ..errors import InvalidRequest
from ..signing.levels import Level, Profile, parse_enum
from ..signing.pdf_signing import PdfSignOptions, build_pdf_signer, check_options, pick_field
from ..signing.pdf_verify import read_pdf

# Room for the signature value in the size estimate: any RSA key up to 8192 bits, any ECDSA key.
_SIGNATURE_ROOM = 1024
# Room for the box's signature timestamp token (TSTInfo, TSA signature and certificates).
DEFAULT_TIMESTAMP_ROOM = 12 * 1024


T = TypeVar("T")


class AgentError(RuntimeError):
    """The box refused or could not be reached; nothing was written."""


class ValidationInfo(TypedDict):
    """The revocation data of a B-LT answer, each item base64 DER."""

    certificates: list[str]
    crls: list[str]
    ocsps: list[str]


class SignAnswer(TypedDict):
    """What ``POST /v1/signatures`` answers (firmware/api/signatures.py); validation_info at B-LT."""

    signature: str
    level: str
    profile: str
    validation_info: NotRequired[ValidationInfo]


@dataclass(frozen=True)
class _Prepared:
    digest: PreparedByteRangeDigest
    md_algorithm: str
    output: io.BytesIO


class BoxClient:
    """The two calls the agent makes: the public certificate chain, and hash signing."""

    def __init__(self, box_url: str, api_key: str, session: requests.Session | None = None, timeout: float = 60) -> None:
        self._url = box_url.rstrip("/")
        self._session = session or requests.Session()
        self._headers = {"Authorization": f"Bearer {api_key}"}
        self._timeout = timeout

    def _call(
        self, method: str, path: str, json: dict[str, str] | None = None, headers: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """The box's JSON answer, as parsed (JSON's values: checked where they are used)."""
        try:
            response = self._session.request(
                method, self._url + path, timeout=self._timeout, json=json, headers=headers
            )
        except requests.RequestException as exc:
            raise AgentError(f"cannot reach the box at {self._url}: {exc}") from exc
        body: dict[str, Any]
        try:
            body = response.json()
        except ValueError:
            body = {}
        if not response.ok:
            raise AgentError(
                f"the box refused ({response.status_code} {body.get('error', '')}): {body.get('message', response.text[:200])}"
            )
        return body

    def certificate_chain(self) -> list[x509.Certificate]:
        chain_pem = self._call("GET", "/v1/certificate").get("chain_pem", "")
        return [x509.Certificate.load(der) for _, _, der in pem.unarmor(chain_pem.encode(), multiple=True)]

    def sign_digest(self, md_algorithm: str, digest: bytes, level: Level) -> SignAnswer:
        request = {
            "hash_algorithm": md_algorithm,
            "hash": base64.b64encode(digest).decode("ascii"),
            "level": level.value,
            "profile": Profile.PADES.value,
        }
        answer = self._call("POST", "/v1/signatures", json=request, headers=self._headers)
        return cast(SignAnswer, answer)  # the box's documented answer; _check_cms checks what matters


def _b64_list(values: list[str], load: Callable[[bytes], T]) -> list[T]:
    return [load(base64.b64decode(v)) for v in values]


async def _prepare(pdf_in: bytes, options: PdfSignOptions, chain: list[x509.Certificate], timestamp_room: int) -> _Prepared:
    reader = read_pdf(pdf_in, len(pdf_in))
    registry = SimpleCertificateStore.from_certs(chain)  # type: ignore[no-untyped-call]  # unannotated upstream
    signer = ExternalSigner(chain[0], registry, signature_value=_SIGNATURE_ROOM)
    pdf_signer = build_pdf_signer(options, pick_field(reader, options), signer)
    md_algorithm = pdf_signer.default_md_for_signer or "sha256"
    # pyHanko's own estimate (a dry-run CMS) plus the timestamp the box will add; hex doubles it.
    dummy_digest = bytes(hashlib.new(md_algorithm).digest_size)
    dry_run = await signer.async_sign(dummy_digest, md_algorithm, use_pades=True, dry_run=True)
    reserved = 2 * (len(dry_run.dump()) + timestamp_room)
    prepared, tbs, output = await pdf_signer.async_digest_doc_for_signing(
        IncrementalPdfFileWriter.from_reader(reader), bytes_reserved=reserved
    )
    assert isinstance(output, io.BytesIO)  # given no output stream, pyHanko writes to a new BytesIO
    return _Prepared(prepared, tbs.md_algorithm, output)


def _check_cms(signature: cms.ContentInfo, digest: bytes) -> None:
    """Embed only a CMS that signs this document's digest."""
    signer_info = signature["content"]["signer_infos"][0]
    for attr in signer_info["signed_attrs"]:
        if attr["type"].native == "message_digest" and attr["values"][0].native == digest:
            return
    raise AgentError("the box's signature does not cover this document's digest")


async def _finish(prepared: _Prepared, signature: cms.ContentInfo, validation_info: ValidationInfo | None) -> None:
    """Completes ``prepared.output`` in place; returning its bytes from asyncio.run would cost a
    repr of the whole PDF on the main thread (Python 3.11's SIGINT handling)."""
    output = prepared.output
    try:
        await PdfTBSDocument.async_finish_signing(output, prepared.digest, signature)
    except SigningError as exc:  # the CMS outgrew the reserved /Contents
        raise AgentError(f"{str(exc).rstrip('.')}; sign again with a larger timestamp_room") from exc
    if validation_info is not None:
        DocumentSecurityStore.add_dss(
            output,
            sig_contents=None,
            certs=_b64_list(validation_info["certificates"], x509.Certificate.load),
            ocsps=_b64_list(validation_info["ocsps"], ocsp.OCSPResponse.load),
            crls=_b64_list(validation_info["crls"], crl.CertificateList.load),
        )


def sign_pdf_locally(
    pdf_in: bytes,
    box_url: str,
    api_key: str,
    level: Level | str = Level.B_T,
    *,
    reason: str | None = None,
    location: str | None = None,
    field_name: str | None = None,
    timestamp_room: int = DEFAULT_TIMESTAMP_ROOM,
    session: requests.Session | None = None,
) -> bytes:
    """PAdES-sign ``pdf_in`` at B-B, B-T or B-LT with the box's key; returns the signed PDF.

    B-LTA is refused: its document timestamp covers the whole file, which the box's hash API
    cannot provide without receiving the document.
    """
    level = parse_enum(Level, level, "level")
    if level is Level.B_LTA:
        raise InvalidRequest("the agent signs at B-B, B-T or B-LT; B-LTA needs POST /v1/pdf/sign")
    options = PdfSignOptions(level=level, reason=reason, location=location, field_name=field_name)
    check_options(options)
    box = BoxClient(box_url, api_key, session)
    prepared = asyncio.run(_prepare(pdf_in, options, box.certificate_chain(), timestamp_room))
    answer = box.sign_digest(prepared.md_algorithm, prepared.digest.document_digest, level)
    signature = cms.ContentInfo.load(base64.b64decode(answer["signature"]))
    _check_cms(signature, prepared.digest.document_digest)
    validation_info = answer.get("validation_info")
    if level.needs_revocation_data and validation_info is None:
        raise AgentError(f"the box sent no revocation data, so the PDF would not be {level.value}")
    asyncio.run(_finish(prepared, signature, validation_info))
    return prepared.output.getvalue()
