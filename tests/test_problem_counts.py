"""The problem summary and suspects.csv say what a CA must still act on: short-lived certificates apart,
and each revoked certificate's revocation latency."""

from __future__ import annotations

import csv
import json
from datetime import datetime, timedelta, timezone

from scanner.core.config import Config
from scanner.pipeline import run
from tests.synth import TestCA, der, pem


def test_unrevoked_short_lived_certificates_are_not_counted_as_still_valid_and_latency_is_listed(tmp_path):
    ca = TestCA(name="ctscan Short-lived Test CA")
    issued = tmp_path / "issued"
    issued.mkdir()
    start = datetime.now(timezone.utc) - timedelta(days=2)
    # both name an internal host: one short-lived (6 days), one of 90 days revoked after 30 hours
    short = ca.issue(serial=1, not_before=start, days=6, cn="www.cualtis.net", org="Cualtis SL",
                     dns=["www.cualtis.net", "mail.cualtis.local"])
    long = ca.issue(serial=2, not_before=start, days=90, cn="www.cualtis.es", org="Cualtis SL",
                    dns=["www.cualtis.es", "intranet.cualtis.local"])
    (issued / "short.pem").write_bytes(pem(short))
    (issued / "long.pem").write_bytes(pem(long))
    crl = tmp_path / "ca.crl"
    crl.write_bytes(der(ca.crl([(2, start + timedelta(hours=30), None)], this_update=start + timedelta(days=1))))
    for rerun in ("first", "second"):
        out = tmp_path / rerun
        run(Config(out_dir=out, source="files", paths=(issued,), crl_files=(crl,), registration="off",
                   cache_dir=tmp_path / "cache", workers=1, progress=False, quiet=True))
        problems = {p["code"]: p for p in json.loads((out / "summary.json").read_text())["problems"]}
        internal = problems["internal_name"]
        assert (internal["certificates"], internal["revoked"], internal["valid"], internal["short_lived"]) == (2, 1, 0, 1)
        md = (out / "appendix" / "incident-summary.md").read_text()
        assert "Short-lived, not revoked" in md
        with open(out / "suspects.csv", newline="") as fh:
            rows = {r["serial"]: r for r in csv.DictReader(fh)}
        latency = {serial: row["revocation_latency_hours"] for serial, row in rows.items()}
        assert sorted(latency.values()) == ["", "30.0"]
