"""Per-log resume state: the next entry index to read (and, for RFC 6962, the Merkle prefix).

A small JSON file, replaced atomically (os.replace), plus an append-only journal of later resume
points: a rename per delivered certificate costs milliseconds on some filesystems, an append does not.
The reader takes the base file and the furthest journal line of the same generation.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

STATE_VERSION = 1
COMPACT_EVERY = 2000  # journal lines before the base file is rewritten and the journal emptied


@dataclass
class LogState:
    """Where a log's reading stopped: entries in [extra['first'], next_index) were all delivered."""

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


def _journal(path: Path) -> Path:
    return path.with_name(path.name + ".journal")


def load_state(path: Path, log_url: str) -> LogState:
    """The saved state, or a fresh one when there is none (or it belongs to another log or version)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return LogState(log_url)
    if data.get("version") != STATE_VERSION or data.get("url") != log_url:
        return LogState(log_url)
    state = LogState(log_url, int(data.get("next_index", 0)), data.get("stack"),
                     int(data.get("tree_size", 0)), dict(data.get("extra") or {}))
    gen = data.get("generation")
    try:
        lines = _journal(path).read_text(encoding="utf-8").splitlines()
    except OSError:
        lines = []
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # a line cut by a crash: the one before it still stands
        if rec.get("g") == gen and int(rec.get("next", -1)) > state.next_index:
            state.next_index, state.stack = int(rec["next"]), rec.get("stack")
    return state


class StateFile:
    """Writes one log's state: `reset` starts a generation, `advance` records a later resume point."""

    def __init__(self, path: Path):
        self.path = path
        self.generation = ""
        self._journal: TextIO | None = None
        self._lines = 0

    def reset(self, state: LogState) -> None:
        """Write the whole state atomically and start an empty journal."""
        self.close()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.generation = uuid.uuid4().hex
        data = {"version": STATE_VERSION, "generation": self.generation, "url": state.url,
                "next_index": state.next_index, "stack": state.stack, "tree_size": state.tree_size,
                "extra": state.extra}
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data), encoding="utf-8")
        os.replace(tmp, self.path)
        # Lines of older generations are ignored on load, so emptying the journal may come second.
        self._journal = open(_journal(self.path), "w", encoding="utf-8")  # noqa: SIM115 - open across calls
        self._lines = 0

    def advance(self, state: LogState) -> None:
        """Record that everything before state.next_index was delivered."""
        if self._journal is None or self._lines >= COMPACT_EVERY:
            self.reset(state)
            return
        # One write() per line: a kill -9 lands before or after it, never inside.
        self._journal.write(json.dumps({"g": self.generation, "next": state.next_index, "stack": state.stack})
                            + "\n")
        self._journal.flush()
        self._lines += 1

    def close(self) -> None:
        """Close the journal."""
        if self._journal is not None:
            self._journal.close()
            self._journal = None


def save_state(path: Path, state: LogState) -> None:
    """Write a state atomically in one go (no journal)."""
    f = StateFile(path)
    f.reset(state)
    f.close()
