"""A PDF's signatures judged the way EU validators report them: an ETSI TS 119 102-2 validation report.

pyHanko does the work: its AdES validation (ETSI EN 319 102-1) and its report writer
(`pyhanko.sign.validation.report`, which needs pyHanko's `etsi` extra). This module picks the
validation process for each signature from the evidence in the PDF — basic without a
timestamp, with-time for a signature timestamp, LTA when a document timestamp follows that — and
merges pyHanko's one-signature reports into one document: a SignatureValidationReport per
signature, each validation object once. Document timestamps are not reported on their own;
they are the proof of existence the LTA process uses.
"""

from __future__ import annotations

import asyncio

from lxml import etree
from pyhanko.pdf_utils.misc import PdfError
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.validation import EmbeddedPdfSignature
from pyhanko.sign.validation.ades import (
    AdESBasicValidationResult,
    ades_basic_validation,
    ades_lta_validation,
    ades_with_time_validation,
)
from pyhanko.sign.validation.generic_cms import extract_tst_data_iter
from pyhanko.sign.validation.policy_decl import PdfSignatureValidationSpec, SignatureValidationSpec
from pyhanko.sign.validation.report.tools import generate_report
from pyhanko.sign.validation.status import PdfSignatureStatus, SignatureStatus
from pyhanko_certvalidator.context import CertValidationPolicySpec
from pyhanko_certvalidator.policy_decl import CertRevTrustPolicy, RevocationCheckingPolicy, RevocationCheckingRule
from pyhanko_certvalidator.registry import SimpleTrustManager

from ..errors import InvalidRequest
from .pdf_verify import PDF_DAMAGE, PdfInvalid, read_pdf
from .revocation import RevocationService

__all__ = ["ETSI_NAMESPACE", "etsi_report"]

ETSI_NAMESPACE = "http://uri.etsi.org/19102/v1.2.1#"
_VR = f"{{{ETSI_NAMESPACE}}}"


def _spec(revocation: RevocationService) -> PdfSignatureValidationSpec:
    """The box's trust roots; revocation data required for every certificate (hard-fail)."""
    required = RevocationCheckingRule.CRL_OR_OCSP_REQUIRED
    policy = CertValidationPolicySpec(
        trust_manager=SimpleTrustManager.build(trust_roots=revocation.trust_roots),
        revinfo_policy=CertRevTrustPolicy(
            RevocationCheckingPolicy(ee_certificate_rule=required, intermediate_ca_cert_rule=required)
        ),
    )
    return PdfSignatureValidationSpec(SignatureValidationSpec(cert_validation_policy=policy))


async def _validate(sig: EmbeddedPdfSignature, reader: PdfFileReader, spec: PdfSignatureValidationSpec) -> AdESBasicValidationResult[SignatureStatus]:
    common = dict(
        signed_data=sig.signed_data, validation_spec=spec.signature_validation_spec, raw_digest=sig.compute_digest()
    )
    if next(extract_tst_data_iter(sig.signer_info, signed=False), None) is not None:
        if any(ts.signed_revision > sig.signed_revision for ts in reader.embedded_timestamp_signatures):
            return await ades_lta_validation(sig, spec)  # pyHanko's LTA process wants a signature timestamp too
        sig.compute_integrity_info()  # type: ignore[no-untyped-call]  # pyHanko leaves it unannotated
        return await ades_with_time_validation(
            **common, extra_status_kwargs=sig.summarise_integrity_info(), status_cls=PdfSignatureStatus
        )
    # pyHanko 0.38's basic process builds its status without the PDF's integrity fields, so
    # none are passed; the report it writes needs none of them.
    return await ades_basic_validation(**common)


def _merge(reports: list[bytes]) -> bytes:
    """One ValidationReport: every SignatureValidationReport, every validation object once."""
    first, *others = (etree.fromstring(report) for report in reports)
    objects = first.find(f"{_VR}SignatureValidationObjects")
    known = {vo.get("id") for vo in objects} if objects is not None else set()
    anchor = first.findall(f"{_VR}SignatureValidationReport")[-1]
    for other in others:
        for report in reversed(other.findall(f"{_VR}SignatureValidationReport")):
            anchor.addnext(report)
        other_objects = other.find(f"{_VR}SignatureValidationObjects")
        for vo in other_objects if other_objects is not None else ():
            if vo.get("id") not in known:
                known.add(vo.get("id"))
                objects.append(vo)
    merged: bytes = etree.tostring(first, xml_declaration=True, encoding="UTF-8", pretty_print=True)
    return merged


async def _reports(reader: PdfFileReader, revocation: RevocationService) -> list[bytes]:
    spec = _spec(revocation)
    reports = []
    for sig in reader.embedded_regular_signatures:
        try:
            result = await _validate(sig, reader, spec)
        except (ValueError, PdfError) as exc:  # a damaged signature dictionary or CMS blob
            raise PdfInvalid(f"signature '{sig.field_name}' cannot be read: {exc or type(exc).__name__}") from exc
        reports.append(generate_report(sig, result).encode("utf-8"))
    return reports


def etsi_report(data: bytes, revocation: RevocationService, max_bytes: int) -> bytes:
    """The ETSI TS 119 102-2 validation report (XML) on every signature of ``data``, oldest first."""
    reader = read_pdf(data, max_bytes)
    try:
        reports = asyncio.run(_reports(reader, revocation))
    except PDF_DAMAGE as exc:
        if isinstance(exc, InvalidRequest):
            raise
        raise PdfInvalid(f"the PDF's signatures cannot be read: {exc or type(exc).__name__}") from exc
    if not reports:
        raise InvalidRequest("the PDF has no signature; an ETSI validation report needs at least one")
    return _merge(reports)
