"""Maintenance windows in their own time zones: is one open now, and when does the next open?

A window is weekly: a start and end wall-clock time on the days it names, in an IANA time zone
(zoneinfo), so "02:00-04:00 Saturday in Europe/Berlin" keeps meaning that across DST. A window
whose end is not after its start crosses midnight and ends the next day; `days` names the day it
starts. The answer is computed from the instant given, never from a clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from planner.policy import WEEKDAYS, MaintenanceWindow


@dataclass(frozen=True, slots=True, kw_only=True)
class WindowState:
    open_now: bool
    # When open: the end of the open window that ends last. Else: the next start (UTC), if any.
    current_end: datetime | None = None
    next_start: datetime | None = None


def parse_instant(value: datetime | str) -> datetime:
    """An aware datetime, or an RFC 3339 string with an offset; naive values are refused."""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError as exc:
            raise ValueError(f"now: {value!r} is not an RFC 3339 timestamp") from exc
    else:
        parsed = value
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise ValueError(f"now: {value!r} has no time zone offset")
    return parsed.astimezone(UTC)


def rfc3339(instant: datetime) -> str:
    return instant.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _occurrences(window: MaintenanceWindow, around: datetime) -> list[tuple[datetime, datetime]]:
    zone = ZoneInfo(window.timezone)
    local_day = around.astimezone(zone).date()
    found: list[tuple[datetime, datetime]] = []
    for offset in range(-1, 9):
        day = local_day + timedelta(days=offset)
        if window.days and WEEKDAYS[day.weekday()] not in window.days:
            continue
        start = datetime.combine(day, window.start, tzinfo=zone)
        end_day = day if window.end > window.start else day + timedelta(days=1)
        end = datetime.combine(end_day, window.end, tzinfo=zone)
        found.append((start.astimezone(UTC), end.astimezone(UTC)))
    return found


def window_state(windows: tuple[MaintenanceWindow, ...], now: datetime) -> WindowState:
    """No windows means always open."""
    if not windows:
        return WindowState(open_now=True)
    ends: list[datetime] = []
    starts: list[datetime] = []
    for window in windows:
        for start, end in _occurrences(window, now):
            if start <= now < end:
                ends.append(end)
            elif start > now:
                starts.append(start)
    if ends:
        return WindowState(open_now=True, current_end=max(ends))
    return WindowState(open_now=False, next_start=min(starts) if starts else None)
