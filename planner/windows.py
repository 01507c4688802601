"""Maintenance windows in their own time zones: is one open now, and when does the next open?

A window is weekly: a start and end wall-clock time on the days it names, in an IANA time zone
(zoneinfo), so "02:00-04:00 Saturday in Europe/Berlin" keeps meaning that across DST. A window
whose end is not after its start crosses midnight and ends the next day; `days` names the day it
starts. The answer is computed from the instant given, never from a clock.

A wall-clock time that does not exist on a day (inside the gap when clocks spring forward)
is taken as the end of the gap: "02:30-03:30" on the day clocks jump from 02:00 to 03:00 is
open from 03:00 to 03:30, not never. A time that exists twice (clocks fall back) is its first
occurrence.
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
        end_day = day if window.end > window.start else day + timedelta(days=1)
        start = _instant(datetime.combine(day, window.start, tzinfo=zone))
        end = _instant(datetime.combine(end_day, window.end, tzinfo=zone))
        if start < end:
            found.append((start, end))
    return found


def _instant(local: datetime) -> datetime:
    """The UTC instant of a local wall-clock time; one in a spring-forward gap is the gap's end."""
    instant = local.astimezone(UTC)
    if instant.astimezone(local.tzinfo).replace(tzinfo=None) == local.replace(tzinfo=None):
        return instant
    # In a gap: fold=1 reads it with the offset after the jump (an instant before the jump),
    # fold=0 with the offset before it (an instant after). The jump lies between.
    before, after = local.replace(fold=1).astimezone(UTC), instant
    offset_after = after.astimezone(local.tzinfo).utcoffset()
    while after - before > timedelta(seconds=1):
        middle = before + (after - before) / 2
        if middle.astimezone(local.tzinfo).utcoffset() == offset_after:
            after = middle
        else:
            before = middle
    return after.replace(microsecond=0)


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
