"""The ``current_time`` tool: the current time, locally or in a named IANA time zone."""

import re
from datetime import UTC, datetime, timedelta, tzinfo
from typing import TypedDict
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from agent import ToolError, tool

__all__ = ["CurrentTime", "current_time"]

# IANA names are letters, digits, "_", "+" and "-" in "/"-separated parts. Checking the shape
# first keeps model-written strings such as "../../etc/passwd" away from the file system.
_ZONE_NAME = re.compile(r"[A-Za-z0-9_+-]{1,64}(?:/[A-Za-z0-9_+-]{1,64}){0,3}")

# English names by ISO weekday, independent of the process locale (unlike strftime("%A")).
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


class CurrentTime(TypedDict):
    """What ``current_time`` returns: one instant, in the requested zone and in UTC."""

    timezone: str
    abbreviation: str
    local_time: str
    utc_offset: str
    weekday: str
    utc_time: str
    unix_timestamp: int


@tool
async def current_time(timezone: str | None = None) -> CurrentTime:
    """Get the current date and time, in the system's local time zone or a named one.

    Returns the time zone, its abbreviation (e.g. "CEST"), the local date and time in
    ISO 8601 with its UTC offset (e.g. "2025-06-01T14:30:00+02:00"), the UTC offset, the day
    of the week, the same instant in UTC, and the Unix timestamp in whole seconds.

    Args:
        timezone: An IANA time zone name such as "Europe/Paris", "America/New_York" or "UTC";
            omit it for the system's local time zone.
    """
    now = datetime.now(UTC).replace(microsecond=0)
    local = now.astimezone(_zone(timezone)) if timezone is not None else now.astimezone()
    return {
        "timezone": timezone if timezone is not None else "local",
        "abbreviation": local.tzname() or "",
        "local_time": local.isoformat(),
        "utc_offset": _offset(local),
        "weekday": _WEEKDAYS[local.weekday()],
        "utc_time": now.isoformat(),
        "unix_timestamp": int(now.timestamp()),
    }


def _offset(moment: datetime) -> str:
    """The UTC offset as ``+HH:MM`` (``datetime.strftime("%z")`` drops the colon)."""
    minutes = (moment.utcoffset() or timedelta(0)) // timedelta(minutes=1)
    sign = "-" if minutes < 0 else "+"
    hours, minutes = divmod(abs(minutes), 60)
    return f"{sign}{hours:02d}:{minutes:02d}"


def _zone(name: str) -> tzinfo:
    """Look up an IANA zone, turning every way a name can be wrong into one clear ToolError."""
    if _ZONE_NAME.fullmatch(name) is None:
        raise _unknown_zone(name)
    try:
        # ZoneInfo caches zones, so only a zone's first lookup reads its TZif file, a few KB from
        # the page cache: too little to send this async tool to a worker thread.
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        # ValueError: not a TZif file; OSError: a directory such as "Europe".
        raise _unknown_zone(name) from None


def _unknown_zone(name: str) -> ToolError:
    return ToolError(
        f"unknown time zone {name!r}: use an IANA name such as 'Europe/Paris', "
        "'America/New_York' or 'UTC', or omit timezone for local time"
    )
