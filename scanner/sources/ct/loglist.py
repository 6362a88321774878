"""Log list v3: RFC 6962 logs (`logs`, url) and static-ct-api logs (`tiled_logs`, monitoring_url), and which to read."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

RFC6962 = "rfc6962"
STATIC = "static-ct-api"
STATES = ("pending", "qualified", "usable", "readonly", "retired", "rejected")


class LogListError(ValueError):
    """The log list is unreadable, or a requested log is not in it; the message says what to do."""


@dataclass(frozen=True)
class LogInfo:
    """One CT log as the log list describes it."""

    name: str  # the description, e.g. "Google 'Argon2025h1'"
    api: str  # RFC6962 or STATIC
    url: str  # RFC 6962 base URL, or the static-ct-api monitoring prefix; always ends with '/'
    key: bytes  # DER SubjectPublicKeyInfo
    log_id: bytes
    state: str = ""
    temporal_interval: tuple[datetime | None, datetime | None] = (None, None)
    origin: str = ""  # static-ct-api checkpoint origin: the submission prefix without scheme or trailing '/'
    operator: str = ""
    final_tree_head: tuple[int, bytes] | None = None  # readonly logs: (tree_size, root) the list froze them at


def _slash(url: str) -> str:
    return url if url.endswith("/") else url + "/"


def origin_of(url: str) -> str:
    """A checkpoint origin from a log prefix URL: 'https://log.example/2025h2/' -> 'log.example/2025h2'."""
    return url.split("://", 1)[-1].rstrip("/")


def _time(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)


def log_from_json(obj: dict[str, Any], operator: str = "") -> LogInfo:
    """One log object of log list v3 (a `logs` or `tiled_logs` member) -> LogInfo."""
    name = str(obj.get("description") or obj.get("url") or obj.get("monitoring_url") or "?")
    try:
        key = base64.b64decode(obj["key"], validate=True)
        lid = base64.b64decode(obj["log_id"], validate=True)
    except (KeyError, binascii.Error) as exc:
        raise LogListError(f"log {name!r} has no readable key/log_id ({exc})") from None
    if "monitoring_url" in obj:
        api, url = STATIC, _slash(obj["monitoring_url"])
        origin = origin_of(obj.get("submission_url") or obj["monitoring_url"])
    elif "url" in obj:
        api, url, origin = RFC6962, _slash(obj["url"]), ""
    else:
        raise LogListError(f"log {name!r} has neither url nor monitoring_url")
    state_obj = obj.get("state") or {}
    state = next(iter(state_obj), "") if isinstance(state_obj, dict) else str(state_obj)
    state = state or str(obj.get("status", ""))
    ti = obj.get("temporal_interval") or {}
    try:
        interval = (_time(ti.get("start_inclusive")), _time(ti.get("end_exclusive")))
    except ValueError as exc:
        raise LogListError(f"log {name!r} has an unreadable temporal_interval: {exc}") from None
    return LogInfo(name, api, url, key, lid, state, interval, origin, operator, _final_tree_head(obj, name))


def _final_tree_head(obj: dict[str, Any], name: str) -> tuple[int, bytes] | None:
    """The final tree head of a readonly log (state.readonly.final_tree_head, or a lone log's final_tree_head)."""
    state = obj.get("state")
    fth = (state.get("readonly") or {}).get("final_tree_head") if isinstance(state, dict) else None
    fth = fth or obj.get("final_tree_head")
    if not fth:
        return None
    try:
        size, root = int(fth["tree_size"]), base64.b64decode(fth["sha256_root_hash"], validate=True)
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise LogListError(f"log {name!r} has an unreadable final_tree_head ({exc})") from None
    if size < 0 or len(root) != 32:
        raise LogListError(f"log {name!r} has a final_tree_head of size {size} with a {len(root)}-byte root")
    return size, root


def load_log_list(path: Path) -> list[LogInfo]:
    """Every log (RFC 6962 and tiled) of a log list v3 file; a lone log object is accepted too."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LogListError(f"cannot read the log list {path}: {exc}; pass a log list v3 JSON "
                           "(e.g. https://www.gstatic.com/ct/log_list/v3/all_logs_list.json)") from None
    if isinstance(data, dict) and "operators" not in data and "key" in data:
        return [log_from_json(data)]
    if not isinstance(data, dict) or not isinstance(data.get("operators"), list):
        raise LogListError(f"{path} is not a log list v3 (no 'operators' array)")
    logs = []
    for op in data["operators"]:
        for obj in list(op.get("logs") or []) + list(op.get("tiled_logs") or []):
            logs.append(log_from_json(obj, str(op.get("name", ""))))
    return logs


def _overlaps(interval: tuple[datetime | None, datetime | None],
              wanted: tuple[datetime | None, datetime | None]) -> bool:
    start, end = interval
    lo, hi = wanted
    # A log without a temporal interval accepts any notAfter, so it may hold the CA's certificates.
    return (hi is None or start is None or start < hi) and (lo is None or end is None or lo < end)


def select_logs(
    logs: Sequence[LogInfo],
    names: Iterable[str] = (),
    states: Iterable[str] = (),
    for_not_after: tuple[datetime | None, datetime | None] = (None, None),
) -> list[LogInfo]:
    """The logs to read: named ones (description or URL), else those in `states` whose interval overlaps."""
    names, states = list(names), [s.strip().lower() for s in states if s.strip()]
    for s in states:
        if s not in STATES:
            raise LogListError(f"unknown log state {s!r}; use some of {', '.join(STATES)}")
    if names:
        chosen = []
        for want in names:
            w = want.strip()
            hits = [lg for lg in logs if lg.name.lower() == w.lower() or lg.url == _slash(w)
                    or lg.url.split("://", 1)[-1] == _slash(w).split("://", 1)[-1]]
            if not hits:
                raise LogListError(f"log {want!r} is not in the log list; give its description or URL exactly "
                                   "as the list does (its key is needed to verify what it serves)")
            chosen.extend(h for h in one_per_log(hits) if h not in chosen)
        return chosen
    if not states:
        raise LogListError("choose the logs to read: --log NAME_OR_URL, or --logs STATES (e.g. usable,readonly)")
    return one_per_log([lg for lg in logs if lg.state in states and _overlaps(lg.temporal_interval, for_not_after)])


def one_per_log(logs: Sequence[LogInfo]) -> list[LogInfo]:
    """Each log once: a log listed under both `logs` and `tiled_logs` (one key, one tree) is read through its tiles.

    Reading it through both APIs would fetch the same entries twice; tiles are the cheaper, checkable read.
    """
    best: dict[bytes, LogInfo] = {}
    for lg in logs:
        if lg.log_id not in best or (lg.api == STATIC and best[lg.log_id].api != STATIC):
            best[lg.log_id] = lg
    return [lg for lg in logs if best[lg.log_id] is lg]
