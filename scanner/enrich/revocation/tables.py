"""The revocation tables' schemas: what the fetch step returns and the revocation-status detector reads.

Kept apart from the fetching modules so that a detector can name the columns without importing
an HTTP client.
"""

from __future__ import annotations

REVOCATION_COLUMNS: dict[str, str] = {
    "issuer_dn": "string",
    "issuer_key_id": "string",
    "serial": "string",
    "revoked_at": "datetime64[us, UTC]",
    "revocation_reason": "string",
    "crl": "string",  # where the CRL came from
}

CRL_TABLE_COLUMNS: dict[str, str] = {
    "url": "string",
    "status": "string",  # ok / unverified / stale / bad_signature / unparseable / unreachable
    "issuer_dn": "string",
    "issuer_key_id": "string",
    "this_update": "datetime64[us, UTC]",
    "next_update": "datetime64[us, UTC]",
    "entries": "Int64",
    "bytes": "Int64",
    "http_status": "Int64",
    "signature": "string",  # ok / bad / unchecked
    "error": "string",
    "source": "string",  # certificates / ccadb:<CA name>
    "idp_urls": "string",  # the Issuing Distribution Point's distributionPoint URIs, space-joined
    "idp_critical": "boolean",  # empty when the CRL has no Issuing Distribution Point
    "scope": "string",  # why it need not list every revocation (a delta CRL, onlySomeReasons...); '' when complete
}
#: CRL statuses whose entries are used as revocation evidence.
READABLE = frozenset({"ok", "unverified", "stale"})

#: One row per OCSP request: a certificate is asked with a SHA-1 CertID over GET, then SHA-256 over POST.
OCSP_RESULT_COLUMNS: dict[str, str] = {
    "sha256": "string",
    "serial": "string",
    "responder": "string",
    "method": "string",
    "hash": "string",
    "status": "string",
    "http_status": "Int64",
    "latency_ms": "float64",
    "this_update": "datetime64[us, UTC]",
    "next_update": "datetime64[us, UTC]",
    "revocation_time": "datetime64[us, UTC]",
    "revocation_reason": "string",
    "signature": "string",
    "signer": "string",
    "freshness": "string",
    "error": "string",
    "notes": "string",  # why the answer is stale or future-dated, "; "-joined
}

RESPONDER_COLUMNS: dict[str, str] = {
    "responder": "string",
    "certificates": "Int64",
    "requests": "Int64",
    "good": "Int64",
    "revoked": "Int64",
    "unknown": "Int64",
    "unauthorized": "Int64",
    "try_later": "Int64",
    "internal_error": "Int64",
    "other_error_status": "Int64",
    "malformed": "Int64",
    "unreachable": "Int64",
    "bad_signature": "Int64",
    "stale_or_future": "Int64",
    "sha256_certid_answered": "Int64",  # SHA-256/POST requests that got a good/revoked answer
    "median_latency_ms": "float64",
    "errors": "string",  # the first few distinct error texts
}
