"""The report plots: the numbers behind each picture, and PNG files a person can open."""

from __future__ import annotations

import struct
from pathlib import Path
from types import MappingProxyType

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from scanner.core import records
from scanner.core.config import Config
from scanner.core.records import CERT_COLUMNS, FINDING_COLUMNS, FindingCode, empty_frame, frame_from_rows
from scanner.detect.score import certificate_scores
from scanner.pipeline import run
from scanner.report import plots
from tests.conftest import SAMPLE

A, B, C, D, E, F = (c * 64 for c in "abcdef")


def _certs() -> pd.DataFrame:
    rows = [
        # CUALTIS: a typo certificate revoked 4.6 h after notBefore and reissued 23 min after that.
        {"sha256": A, "subject_o": "CUALTIS S.L.U", "subject_cn": "mail.cuatis.net",
         "not_before": "2019-11-12T12:17Z", "revoked_at": "2019-11-12T16:53Z"},
        {"sha256": B, "subject_o": "CUALTIS S.L.U", "subject_cn": "mail.cualtis.net",
         "not_before": "2019-11-12T17:16Z"},
        {"sha256": C, "subject_o": "Cualtis SLU", "subject_cn": "mail.cualtis.net", "not_before": "2018-11-05T09:12Z"},
        # No O: the subscriber is the CN's registrable domain. Revoked 6 days after notBefore.
        {"sha256": D, "subject_o": "", "subject_cn": "vpn.example.co.uk",
         "not_before": "2020-01-31T00:00Z", "revoked_at": "2020-02-06T00:00Z"},
        # Revoked one hour before its notBefore (backdated revocation).
        {"sha256": E, "subject_o": "Northwind Bank", "subject_cn": "portal.northwind.com",
         "not_before": "2020-03-01T12:00Z", "revoked_at": "2020-03-01T11:00Z"},
        {"sha256": F, "subject_o": "Quiet Ltd", "subject_cn": "www.quiet.com", "not_before": "2020-03-05T00:00Z"},
    ]
    return frame_from_rows(rows, CERT_COLUMNS)


def _findings() -> pd.DataFrame:
    rows = [
        {"sha256": A, "code": "unregistered_domain", "severity": "high", "name": "mail.cuatis.net"},
        {"sha256": A, "code": "revoke_reissue", "severity": "medium", "related_sha256": B},
        {"sha256": A, "code": "early_revocation", "severity": "low"},
        {"sha256": D, "code": "early_revocation", "severity": "low"},
        {"sha256": D, "code": "internal_name", "severity": "medium", "name": "vpn.corp"},
        {"sha256": E, "code": "early_revocation", "severity": "low"},
    ]
    return frame_from_rows(rows, FINDING_COLUMNS)


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


# --- the data behind the plots --------------------------------------------------------------


def test_latency_is_hours_from_notbefore_to_revocation_for_revoked_certificates_only():
    hours = plots.latency_hours(_certs())
    assert sorted(round(h, 3) for h in hours) == [-1.0, round(276 / 60, 3), 144.0]


def test_findings_per_month_count_by_the_certificates_notbefore_month_and_keep_empty_months():
    table = plots.monthly_counts(_certs(), _findings())
    assert list(table.index) == ["2019-11", "2019-12", "2020-01", "2020-02", "2020-03"]
    assert table.loc["2019-11"].to_dict() == {"unregistered_domain": 1, "revoke_reissue": 1, "early_revocation": 1,
                                              "internal_name": 0}
    assert table.loc["2019-12"].sum() == 0
    # D's notBefore is 31 January: its findings belong to January, not to the revocation month.
    assert table.loc["2020-01", "internal_name"] == 1 and table.loc["2020-02"].sum() == 0
    assert table.to_numpy().sum() == len(_findings())


def test_findings_about_certificates_not_in_the_table_are_not_counted_in_any_month():
    findings = pd.concat([_findings(), frame_from_rows([{"sha256": "9" * 64, "code": "ip_san"}], FINDING_COLUMNS)])
    table = plots.monthly_counts(_certs(), findings)
    assert "ip_san" not in table.columns and table.to_numpy().sum() == len(_findings())


def test_the_subscriber_is_the_normalised_o_else_the_registrable_domain_of_the_cn():
    names = plots.subscribers(_certs())
    assert list(names) == ["cualtis", "cualtis", "cualtis", "example.co.uk", "northwindbank", "quiet"]
    nameless = frame_from_rows([{"sha256": A}, {"sha256": B, "subject_o": "", "subject_cn": "10.0.0.1"}], CERT_COLUMNS)
    assert list(plots.subscribers(nameless)) == [plots.NO_SUBSCRIBER, plots.NO_SUBSCRIBER]


def test_subscribers_are_ranked_by_their_summed_suspect_scores():
    ranking = plots.subscriber_scores(_certs(), _findings(), scores=certificate_scores(_findings()))
    assert list(ranking["subscriber"]) == ["cualtis", "example.co.uk", "northwindbank", "quiet"]
    first = ranking.iloc[0]
    assert (first["certificates"], first["suspects"], first["findings"]) == (3, 1, 3)
    assert first["score"] == 40.0 + 20.0 + 10.0
    assert ranking.iloc[-1]["score"] == 0


def test_the_timeline_shows_only_the_top_suspicious_subscribers_most_suspicious_first():
    scores = certificate_scores(_findings())
    frame = plots.timeline_frame(_certs(), _findings(), top=2, scores=scores)
    assert list(dict.fromkeys(frame["subscriber"])) == ["cualtis", "example.co.uk"]
    assert list(frame.loc[frame["subscriber"] == "cualtis", "sha256"]) == [C, A, B]  # by notBefore
    # "quiet" has no findings
    assert plots.timeline_frame(_certs(), _findings(), top=12, scores=scores)["subscriber"].nunique() == 3


#: A typo'd subject O revoked hours after issuance, and its corrected reissue.
_WIDGETS_REISSUE = [
        {"sha256": A, "subject_o": "Exmaple Widgets Ltd", "subject_cn": "www.widgets.com",
         "not_before": "2020-03-02T09:00Z", "revoked_at": "2020-03-02T13:10Z"},
        {"sha256": B, "subject_o": "Example Widgets Ltd", "subject_cn": "www.widgets.com",
         "not_before": "2020-03-02T11:05Z"},
]


def test_a_reissue_under_another_subject_o_gets_its_own_row_below_its_partner():
    certs = frame_from_rows([
        *_WIDGETS_REISSUE,
        {"sha256": C, "subject_o": "Other Co", "subject_cn": "www.other.com", "not_before": "2020-03-01T00:00Z"},
    ], CERT_COLUMNS)
    findings = frame_from_rows([
        {"sha256": A, "code": "revoke_reissue", "related_sha256": B},
        {"sha256": C, "code": "ip_san"},
    ], FINDING_COLUMNS)
    frame = plots.timeline_frame(certs, findings, top=12, scores=certificate_scores(findings))
    assert frame.drop_duplicates("row")["subscriber"].tolist() == ["exmaplewidgets", "examplewidgets", "other"]


def test_reissue_pairs_come_from_revoke_reissue_findings_only():
    assert plots.reissue_pairs(_findings()) == [(A, B)]
    assert plots.reissue_pairs(empty_frame(FINDING_COLUMNS)) == []


def test_pair_timing_says_how_long_until_revocation_and_until_the_reissue():
    ts = pd.Timestamp
    assert plots.pair_timing(ts("2019-11-12T12:17Z"), ts("2019-11-12T16:53Z"), ts("2019-11-12T17:16Z")) == (
        "revoked after 4.6 h, reissued 23 min later")
    assert plots.pair_timing(ts("2020-03-02T09:00Z"), ts("2020-03-02T13:10Z"), ts("2020-03-02T11:05Z")).endswith(
        "reissued 2.1 h before")


# --- the figures ----------------------------------------------------------------------------


def test_the_latency_plot_is_log_scaled_and_draws_the_24h_and_5_day_deadlines():
    fig = plots.revocation_latency(_certs())
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    deadlines = {line.get_gid(): line for line in ax.get_lines() if (line.get_gid() or "").startswith("deadline")}
    assert set(deadlines) == {"deadline:24h", "deadline:120h"}
    assert deadlines["deadline:24h"].get_xdata()[0] == 24.0
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(label.startswith("24 h") and "2 revoked within" in label for label in labels)
    assert any(label.startswith("5 days") and "2 revoked within" in label for label in labels)
    # The backdated revocation cannot sit on a log axis: the title says where it was drawn.
    assert "1 revoked at or before notBefore" in ax.get_title()


def test_the_timeline_connects_the_revoked_certificate_to_its_reissue_and_marks_revocations():
    fig = plots.issuance_timeline(_certs(), _findings(), scores=certificate_scores(_findings()))
    ax = fig.axes[0]
    assert [line.get_gid() for line in ax.get_lines() if line.get_gid()] == [f"revoke_reissue:{A}:{B}"]
    texts = [t.get_text() for t in ax.texts]
    assert "revoked after 4.6 h, reissued 23 min later" in texts
    assert "revocation" in [t.get_text() for t in ax.get_legend().get_texts()]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["cualtis (3)", "example.co.uk (1)", "northwindbank (1)"]


def test_text_with_dollar_signs_is_drawn_literally_not_parsed_as_mathtext(tmp_path, monkeypatch):
    # Unescaped, "$\\frac{$" is invalid mathtext and savefig raises ValueError.
    odd = FindingCode("odd$\\frac{$code", "low", 1.0, "odd", "An odd code.")
    monkeypatch.setattr(records, "FINDING_CODES", MappingProxyType({**records.FINDING_CODES, odd.code: odd}))
    findings = frame_from_rows([{"sha256": A, "code": "odd$\\frac{$code"}], FINDING_COLUMNS)
    files = plots.write_plots(tmp_path, _certs(), findings, scores=certificate_scores(findings))
    assert all(_png_size(path)[0] >= 600 for path in files.values())
    legend = plots.findings_per_month(_certs(), findings).axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["odd\\$\\frac{\\$code"]


def test_the_findings_plot_stacks_one_bar_series_per_code():
    fig = plots.findings_per_month(_certs(), _findings())
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "unregistered_domain", "revoke_reissue", "early_revocation", "internal_name"]
    heights = np.zeros(5)
    for container in ax.containers:
        heights += [bar.get_height() for bar in container]
    assert heights.tolist() == [3, 0, 2, 0, 1]


def test_empty_data_draws_figures_that_say_no_data(tmp_path):
    certs, findings = empty_frame(CERT_COLUMNS), empty_frame(FINDING_COLUMNS)
    for fig in (plots.issuance_timeline(certs, findings), plots.revocation_latency(certs),
                plots.findings_per_month(certs, findings)):
        assert any(t.get_text().startswith("no data") for t in fig.axes[0].texts)
    files = plots.write_plots(tmp_path, certs, findings)
    assert all(_png_size(path)[0] >= 600 for path in files.values())


# --- the files ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample_scan(tmp_path_factory):
    out = tmp_path_factory.mktemp("plots")
    config = Config(out_dir=out / "report", paths=(SAMPLE / "certs",), crl_files=(SAMPLE / "crl" / "sample-ca.crl",),
                    registry_answers=(SAMPLE / "registrations.csv",), offline=True, cache_dir=out / "cache",
                    progress=False)
    return config, run(config, write=False)


@pytest.fixture(scope="module")
def sample_plots(sample_scan) -> dict[str, Path]:
    config, result = sample_scan
    return plots.write_plots(config.out_dir, result.certs, result.findings, suspects=result.suspects)


def test_write_plots_puts_three_readable_pngs_in_the_report_plots_folder(sample_plots):
    assert sorted(sample_plots) == sorted(plots.PLOT_FILES)
    for name, path in sample_plots.items():
        assert path.parent.name == "plots" and path.name == Path(name).name
        width, height = _png_size(path)
        assert 600 <= width <= 3000 and 250 <= height <= 2000, (name, width, height)
        assert 10_000 < path.stat().st_size < 2_000_000, name
        pixels = matplotlib.image.imread(path)  # decodes the whole image, so a truncated file fails here
        assert pixels.shape[:2] == (height, width)
        assert len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)) > 20, f"{name} looks blank"
    assert not list(sample_plots[plots.PLOT_FILES[0]].parent.glob("*.tmp")), "a .tmp file was left behind"


def test_the_sample_timeline_puts_cualtis_on_top_with_its_pair_connected(sample_scan):
    _, result = sample_scan
    ax = plots.issuance_timeline(result.certs, result.findings, suspects=result.suspects).axes[0]
    assert ax.get_yticklabels()[0].get_text() == "cualtis (3)"
    assert "revoked after 4.6 h, reissued 23 min later" in [t.get_text() for t in ax.texts]


def test_the_plots_rank_by_the_scores_of_suspects_csv(sample_scan):
    _, result = sample_scan
    expected = dict(zip(result.suspects["sha256"], result.suspects["score"]))
    assert plots.suspect_scores(result.suspects).to_dict() == expected and len(expected) == 6
    ranking = plots.subscriber_scores(result.certs, result.findings, suspects=result.suspects)
    assert ranking["score"].sum() == sum(expected.values())


def test_the_plots_ask_for_the_scans_scores_rather_than_compute_their_own():
    with pytest.raises(TypeError, match="suspects="):
        plots.timeline_frame(_certs(), _findings())


def test_reissue_subscribers_count_towards_the_top_limit():
    certs = frame_from_rows([
        *_WIDGETS_REISSUE,
    ], CERT_COLUMNS)
    findings = frame_from_rows([{"sha256": A, "code": "revoke_reissue", "related_sha256": B}], FINDING_COLUMNS)
    frame = plots.timeline_frame(certs, findings, top=1, scores=certificate_scores(findings))
    assert frame["subscriber"].unique().tolist() == ["exmaplewidgets"]
