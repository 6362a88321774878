"""PNG plots of a scan: issuance timeline per subscriber, revocation latency, findings per month.

Each plot is a pure data function (tested on its values) plus a function drawing a matplotlib
Figure from it, so notebooks show the same pictures `ctscan scan --plots` writes. The plots render
what the scan computed and compute none of it: the suspect scores come in (`scores`, or the scan's
`suspects` table), and a timeline row is a subscriber as enrich.subscribers defines it
(subscriber_key), the same definition that pairs revocations and keeps subscribers whole on Dask. Figures are
built without pyplot on an Agg canvas: no display is needed and no global backend is switched,
so a notebook's inline display keeps working. Empty data draws a figure that says "no data".
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.dates as mdates
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from scanner.core.atomic import atomic_path
from scanner.core.records import FINDING_CODES, is_lint_code
from scanner.core.times import duration_text
from scanner.enrich.subscribers import subscriber_keys

#: Report-relative file names of the plots, in the order write_plots draws them.
PLOT_FILES: tuple[str, ...] = (
    "plots/issuance_timeline.png",
    "plots/revocation_latency.png",
    "plots/findings_per_month.png",
)
#: The rates plot, written with the others when a scan has its rates table (trends.csv).
RATES_PLOT = "plots/rates_per_month.png"

#: CA/B Forum Baseline Requirements 4.9.1.1 revocation deadlines, in hours.
BR_DEADLINES: tuple[tuple[float, str], ...] = (
    (24.0, "24 h (BR 4.9.1.1: key compromise, failed validation...)"),
    (120.0, "5 days (BR 4.9.1.1: the other reasons)"),
)

NO_SUBSCRIBER = "(no name)"
MIN_LATENCY_HOURS = 1 / 60  # a log axis cannot show 0: faster (or backdated) revocations sit at 1 minute
_LABEL_MAX = 32  # subscriber labels come from certificates; long ones would squeeze the plot
_DPI = 110
_PAIR_LABELS = 20  # beyond this many revoke_reissue pairs, timing labels would cover the timeline


# --- data ---------------------------------------------------------------------------------


def subscribers(certs: pd.DataFrame) -> pd.Series:
    """The subscriber label of every certificate (subscriber_key; NO_SUBSCRIBER for none), index aligned with certs."""
    keys = subscriber_keys(certs)
    return keys.where(keys != "", NO_SUBSCRIBER)


def suspect_scores(suspects: pd.DataFrame) -> pd.Series:
    """The score of every suspect certificate (sha256 -> score), as the suspects table (suspects.csv) has it."""
    if suspects.empty:
        return pd.Series([], dtype="float64")
    return pd.Series(suspects["score"].astype("float64").to_numpy(), index=suspects["sha256"].astype("object"))


def _scores(findings: pd.DataFrame, scores: pd.Series | None, suspects: pd.DataFrame | None) -> pd.Series:
    """The scores given, else those of the suspects table; the plots never compute a score themselves."""
    if scores is not None:
        return scores
    if suspects is not None:
        return suspect_scores(suspects)
    if findings.empty:
        return pd.Series([], dtype="float64")
    raise TypeError("the plots rank by the scan's suspect scores: pass suspects= (the scan's suspects table, "
                    "ScanResult.suspects) or scores= (sha256 -> score)")


def subscriber_scores(certs: pd.DataFrame, findings: pd.DataFrame, *, scores: pd.Series | None = None,
                      suspects: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per subscriber: certificates, suspects, findings and score (sum of its suspects' scores), most suspicious first.

    The scores are `scores` (sha256 -> score) or, when absent, those of the `suspects` table.
    """
    columns = ["subscriber", "certificates", "suspects", "findings", "score"]
    if certs.empty:
        return pd.DataFrame(columns=columns)
    frame = pd.DataFrame({"sha256": certs["sha256"].astype("object"), "subscriber": subscribers(certs)})
    frame["score"] = frame["sha256"].map(_scores(findings, scores, suspects))
    per_cert = findings.groupby("sha256").size() if not findings.empty else pd.Series(dtype="int64")
    frame["findings"] = frame["sha256"].map(per_cert).fillna(0).astype("int64")
    frame["score"] = frame["score"].astype("float64").fillna(0.0)
    out = frame.groupby("subscriber", sort=False).agg(
        certificates=("sha256", "size"),
        suspects=("score", lambda s: int((s > 0).sum())),
        findings=("findings", "sum"),
        score=("score", "sum"),
    ).reset_index()
    out = out.sort_values(["score", "findings", "certificates", "subscriber"],
                          ascending=[False, False, False, True], kind="mergesort")
    return out[columns].reset_index(drop=True)


def reissue_pairs(findings: pd.DataFrame) -> list[tuple[str, str]]:
    """(revoked certificate, its reissue) for every revoke_reissue finding, each pair once."""
    if findings.empty:
        return []
    rows = findings[findings["code"] == "revoke_reissue"]
    pairs = [(str(a), str(b)) for a, b in zip(rows["sha256"], rows["related_sha256"].fillna(""))
             if b and not pd.isna(b)]
    return list(dict.fromkeys(pairs))


def timeline_frame(certs: pd.DataFrame, findings: pd.DataFrame, top: int = 12, *,
                   scores: pd.Series | None = None, suspects: pd.DataFrame | None = None) -> pd.DataFrame:
    """Certificates of the `top` most suspicious subscribers, one row each (a reissue's subscriber counts as one).

    Columns: sha256, subscriber, row (0 = most suspicious), not_before, revoked_at, score. Scores as
    in subscriber_scores.
    """
    columns = ["sha256", "subscriber", "row", "not_before", "revoked_at", "score"]
    scores = _scores(findings, scores, suspects)
    ranking = subscriber_scores(certs, findings, scores=scores)
    ranking = ranking[ranking["score"] > 0].head(max(int(top), 0))
    if ranking.empty:
        return pd.DataFrame(columns=columns)
    frame = pd.DataFrame({
        "sha256": certs["sha256"].astype("object"),
        "subscriber": subscribers(certs),
        "not_before": certs["not_before"],
        "revoked_at": certs["revoked_at"],
    })
    # A reissue under a corrected subject O is another subscriber: show it below its partner's row.
    owner = dict(zip(frame["sha256"], frame["subscriber"]))
    partners: dict[str, list[str]] = {}
    for a, b in reissue_pairs(findings):
        if a in owner and b in owner and owner[a] != owner[b]:
            partners.setdefault(owner[a], []).append(owner[b])
            partners.setdefault(owner[b], []).append(owner[a])
    rows: dict[str, int] = {}
    for name in ranking["subscriber"]:
        for shown in [name, *partners.get(name, [])]:
            if len(rows) < top:
                rows.setdefault(shown, len(rows))
    frame = frame[frame["subscriber"].isin(rows) & frame["not_before"].notna()].copy()
    frame["row"] = frame["subscriber"].map(rows).astype("int64")
    frame["score"] = frame["sha256"].map(scores).astype("float64").fillna(0.0)
    return frame.sort_values(["row", "not_before", "sha256"], kind="mergesort")[columns].reset_index(drop=True)


def latency_hours(certs: pd.DataFrame) -> pd.Series:
    """revoked_at - not_before in hours for every revoked certificate (index aligned with certs)."""
    if certs.empty:
        return pd.Series([], dtype="float64")
    revoked = certs[certs["revoked_at"].notna() & certs["not_before"].notna()]
    delta = revoked["revoked_at"] - revoked["not_before"]
    return (delta.dt.total_seconds() / 3600.0).astype("float64")


def monthly_counts(certs: pd.DataFrame, findings: pd.DataFrame) -> pd.DataFrame:
    """Findings per notBefore month ("YYYY-MM" index, months without findings kept as 0) and code (columns)."""
    if certs.empty or findings.empty:
        return pd.DataFrame()
    not_before = dict(zip(certs["sha256"].astype("object"), certs["not_before"]))
    when = pd.to_datetime(findings["sha256"].astype("object").map(not_before), utc=True)
    dated = pd.DataFrame({"month": when, "code": findings["code"].astype("object")}).dropna()
    if dated.empty:
        return pd.DataFrame()
    dated["month"] = dated["month"].dt.tz_convert(None).dt.to_period("M")
    table = dated.groupby(["month", "code"]).size().unstack("code", fill_value=0)
    months = pd.period_range(table.index.min(), table.index.max(), freq="M")
    table = table.reindex(months, fill_value=0)
    table.index = table.index.strftime("%Y-%m")
    table.index.name = "month"
    order = [c for c in FINDING_CODES if c in table.columns] + sorted(c for c in table.columns if c not in FINDING_CODES)
    table = table[order].astype("int64")
    table.columns.name = "code"
    return table


def pair_timing(not_before: pd.Timestamp, revoked_at: pd.Timestamp, reissued: pd.Timestamp) -> str:
    """'revoked after 4.6 h, reissued 23 min later' for a revoke_reissue pair."""
    latency = (revoked_at - not_before).total_seconds() / 3600
    gap = (reissued - revoked_at).total_seconds() / 3600
    return f"revoked after {duration_text(latency)}, reissued {duration_text(gap)} {'later' if gap >= 0 else 'before'}"


# --- figures ------------------------------------------------------------------------------


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _no_data(fig: Figure, title: str, why: str) -> Figure:
    ax = fig.add_subplot()
    ax.set_title(title)
    ax.text(0.5, 0.5, f"no data\n{why}", ha="center", va="center", fontsize=13, color="0.4",
            transform=ax.transAxes)
    ax.set_axis_off()
    return fig


def _short(label: str) -> str:
    return label if len(label) <= _LABEL_MAX else label[: _LABEL_MAX - 1] + "\u2026"


def _plain(text: str) -> str:
    # "$" would switch matplotlib to mathtext; values from certificates must stay literal text.
    return text.replace("$", r"\$")


def _code_colours(codes: list[str]) -> dict[str, object]:
    import matplotlib

    palette = matplotlib.colormaps["tab10"]
    known = list(FINDING_CODES)
    return {c: palette((known.index(c) if c in known else len(known) + i) % 10) for i, c in enumerate(codes)}


def issuance_timeline(certs: pd.DataFrame, findings: pd.DataFrame, top: int = 12, *,
                      scores: pd.Series | None = None, suspects: pd.DataFrame | None = None) -> Figure:
    """Issuance timeline of the `top` most suspicious subscribers: notBefore, revocations, reissue pairs.

    Scores as in subscriber_scores.
    """
    title = f"Issuance timeline of the most suspicious subscribers (up to {top})"
    frame = timeline_frame(certs, findings, top, scores=scores, suspects=suspects)
    if frame.empty:
        return _no_data(_figure(10, 3), title, "no certificate with findings")
    n_rows = int(frame["row"].max()) + 1
    fig = _figure(11, max(3.0, 1.2 + 0.55 * n_rows))
    ax = fig.add_subplot()
    # Certificates of one subscriber issued hours apart overlap at a years-wide scale: stagger them.
    slot = frame.groupby("row").cumcount() % 3
    slots = frame.groupby("row")["row"].transform("size").clip(upper=3)
    frame["y"] = frame["row"] + (slot - (slots - 1) / 2) * 0.27
    x_start = mdates.date2num(frame["not_before"].dt.tz_convert(None).to_numpy())
    suspect = frame["score"].to_numpy() > 0
    ax.scatter(x_start[~suspect], frame["y"][~suspect], s=30, marker="o", facecolor="white", edgecolor="0.35",
               zorder=3, label="certificate (notBefore)")
    ax.scatter(x_start[suspect], frame["y"][suspect], s=40, marker="o", color="tab:orange", edgecolor="0.2",
               zorder=3, label="suspect certificate (notBefore)")
    revoked = frame["revoked_at"].notna().to_numpy()
    if revoked.any():
        x_rev = mdates.date2num(frame.loc[revoked, "revoked_at"].dt.tz_convert(None).to_numpy())
        y_rev = frame.loc[revoked, "y"].to_numpy()
        ax.hlines(y_rev, x_start[revoked], x_rev, color="tab:red", linewidth=1, zorder=2)
        ax.scatter(x_rev, y_rev, s=45, marker="x", color="tab:red", zorder=4, label="revocation")
    where = {sha: (x, y, nb, rv) for sha, x, y, nb, rv in
             zip(frame["sha256"], x_start, frame["y"], frame["not_before"], frame["revoked_at"])}
    drawn = 0
    for a, b in reissue_pairs(findings):
        if a in where and b in where:
            (xa, ya, nb_a, rv_a), (xb, yb, nb_b, _) = where[a], where[b]
            (line,) = ax.plot([xa, xb], [ya, yb], linestyle="--", color="tab:purple", linewidth=1.6, zorder=2,
                              label=None if drawn else "revoked and reissued")
            line.set_gid(f"revoke_reissue:{a}:{b}")
            # At a years-wide scale a pair hours apart is a dot: say the timing in words.
            if drawn < _PAIR_LABELS and not pd.isna(rv_a):
                ax.annotate(pair_timing(nb_a, rv_a, nb_b), (max(xa, xb), (ya + yb) / 2), xytext=(8, 0),
                            textcoords="offset points", va="center", fontsize="x-small", color="tab:purple")
            drawn += 1
    labels = frame.drop_duplicates("row").sort_values("row")
    counts = frame.groupby("row").size()
    ax.set_yticks(range(n_rows))
    ax.set_yticklabels([_plain(f"{_short(s)} ({counts[r]})") for r, s in zip(labels["row"], labels["subscriber"])])
    ax.set_ylim(n_rows - 0.5, -0.5)  # most suspicious at the top
    ax.xaxis_date()
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(ax.xaxis.get_major_locator()))
    ax.grid(axis="x", color="0.9")
    ax.set_xlabel("notBefore (UTC)")
    ax.set_title(title + "; certificates in brackets")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small", frameon=False)
    return fig


def revocation_latency(certs: pd.DataFrame) -> Figure:
    """Histogram of revoked_at - notBefore (log hours) with the BR 24 h and 5 day deadlines."""
    title = "Revocation latency (revoked_at - notBefore)"
    hours = latency_hours(certs)
    if hours.empty:
        return _no_data(_figure(10, 4), title, "no revoked certificate")
    clipped = hours.clip(lower=MIN_LATENCY_HOURS)
    low = MIN_LATENCY_HOURS
    high = max(float(clipped.max()) * 1.5, 24.0 * 30)
    bins = np.logspace(np.log10(low), np.log10(high), 40)
    fig = _figure(10, 5.5)
    ax = fig.add_subplot()
    ax.hist(clipped, bins=bins, color="tab:blue", edgecolor="white", label=f"revoked certificates ({len(hours)})")
    ax.set_xscale("log")
    ax.set_xlim(low, high)
    colours = ("tab:red", "tab:orange")
    for (limit, label), colour in zip(BR_DEADLINES, colours):
        within = int((hours <= limit).sum())
        line = ax.axvline(limit, color=colour, linestyle="--", linewidth=1.5,
                          label=f"{label}: {within} revoked within")
        line.set_gid(f"deadline:{limit:g}h")
    ticks = [1 / 60, 1, 24, 24 * 7, 24 * 30, 24 * 365]
    ax.set_xticks([t for t in ticks if low <= t <= high])
    ax.set_xticklabels([{1 / 60: "1 min", 1: "1 h", 24: "1 day", 24 * 7: "1 week", 24 * 30: "30 days",
                         24 * 365: "1 year"}[t] for t in ticks if low <= t <= high])
    ax.set_xlabel("hours from notBefore to revocation (log scale)")
    ax.set_ylabel("certificates")
    ax.yaxis.get_major_locator().set_params(integer=True)
    sub = "the BR deadlines run from when the CA learns of the problem; shown from notBefore for scale"
    nonpositive = int((hours <= 0).sum())
    if nonpositive:
        sub += f"; {nonpositive} revoked at or before notBefore, drawn at 1 min"
    ax.set_title(f"{title}\n{sub}", fontsize="medium")
    ax.margins(y=0.12)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=1, fontsize="small", frameon=False)
    return fig


def findings_per_month(certs: pd.DataFrame, findings: pd.DataFrame) -> Figure:
    """Stacked bars: findings per notBefore month, one colour per finding code."""
    title = "Findings per month of notBefore"
    table = monthly_counts(certs, findings)
    if table.empty:
        return _no_data(_figure(10, 4), title, "no finding")
    lint = [c for c in table.columns if is_lint_code(c)]
    if lint:  # --lint: every pkilint code in one bar segment, or dozens of them would crowd out the rest
        table = table.drop(columns=lint).assign(**{"lint:* (pkilint, all codes)": table[lint].sum(axis=1)})
    fig = _figure(max(8.0, min(20.0, 4 + 0.18 * len(table))), 4.5)
    ax = fig.add_subplot()
    x = np.arange(len(table))
    bottom = np.zeros(len(table))
    colours = _code_colours(list(table.columns))
    for code in table.columns:
        values = table[code].to_numpy()
        ax.bar(x, values, bottom=bottom, color=colours[code], width=0.85, label=_plain(code))
        bottom += values
    step = max(1, len(table) // 24)
    ax.set_xticks(x[::step])
    ax.set_xticklabels(list(table.index[::step]), rotation=60, ha="right", fontsize="small")
    ax.set_xlim(-0.6, len(table) - 0.4)
    ax.set_ylabel("findings")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_title(f"{title} ({int(table.to_numpy().sum())} findings)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small", frameon=False)
    return fig


def rates_per_month(rates: pd.DataFrame) -> Figure:
    """Issued and revoked per notBefore month (bars), and each finding per 1,000 issued (lines), from a rates table."""
    title = "Issuance, revocations and findings per 1,000 issued, per month of notBefore"
    months = rates[rates["period"].astype(str).str.fullmatch(r"\d{4}-\d{2}")].sort_values("period")
    if months.empty:
        return _no_data(_figure(10, 6), title, "no dated certificate")
    fig = _figure(max(8.0, min(20.0, 4 + 0.18 * len(months))), 6.5)
    counts, per_1000 = fig.subplots(2, 1, sharex=True)
    x = np.arange(len(months))
    counts.bar(x, months["issued"].to_numpy(), width=0.85, color="0.75", label="issued")
    counts.bar(x, months["revoked"].to_numpy(), width=0.85, color="tab:orange", label="revoked")
    counts.bar(x, months["revoked_within_window"].to_numpy(), width=0.85, color="tab:red",
               label="revoked within the window")
    counts.set_ylabel("certificates")
    counts.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small", frameon=False)
    counts.set_title(title)
    codes = [c[: -len("_per_1000")] for c in months.columns if c.endswith("_per_1000")]
    colours = _code_colours(codes)
    for code in codes:
        per_1000.plot(x, months[f"{code}_per_1000"].to_numpy(dtype=float), marker="o", markersize=3,
                      color=colours[code], label=_plain(code))
    per_1000.set_ylabel("per 1,000 issued")
    if codes:
        per_1000.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small", frameon=False)
    step = max(1, len(months) // 24)
    per_1000.set_xticks(x[::step])
    per_1000.set_xticklabels(list(months["period"].astype(str))[::step], rotation=60, ha="right", fontsize="small")
    per_1000.set_xlim(-0.6, len(months) - 0.4)
    return fig


# --- files --------------------------------------------------------------------------------


def save_png(fig: Figure, path: Path) -> Path:
    """Write fig as PNG to path atomically and return path."""
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png", dpi=_DPI)
    return Path(path)


def write_plots(out_dir: Path, certs: pd.DataFrame, findings: pd.DataFrame, *, top: int = 12,
                scores: pd.Series | None = None, suspects: pd.DataFrame | None = None) -> dict[str, Path]:
    """Write the three plots as PNG under out_dir/plots/; report-relative name -> path.

    Scores as in subscriber_scores.
    """
    out_dir = Path(out_dir)
    figures = (
        issuance_timeline(certs, findings, top=top, scores=scores, suspects=suspects),
        revocation_latency(certs),
        findings_per_month(certs, findings),
    )
    return {name: save_png(fig, out_dir / name) for name, fig in zip(PLOT_FILES, figures)}
