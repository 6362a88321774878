"""--alert-on takes pkilint's codes too: one lint:<code>, or lint:* for every lint finding."""

from __future__ import annotations

import pandas as pd
import pytest

from scanner.control.alerts import AlertPolicy, parse_codes
from scanner.core.config import ConfigError

FINDINGS = pd.DataFrame({
    "code": ["lint:cabf.serverauth.dv.subject_organization_present", "lint:pkix.name_too_long", "ip_san",
             "early_revocation"],
    "severity": ["high", "low", "medium", "low"],
})


def test_alert_on_a_lint_code_or_every_lint_code():
    one = AlertPolicy(codes=parse_codes("lint:pkix.name_too_long"), min_severity="info")
    assert FINDINGS.loc[one.selects(FINDINGS), "code"].tolist() == ["lint:pkix.name_too_long"]
    every = AlertPolicy(codes=parse_codes("lint:*,ip_san"), min_severity="info")
    assert FINDINGS.loc[every.selects(FINDINGS), "code"].tolist() == FINDINGS["code"].tolist()[:3]


@pytest.mark.parametrize("text", ["no_such_code", "lint:", "lint"])
def test_an_unknown_code_is_a_usage_error_naming_it(text):
    with pytest.raises(ConfigError, match="unknown finding code"):
        parse_codes(text)
