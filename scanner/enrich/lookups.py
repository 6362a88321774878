"""What the registry clients (RDAP, WHOIS, DNS) share: the no-connection mark and dates (retries: core.net)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from scanner.core.records import Registration, RegistrationStatus

#: Detail prefix of answers that failed because nothing could be reached (no route, refused, no DNS).
NO_CONNECTION = "no connection"


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(timezone.utc)


def parse_date(value: Any) -> datetime | None:
    """An ISO 8601 date from a registry -> aware UTC datetime (None when unreadable)."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when.astimezone(timezone.utc)


def failed_to_connect(reg: Registration) -> bool:
    """True when this answer is unknown because nothing could be reached."""
    return reg.status is RegistrationStatus.UNKNOWN and reg.detail.startswith(NO_CONNECTION)
