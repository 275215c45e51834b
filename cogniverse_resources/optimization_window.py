"""A tenant's optimization window: the local hours (``"01:00-05:00"``, in a named time zone) in which
its lanes may start. A window whose end is before its start runs across midnight (``"22:00-02:00"``).

Starting a lane is what the window governs: a run started at 04:59 finishes whenever it finishes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

WINDOW_PATTERN = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]|24):([0-5]\d)$")


class InvalidWindow(ValueError):
    """An ``optimization_window`` or ``optimization_timezone`` that cannot be used."""


def time_zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name`` (``"Europe/Berlin"``, ``"UTC"``); a clear error for anything else."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as error:
        close = sorted(zone for zone in available_timezones() if zone.lower().endswith(name.lower().split("/")[-1]))
        hint = f" (did you mean {', '.join(close[:3])}?)" if close else ""
        raise InvalidWindow(
            f"unknown time zone {name!r}: use an IANA name such as 'Europe/Berlin' or 'UTC'{hint}"
        ) from error


@dataclass(frozen=True)
class OptimizationWindow:
    """Local start (inclusive) and end (exclusive) times, in ``zone``; ``text`` as it was set."""

    text: str
    start: time
    end: time
    zone: ZoneInfo

    @classmethod
    def parse(cls, text: str, zone_name: str = "UTC") -> "OptimizationWindow":
        match = WINDOW_PATTERN.fullmatch(text.strip())
        if not match:
            raise InvalidWindow(f"optimization_window {text!r}: use HH:MM-HH:MM in 24-hour time, e.g. '01:00-05:00'")
        start_h, start_m, end_h, end_m = (int(part) for part in match.groups())
        if end_h == 24 and end_m:
            raise InvalidWindow(f"optimization_window {text!r}: the latest end is 24:00")
        start = time(start_h, start_m)
        end = time(0, 0) if end_h == 24 else time(end_h, end_m)
        if start == end:
            raise InvalidWindow(
                f"optimization_window {text!r} is empty: a window must have a length (clear the setting for any time)"
            )
        return cls(text.strip(), start, end, time_zone(zone_name))

    @property
    def crosses_midnight(self) -> bool:
        return self.end <= self.start  # an end of 24:00 is stored as 00:00, so 20:00-24:00 is here too

    def __str__(self) -> str:
        return f"{self.text} {self.zone.key}"

    def contains(self, moment: datetime) -> bool:
        """Whether the aware ``moment`` falls inside the window, in the window's local time."""
        local = moment.astimezone(self.zone).time()
        if self.crosses_midnight:
            return local >= self.start or local < self.end
        return self.start <= local < self.end

    def next_opening(self, moment: datetime) -> datetime:
        """The first start of the window after the aware ``moment`` (in the window's zone)."""
        local = moment.astimezone(self.zone)
        for days in range(3):  # today's start may be past; tomorrow's is not (a DST day included)
            candidate = datetime.combine(local.date() + timedelta(days=days), self.start, tzinfo=self.zone)
            if candidate > local:
                return candidate
        raise AssertionError("unreachable: a start within two days always exists")

    def closed_reason(self, moment: datetime) -> str:
        """What a lane outside its window is told: when the window opens next."""
        opening = self.next_opening(moment)
        wait = opening.astimezone(timezone.utc) - moment.astimezone(timezone.utc)  # real time, DST included
        hours, rest = divmod(int(wait.total_seconds()), 3600)
        return f"outside optimization window {self} (opens in {hours}h{rest // 60:02d}m, at {opening.isoformat()})"
