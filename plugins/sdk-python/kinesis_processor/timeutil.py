"""Event time: ISO-8601 parsing (a zone-less time is UTC, as the seeds'
Python `isoformat()` output means it), formatting, and windows. The same
rules as the Rust SDK's `helpers::time`, so processors in either language
put a record in the same window."""

import re

_MS_PER_DAY = 86_400_000
_WS = b" \t\n\r\x0b\x0c"


def _is_leap(y):
    return (y % 4 == 0 and y % 100 != 0) or y % 400 == 0


def _days_in_month(y, m):
    if m == 2:
        return 29 if _is_leap(y) else 28
    return 30 if m in (4, 6, 9, 11) else 31


def _days_from_civil(y, m, d):
    y = y - 1 if m <= 2 else y
    era = y // 400
    yoe = y - era * 400
    doy = (153 * ((m + 9) % 12) + 2) // 5 + d - 1
    return era * 146_097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719_468


def _civil_from_days(days):
    z = days + 719_468
    era = z // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (1 if month <= 2 else 0), month, day


# The shape of a timestamp; `_prefix` checks the ranges. One match in C
# costs less than a step-by-step parse in Python. A piece the shape needs
# but does not find (`:` without seconds, `.` without digits, `+` without
# hours) ends the match early, so the next byte is not a separator and the
# whole parse fails, as the Rust SDK's does; `,` is a separator, so a
# fraction's digits are matched as `\d*` and their absence checked.
_SHAPE = re.compile(
    rb"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d)(?::(\d\d)(?:[.,](\d*))?)?(?:[Zz]|([+-])(\d\d)(?::(\d\d)|(\d\d))?)?"
)
# Start of the minute of `YYYY-MM-DDTHH:MM` (as bytes), for the minutes met
# lately: a stream's records mostly share a few.
_minutes = {}


def _minute(head: bytes, m) -> "int | None":
    year, month, day, hour, minute = (int(g) for g in m.group(1, 2, 3, 4, 5))
    if not 1 <= month <= 12 or day < 1 or day > _days_in_month(year, month) or hour > 23 or minute > 59:
        return None
    if len(_minutes) >= 4096:
        _minutes.clear()
    base = _days_from_civil(year, month, day) * _MS_PER_DAY + (hour * 60 + minute) * 60_000
    _minutes[head] = base
    return base


def _prefix(t: bytes, a: int = 0):
    """(millis, end) of a timestamp starting at `t[a]`, or None."""
    m = _SHAPE.match(t, a)
    if m is None:
        return None
    head = t[a : a + 16]
    base = _minutes.get(head)
    if base is None:
        base = _minute(head, m)
        if base is None:
            return None
    _, _, _, _, _, second, fraction, sign, oh, om, om_bare = m.groups()
    millis = base
    if second is not None:
        s = int(second)
        if s > 60:
            return None
        millis += s * 1000
        if fraction is not None:
            if not fraction:
                return None
            millis += int((fraction + b"00")[:3])
    if sign is not None:
        hours = int(oh)
        minutes = om if om is not None else om_bare
        minutes = int(minutes) if minutes is not None else 0
        if hours > 23 or minutes > 59:
            return None
        offset = hours * 60 + minutes
        millis -= (offset if sign == b"+" else -offset) * 60_000
    return millis, m.end()


def parse_timestamp_millis(text) -> "int | None":
    """Milliseconds since the epoch of an ISO-8601 timestamp (the whole text,
    surrounding whitespace allowed), or None."""
    t = (text.encode() if isinstance(text, str) else bytes(text)).strip(_WS)
    got = _prefix(t)
    return got[0] if got and got[1] == len(t) else None


_AFTER = frozenset(b" \t\n\r\x0b\x0c,;|")


def parse_leading_timestamp(data) -> "int | None":
    """The timestamp a record's data is or begins with (a log line), or None."""
    t = data if type(data) is bytes else data.encode() if isinstance(data, str) else bytes(data)
    a = 0
    if t[:1].isspace():
        a = len(t) - len(t.lstrip(_WS))
    got = _prefix(t, a)
    if not got:
        return None
    millis, end = got
    if end == len(t) or t[end] in _AFTER:
        return millis
    return None


def format_timestamp_millis(millis: int) -> str:
    """`2018-07-29T22:36:00Z` (with `.mmm` when not on a whole second)."""
    days, in_day = divmod(millis, _MS_PER_DAY)
    y, m, d = _civil_from_days(days)
    h, mi, s, ms = in_day // 3_600_000, in_day // 60_000 % 60, in_day // 1000 % 60, in_day % 1000
    frac = f".{ms:03d}" if ms else ""
    return f"{y:04d}-{m:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}{frac}Z"


def window_start(millis: int, size_millis: int) -> int:
    """Start of the fixed window of `size_millis` holding `millis`."""
    return millis - millis % size_millis
