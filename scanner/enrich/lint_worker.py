"""The part of --lint that runs in the lint worker processes: pkilint on DER bytes, nothing else.

Kept apart from enrich/lint.py, and importing only the standard library (and pkilint when a document
is linted), so that each spawned worker starts without pandas, the store or the rest of ctscan.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

try:  # orjson reads a warm cache about twice as fast; json does the same job without it
    from orjson import dumps as _dumps
    from orjson import loads as json_loads

    def json_dumps(value: Any) -> str:
        """Compact JSON text."""
        return _dumps(value).decode()
except ImportError:  # pragma: no cover - depends on the environment
    import json

    json_loads = json.loads

    def json_dumps(value: Any) -> str:
        """Compact JSON text."""
        return json.dumps(value, separators=(",", ":"))

_KEPT = ("FATAL", "ERROR", "WARNING", "NOTICE", "INFO")  # pkilint's default report threshold is INFO

_VALIDATORS: dict[Any, tuple[Any, Any]] = {}  # certificate type -> (validator container, finding filters)


def br_version() -> str:
    """The version of the TLS Baseline Requirements pkilint's lints follow (imports pkilint)."""
    from pkilint.cabf.serverauth import serverauth_constants

    return str(serverauth_constants.BR_VERSION)


def _validator(certificate_type: Any) -> tuple[Any, Any]:
    """The validator container and finding filters of one certificate type, built once per process."""
    if certificate_type not in _VALIDATORS:
        from pkilint.cabf import serverauth
        from pkilint.pkix import certificate

        # pkilint logs a traceback for each check that raises; the finding (base.unhandled_exception, FATAL)
        # carries its message, which is what the reports show.
        logging.getLogger("pkilint").setLevel(logging.CRITICAL)
        container = certificate.create_pkix_certificate_validator_container(
            serverauth.create_decoding_validators(), serverauth.create_validators(certificate_type))
        _VALIDATORS[certificate_type] = (container, serverauth.create_serverauth_finding_filters(certificate_type))
    return _VALIDATORS[certificate_type]


def lint_der(der: bytes) -> dict[str, Any]:
    """pkilint's findings on one DER certificate, as ``lint_cabf_serverauth_cert lint -d`` reports them.

    {"type": detected type, "br": BR version, "findings": [[severity, code, node_path, message], ...],
    "error": why pkilint could not lint it at all, else ""}.
    """
    from pkilint import finding_filter, loader
    from pkilint.cabf import serverauth

    br = br_version()
    try:
        doc = loader.RFC5280CertificateDocumentLoader().load_der_document(der, "certificate")
        certificate_type = serverauth.determine_certificate_type(doc)
    except Exception as exc:  # noqa: BLE001  pkilint's decoder refusing the bytes is a result, not a crash
        return {"type": "", "br": br, "findings": [], "error": f"pkilint could not decode it: {exc}"}
    container, filters = _validator(certificate_type)
    results, _ = finding_filter.filter_results(filters, container.validate(doc.root))
    findings = [[d.finding.severity.name, d.finding.code, r.node.path, d.message or ""]
                for r in results for d in r.finding_descriptions if d.finding.severity.name in _KEPT]
    return {"type": str(certificate_type), "br": br, "findings": findings, "error": ""}


def _crl_validator() -> Any:
    """pkilint's CRL linter as ``lint_crl lint -t CRL -p BR`` builds it (RFC 5280 plus the BR profile), once."""
    if "crl" not in _VALIDATORS:
        from pkilint import pkix
        from pkilint.cabf import cabf_crl
        from pkilint.pkix import crl, extension, name

        crl_type = crl.CertificateRevocationListType.CRL
        _VALIDATORS["crl"] = (crl.create_pkix_crl_validator_container(
            [pkix.create_attribute_decoder(name.ATTRIBUTE_TYPE_MAPPINGS),
             pkix.create_extension_decoder(extension.EXTENSION_MAPPINGS)],
            [crl.create_issuer_validator_container([]),
             crl.create_validity_validator_container([cabf_crl.create_validity_period_validator(crl_type)]),
             crl.create_extensions_validator_container([]),
             cabf_crl.CabfCrlReasonCodeAllowlistValidator(crl_type)],
        ), None)
    return _VALIDATORS["crl"][0]


def _ocsp_validator() -> Any:
    """pkilint's OCSP response linter as ``lint_ocsp_response lint`` builds it (RFC 6960), once."""
    if "ocsp" not in _VALIDATORS:
        from pkilint import pkix
        from pkilint.pkix import extension, name, ocsp

        _VALIDATORS["ocsp"] = (ocsp.create_pkix_ocsp_response_validator_container(
            [ocsp.create_response_decoder(), pkix.create_attribute_decoder(name.ATTRIBUTE_TYPE_MAPPINGS),
             pkix.create_extension_decoder(extension.EXTENSION_MAPPINGS)], []), None)
    return _VALIDATORS["ocsp"][0]


def lint_revocation_der(der: bytes, kind: str) -> dict[str, Any]:
    """pkilint's findings on a fetched CRL (kind "crl", BR profile) or OCSP response (kind "ocsp").

    The same shape as lint_der: {"type": kind, "findings": [[severity, code, node_path, message], ...],
    "error": why pkilint could not read it, else ""}.
    """
    from pkilint import loader

    if kind not in ("crl", "ocsp"):
        raise ValueError(f"kind must be crl or ocsp, not {kind!r}")
    try:
        if kind == "crl":
            doc = loader.RFC5280CertificateListDocumentLoader().load_der_document(der, "crl")
        else:
            doc = loader.RFC6960OCSPResponseDocumentLoader().load_der_document(der, "ocsp")
    except ValueError as exc:
        return {"type": kind, "br": "", "findings": [], "error": f"pkilint could not decode it: {exc}"}
    validator = _crl_validator() if kind == "crl" else _ocsp_validator()
    findings = [[d.finding.severity.name, d.finding.code, r.node.path, d.message or ""]
                for r in validator.validate(doc.root) for d in r.finding_descriptions if d.finding.severity.name in _KEPT]
    return {"type": kind, "br": br_version() if kind == "crl" else "", "findings": findings, "error": ""}


def lint_batch(ders: Sequence[bytes]) -> list[str]:
    """lint_der of each, as JSON text (what the store keeps). Runs in the workers."""
    out = []
    for der in ders:
        try:
            result = lint_der(der)
        except Exception as exc:  # noqa: BLE001  one certificate pkilint trips over never stops the others
            result = {"type": "", "br": "", "findings": [], "error": f"pkilint failed on it: {exc!r}"}
        out.append(json_dumps(result))
    return out
