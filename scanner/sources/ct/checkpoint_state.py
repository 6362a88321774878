"""Per-log resume state: the next entry index to read (and, for RFC 6962, the Merkle prefix), written atomically."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STATE_VERSION = 1


@dataclass
class LogState:
    """Where a log's reading stopped: entries below next_index were all delivered."""

    url: str
    next_index: int = 0
    #: RFC 6962: the compact Merkle range of [0, next_index), so a resumed run can still check the root
    stack: list[Any] | None = None
    tree_size: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def state_path(cache_dir: Path, log_url: str) -> Path:
    """The state file of one log under the cache directory."""
    slug = hashlib.sha256(log_url.encode()).hexdigest()[:16]
    return Path(cache_dir) / "ct-state" / f"{slug}.json"


def load_state(path: Path, log_url: str) -> LogState:
    """The saved state, or a fresh one when there is none (or it belongs to another log or version)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return LogState(log_url)
    if data.get("version") != STATE_VERSION or data.get("url") != log_url:
        return LogState(log_url)
    return LogState(log_url, int(data.get("next_index", 0)), data.get("stack"),
                    int(data.get("tree_size", 0)), dict(data.get("extra") or {}))


def save_state(path: Path, state: LogState) -> None:
    """Write the state atomically: a kill at any moment leaves the old or the new file, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    data = {"version": STATE_VERSION, "url": state.url, "next_index": state.next_index,
            "stack": state.stack, "tree_size": state.tree_size, "extra": state.extra}
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, path)
