"""`ctscan diff`: what changed between two scans, by certificate and finding code, from their Parquet tables."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from scanner.control.trends import side_by_side
from scanner.core.atomic import write_text_atomic
from scanner.core.records import CERT_COLUMNS, FINDING_COLUMNS, coerce, crtsh_url
from scanner.core.times import duration_text, iso, iso_column
from scanner.detect.rates import rates_table
from scanner.report.csv_report import write_frame
from scanner.report.xlsx_report import write_sheets_workbook
from scanner.scale.columnar import read_parquet

#: Every kind of change, in the order diff.csv, diff.xlsx and diff.md list them, with its sheet title.
DIFF_KINDS: dict[str, str] = {
    "new_suspect": "New suspects",
    "no_longer_suspect": "No longer suspect",
    "signal_added": "Signals added",
    "signal_removed": "Signals removed",
    "new_certificate": "New certificates",
    "new_revocation": "New revocations",
}

#: One row per change. code: the finding code (new_suspect: the certificate's codes, comma-separated);
#: reason: the evidence of a finding, or why a suspect is no longer one; old/new_value: what changed.
DIFF_COLUMNS: dict[str, str] = {
    "kind": "string",
    "sha256": "string",
    "crtsh_url": "string",
    "code": "string",
    "severity": "string",
    "subject": "string",
    "name": "string",
    "related_sha256": "string",
    "reason": "string",
    "old_value": "string",
    "new_value": "string",
    "latency_hours": "float64",
}

#: The certificate columns a diff reads (a scan's other columns, SAN lists above all, are not loaded).
_CERT_FIELDS = ("sha256", "cert_sha256", "precert_sha256", "subject_o", "subject_cn", "not_before", "not_after",
                "revoked_at")
_DEFAULT_WINDOW = timedelta(days=7)


class Tables(Protocol):
    """A scan's tables as attributes, as scanner.pipeline.ScanResult holds them (summary optional)."""

    certs: pd.DataFrame
    findings: pd.DataFrame


#: What diff_scans compares: a report folder, a ScanResult (scanner.pipeline.load_scan or run), or a mapping
#: with "certs", "findings" and optionally "summary".
Scan = Path | str | Mapping[str, Any] | Tables


class NotAScan(ValueError):
    """A folder (or object) that does not hold a scan's tables: a usage error for `ctscan diff`."""


@dataclass(frozen=True)
class ScanSide:
    """One of the two scans: where it came from, when it was run, and why it was partial if it was."""

    label: str
    as_of: pd.Timestamp | None  # summary.json's report_as_of: the time "expired" is judged at
    certificates: int
    partial_reasons: tuple[str, ...]
    window: timedelta


@dataclass
class ScanDiff:
    """What changed from old to new: one row per change (DIFF_COLUMNS), the rates side by side, per-code status."""

    old: ScanSide
    new: ScanSide
    changes: pd.DataFrame
    rates: pd.DataFrame
    # per finding code of the new scan: certificates, expired (at its report time), revoked; old_*: the old scan's
    status: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def partial_reasons(self) -> list[str]:
        """Why either scan was partial, each reason prefixed with the scan it belongs to."""
        return [f"{side} scan ({s.label}): {r}" for side, s in (("old", self.old), ("new", self.new))
                for r in s.partial_reasons]

    def of_kind(self, kind: str) -> pd.DataFrame:
        """The changes of one kind (a key of DIFF_KINDS)."""
        if kind not in DIFF_KINDS:
            raise KeyError(f"no kind of change {kind!r}; the kinds are {', '.join(DIFF_KINDS)}")
        return self.changes[self.changes["kind"] == kind].reset_index(drop=True)

    def new_findings(self) -> pd.DataFrame:
        """The (certificate, finding code) pairs the new scan found and the old one did not."""
        return self.of_kind("signal_added")


@dataclass(frozen=True)
class _Scan:
    side: ScanSide
    certs: pd.DataFrame
    findings: pd.DataFrame


def _read_certs(path: Path) -> pd.DataFrame:
    return read_parquet(path, {k: CERT_COLUMNS[k] for k in _CERT_FIELDS})


def _window(summary: Mapping[str, Any]) -> timedelta:
    hours = (summary.get("rates") or {}).get("window_hours")
    return timedelta(hours=float(hours)) if hours else _DEFAULT_WINDOW


def _load(scan: Scan, label: str) -> _Scan:
    """A scan from its report folder, a ScanResult (load_scan, run) or a mapping with certs/findings/summary."""
    if isinstance(scan, (str, Path)):
        folder = Path(scan)
        missing = [n for n in ("certs.parquet", "findings.parquet") if not (folder / n).is_file()]
        if not folder.is_dir() or missing:
            raise NotAScan(f"{folder} is not a ctscan report folder (no {' or '.join(missing) or 'such folder'}); "
                           "give the --out folder of a `ctscan scan`")
        try:
            summary = json.loads((folder / "summary.json").read_text()) if (folder / "summary.json").is_file() else {}
            certs = _read_certs(folder / "certs.parquet")
            findings = read_parquet(folder / "findings.parquet", FINDING_COLUMNS)
        except (ValueError, OSError, KeyError) as exc:  # pyarrow's errors are ValueError/OSError subclasses
            raise NotAScan(f"{folder}: its scan tables cannot be read ({exc}); rescan into a fresh folder") from exc
        label = str(folder)
    elif hasattr(scan, "certs") and hasattr(scan, "findings"):  # a ScanResult, without importing the pipeline
        certs, findings, summary = scan.certs, scan.findings, getattr(scan, "summary", None) or {}
    elif isinstance(scan, Mapping) and "certs" in scan and "findings" in scan:
        certs, findings, summary = scan["certs"], scan["findings"], scan.get("summary") or {}
    else:
        raise NotAScan(f"not a scan: {type(scan).__name__} (give a report folder or what load_scan returns)")
    certs = coerce(certs[[c for c in _CERT_FIELDS if c in certs.columns]], {k: CERT_COLUMNS[k] for k in _CERT_FIELDS})
    findings = coerce(findings, FINDING_COLUMNS)
    # Hashes and codes as Python strings once: every set, map and join below would convert them again.
    certs = certs.astype({c: "object" for c in ("sha256", "precert_sha256", "subject_o", "subject_cn")})
    findings = findings.astype({c: "object" for c in ("sha256", "code", "name", "related_sha256")})
    as_of = pd.Timestamp(summary["report_as_of"]) if summary.get("report_as_of") else None
    count = int(summary.get("certificates", len(certs)))  # certs may be the findings' certificates only
    side = ScanSide(label, as_of, count, tuple(summary.get("partial_reasons") or ()), _window(summary))
    return _Scan(side, certs, findings)


def _same_keys(old: _Scan, new: _Scan) -> _Scan:
    """old with its precertificate hashes renamed to the new scan's final certificates, so they match by sha256."""
    pre = new.certs[new.certs["precert_sha256"].fillna("") != ""]
    alias = dict(zip(pre["precert_sha256"].astype("object"), pre["sha256"].astype("object")))
    if not alias:
        return old
    def renamed(hashes: pd.Series) -> pd.Series:
        mapped = hashes.map(alias)
        return mapped.where(mapped.notna(), hashes)

    certs = old.certs.assign(sha256=lambda c: renamed(c["sha256"]))
    findings = old.findings.assign(sha256=lambda f: renamed(f["sha256"]),
                                   related_sha256=lambda f: renamed(f["related_sha256"]))
    return _Scan(old.side, certs, findings)


def _joined(keys: list[Any], values: list[Any]) -> dict[Any, str]:
    """Per key, its distinct non-empty values in order, comma-separated (plain Python: few values per key)."""
    out: dict[Any, dict[str, None]] = {}
    for key, value in zip(keys, values):
        if isinstance(value, str) and value:
            out.setdefault(key, {})[value] = None
    return {key: ", ".join(found) for key, found in out.items()}


def _pairs(findings: pd.DataFrame) -> pd.DataFrame:
    """One row per (sha256, code): the first finding's severity, evidence and paired certificate, every name."""
    f = findings.astype({c: "object" for c in ("sha256", "code", "name")})
    names = _joined(list(zip(f["sha256"], f["code"])), f["name"].tolist())
    first = f.drop_duplicates(["sha256", "code"]).set_index(["sha256", "code"])
    first["name"] = [names.get(key, "") for key in first.index]
    return first[["severity", "name", "related_sha256", "evidence"]]


def _subjects(certs: pd.DataFrame, wanted: set[str]) -> pd.Series:
    """Subject (O, else CN) by sha256 of the wanted certificates (a diff names few of a million)."""
    certs = certs[certs["sha256"].isin(wanted)]
    o = certs["subject_o"].fillna("").astype("object")
    cn = certs["subject_cn"].fillna("").astype("object")
    subject = o.where(o != "", cn)
    subject.index = certs["sha256"].astype("object")
    return subject[~subject.index.duplicated()]


def _frame(kind: str, rows: pd.DataFrame) -> pd.DataFrame:
    rows = rows.copy()
    rows["kind"] = kind
    return rows


def _finished(rows: pd.DataFrame, subjects: pd.Series) -> pd.DataFrame:
    rows["subject"] = rows["sha256"].map(subjects).fillna("")
    rows["crtsh_url"] = [crtsh_url(h) for h in rows["sha256"].tolist()]
    return coerce(rows.reindex(columns=list(DIFF_COLUMNS)), DIFF_COLUMNS)


def _codes_by_cert(pairs: pd.DataFrame) -> dict[str, str]:
    return _joined(pairs.index.get_level_values("sha256").tolist(), pairs.index.get_level_values("code").tolist())


def _by_sha(certs: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    unique = certs.drop_duplicates("sha256")
    return unique.set_index(unique["sha256"].astype("object"))[columns]


def _text(times: pd.Series) -> pd.Series:
    """Times as ISO text in an object column (so that prefixing text works on an empty one too)."""
    return pd.Series(iso_column(times), index=times.index, dtype="object")


def _no_longer(old: _Scan, new: _Scan, old_pairs: pd.DataFrame, new_pairs: pd.DataFrame) -> pd.DataFrame:
    """Old suspects that are not live suspects any more, each with why: signal gone, revoked since, expired."""
    old_codes, new_codes = _codes_by_cert(old_pairs), _codes_by_cert(new_pairs)
    frame = pd.DataFrame({"sha256": list(old_codes), "old_codes": list(old_codes.values())}, dtype="object")
    frame = frame.join(_by_sha(old.certs, ["revoked_at"]).rename(columns={"revoked_at": "revoked_then"}), on="sha256")
    now = _by_sha(new.certs, ["revoked_at", "not_after"])
    frame = frame.join(now, on="sha256")
    frame["new_codes"] = frame["sha256"].map(new_codes)
    absent = ~frame["sha256"].isin(now.index)
    gone = ~absent & frame["new_codes"].isna()
    revoked = ~absent & ~gone & frame["revoked_then"].isna() & frame["revoked_at"].notna()
    after = frame["not_after"]
    expired = ~absent & ~gone & ~revoked & after.notna()
    expired &= (after <= new.side.as_of) if new.side.as_of is not None else False
    if old.side.as_of is not None:
        expired &= ~(after <= old.side.as_of)
    parts = [
        frame[absent].assign(code=lambda f: f["old_codes"], reason="not in the new scan's selection",
                             old_value=lambda f: f["old_codes"], new_value=""),
        frame[gone].assign(code=lambda f: f["old_codes"], reason=lambda f: "signal gone: " + f["old_codes"]
                           + " no longer found", old_value=lambda f: f["old_codes"], new_value=""),
        frame[revoked].assign(code=lambda f: f["new_codes"], new_value=lambda f: _text(f["revoked_at"]),
                              reason=lambda f: "revoked since: " + f["new_value"], old_value=""),
        frame[expired].assign(code=lambda f: f["new_codes"], new_value=lambda f: _text(f["not_after"]),
                              reason=lambda f: "expired: notAfter " + f["new_value"], old_value=""),
    ]
    columns = ["sha256", "code", "reason", "old_value", "new_value"]
    return pd.concat([p[columns] for p in parts], ignore_index=True)


def _status_of(scan: _Scan, pairs: pd.DataFrame) -> pd.DataFrame:
    """Per code: its certificates and how many are expired (at the scan's report time) or revoked."""
    unique = scan.certs.drop_duplicates("sha256")
    certs = unique.set_index(unique["sha256"].astype("object"))
    keys = pairs.reset_index()[["sha256", "code"]].join(certs[["not_after", "revoked_at"]], on="sha256")
    as_of = scan.side.as_of
    keys["expired"] = keys["not_after"].notna() & (keys["not_after"] <= as_of) if as_of is not None else False
    keys["revoked"] = keys["revoked_at"].notna()
    grouped = keys.groupby("code", sort=False)
    return pd.DataFrame({"certificates": grouped.size(), "expired": grouped["expired"].sum(),
                         "revoked": grouped["revoked"].sum()}).astype("int64").rename_axis("code")


def _status(old: _Scan, new: _Scan, old_pairs: pd.DataFrame, new_pairs: pd.DataFrame) -> pd.DataFrame:
    """Per code of the new scan: certificates, expired, revoked, and the same three at the old scan (old_*)."""
    then = _status_of(old, old_pairs).add_prefix("old_")
    table = _status_of(new, new_pairs).join(then, how="left").fillna(0).astype("int64")
    return table.reset_index()


def diff_scans(old: Scan, new: Scan, *, rates: tuple[pd.DataFrame, pd.DataFrame] | None = None) -> ScanDiff:
    """Compare two scans (report folders, or what load_scan returns) by certificate and finding code.

    rates: each scan's rates_table, when the scans are given with only some of their certificates (the
    certificates the rates count are then not all there).
    """
    new_scan = _load(new, "new")
    old_scan = _same_keys(_load(old, "old"), new_scan)
    old_pairs, new_pairs = _pairs(old_scan.findings), _pairs(new_scan.findings)

    added = new_pairs[~new_pairs.index.isin(old_pairs.index)].reset_index()
    removed = old_pairs[~old_pairs.index.isin(new_pairs.index)].reset_index()
    new_certs = set(new_scan.certs["sha256"].astype("object"))
    removed["reason"] = ["certificate not in the new scan's selection" if h not in new_certs else "no longer found"
                         for h in removed["sha256"].tolist()]
    removed["old_value"] = removed["evidence"]

    old_suspects = set(old_pairs.index.get_level_values("sha256"))
    fresh = new_pairs[~new_pairs.index.get_level_values("sha256").isin(old_suspects)].reset_index()
    suspects = fresh.groupby("sha256", sort=False).agg(
        code=("code", ", ".join), severity=("severity", "first"), name=("name", "first"),
        related_sha256=("related_sha256", "first"), reason=("evidence", "first")).reset_index()

    old_hashes = set(old_scan.certs["sha256"].astype("object"))
    arrived = new_scan.certs[~new_scan.certs["sha256"].astype("object").isin(old_hashes)]
    arrivals = pd.DataFrame({"sha256": arrived["sha256"],
                             "new_value": [iso(t) for t in arrived["not_before"]],
                             "reason": "new to the selection"})

    was_revoked = old_scan.certs.loc[old_scan.certs["revoked_at"].notna(), "sha256"].astype("object")
    revoked = new_scan.certs[new_scan.certs["revoked_at"].notna()
                             & ~new_scan.certs["sha256"].astype("object").isin(set(was_revoked))]
    hours = ((revoked["revoked_at"] - revoked["not_before"]).dt.total_seconds() / 3600).astype("float64")
    revocations = pd.DataFrame({
        "sha256": revoked["sha256"], "new_value": [iso(t) for t in revoked["revoked_at"]],
        "latency_hours": hours.round(3),
        "reason": [f"revoked {duration_text(h)} after notBefore" if pd.notna(h) else "revoked (no notBefore)"
                   for h in hours]})

    parts = [
        _frame("new_suspect", suspects),
        _frame("no_longer_suspect", _no_longer(old_scan, new_scan, old_pairs, new_pairs)),
        _frame("signal_added", added.rename(columns={"evidence": "reason"}).assign(new_value=added["evidence"])),
        _frame("signal_removed", removed.drop(columns="evidence")),
        _frame("new_certificate", arrivals),
        _frame("new_revocation", revocations),
    ]
    changes = pd.concat(parts, ignore_index=True)
    named = set(changes["sha256"].astype("object"))
    subjects = pd.concat([_subjects(old_scan.certs, named), _subjects(new_scan.certs, named)])
    changes = _finished(changes, subjects[~subjects.index.duplicated(keep="last")])
    old_rates, new_rates = rates if rates is not None else (
        rates_table(old_scan.certs, old_scan.findings, old_scan.side.window),
        rates_table(new_scan.certs, new_scan.findings, new_scan.side.window))
    return ScanDiff(old_scan.side, new_scan.side, changes, side_by_side(old_rates, new_rates),
                    _status(old_scan, new_scan, old_pairs, new_pairs))


def _scan_date(side: ScanSide) -> str:
    return iso(side.as_of)[:10] if side.as_of is not None else "an undated scan"


def _codes(frame: pd.DataFrame) -> list[tuple[str, int]]:
    counts = frame.groupby("code", sort=False)["sha256"].nunique()
    return sorted(((str(c), int(n)) for c, n in counts.items()), key=lambda t: (-t[1], t[0]))


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def diff_markdown(diff: ScanDiff) -> str:
    """diff.md: the changes as sentences, ready to paste into an incident update, with the rates side by side."""
    old_date, new_date = _scan_date(diff.old), _scan_date(diff.new)
    lines = [f"# Changes since {old_date}", "",
             f"Old scan: {diff.old.label} ({iso(diff.old.as_of) or 'no report time'}, "
             f"{_plural(diff.old.certificates, 'certificate')}); new scan: {diff.new.label} "
             f"({iso(diff.new.as_of) or 'no report time'}, {_plural(diff.new.certificates, 'certificate')}).", ""]
    said = []
    for code, n in _codes(diff.of_kind("signal_added")):
        said.append(f"since {old_date}: {_plural(n, 'new certificate')} with `{code}`")
    for code, n in _codes(diff.of_kind("signal_removed")):
        said.append(f"{_plural(n, 'certificate')} no longer with `{code}`")
    for row in diff.status.itertuples(index=False):
        if (row.expired, row.revoked) == (row.old_expired, row.old_revoked):
            continue
        then = (f" (at the old scan {row.old_expired:,} of {row.old_certificates:,} expired, "
                f"{row.old_revoked:,} revoked)" if row.old_certificates else "")
        said.append(f"{row.expired:,} of {row.certificates:,} `{row.code}` certificates now expired, "
                    f"{row.revoked:,} revoked{then}")
    gone = diff.of_kind("no_longer_suspect")
    if len(gone):
        why = sorted(gone["reason"].str.split(":").str[0].value_counts().items(), key=lambda t: (-t[1], t[0]))
        said.append(f"{_plural(len(gone), 'suspect')} no longer suspect ("
                    + ", ".join(f"{n:,} {reason}" for reason, n in why) + ")")
    arrived = diff.of_kind("new_certificate")
    said.append(f"{_plural(len(arrived), 'certificate')} new to the selection, "
                f"{_plural(len(diff.of_kind('new_suspect')), 'new suspect')}")
    revoked = diff.of_kind("new_revocation")
    if len(revoked):
        hours = revoked["latency_hours"].dropna()
        median = f", median latency {duration_text(float(hours.median()))}" if len(hours) else ""
        within = int((hours <= 24 * diff.new.window.total_seconds() / 86400).sum())
        said.append(f"{_plural(len(revoked), 'revocation')} new since the old scan{median}, "
                    f"{within:,} within {duration_text(diff.new.window.total_seconds() / 3600)} of notBefore")
    lines += [f"- {s}." for s in said] + [""]
    if diff.partial_reasons:
        lines += ["Partial: the comparison covers only what both scans read.", ""]
        lines += [f"- {r}" for r in diff.partial_reasons] + [""]
    whole = diff.rates[diff.rates["period"] == "all"]
    lines += [f"## Rates (whole scan; old {old_date}, new {new_date})", "", "| rate | old | new |", "|---|---:|---:|"]
    for row in whole.itertuples(index=False):
        lines.append(f"| {row.metric} | {_number(row.old)} | {_number(row.new)} |")
    return "\n".join(lines) + "\n"


def _number(value: Any) -> str:
    if value is None or pd.isna(value):
        return ""
    return f"{int(value):,}" if float(value).is_integer() else f"{float(value):,.3f}"


def write_diff(diff: ScanDiff, out_dir: Path) -> dict[str, Path]:
    """Write diff.csv (every change), diff.xlsx (a sheet per kind, then the rates) and diff.md; name -> path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sheets = [(title, diff.of_kind(kind)) for kind, title in DIFF_KINDS.items()]
    sheets.append(("Rates", diff.rates))
    md = out_dir / "diff.md"
    write_text_atomic(md, diff_markdown(diff))
    return {"diff.csv": write_frame(out_dir / "diff.csv", diff.changes),
            "diff.xlsx": write_sheets_workbook(out_dir / "diff.xlsx", sheets),
            "diff.md": md}
