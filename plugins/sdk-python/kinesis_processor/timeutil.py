"""Event time: ISO-8601 parsing (a zone-less time is UTC, as the seeds'
Python `isoformat()` output means it), formatting, and windows. The same
rules as the Rust SDK's `helpers::time`, so processors in either language
put a record in the same window."""

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


def _digits(t, a, b):
    part = t[a:b]
    if len(part) != b - a or not part.isdigit() or not part.isascii():
        return None
    return int(part)


def _prefix(t: bytes):
    """(millis, bytes used) of a timestamp at the start of `t`, or None."""
    if len(t) < 16:
        return None
    year, month, day, hour, minute = (_digits(t, *r) for r in ((0, 4), (5, 7), (8, 10), (11, 13), (14, 16)))
    if None in (year, month, day, hour, minute):
        return None
    if t[4:5] != b"-" or t[7:8] != b"-" or t[10:11] not in (b"T", b"t", b" ") or t[13:14] != b":":
        return None
    if not 1 <= month <= 12 or day < 1 or day > _days_in_month(year, month) or hour > 23 or minute > 59:
        return None
    pos, second, millis = 16, 0, 0
    if t[pos : pos + 1] == b":":
        second = _digits(t, pos + 1, pos + 3)
        if second is None or second > 60:
            return None
        pos += 3
        if t[pos : pos + 1] in (b".", b","):
            pos += 1
            start = pos
            while pos < len(t) and 48 <= t[pos] <= 57:
                pos += 1
            if pos == start:
                return None
            millis = int((t[start:pos] + b"00")[:3])
    offset = 0
    c = t[pos : pos + 1]
    if c in (b"Z", b"z"):
        pos += 1
    elif c in (b"+", b"-"):
        hours = _digits(t, pos + 1, pos + 3)
        if hours is None:
            return None
        if t[pos + 3 : pos + 4] == b":":
            minutes, used = _digits(t, pos + 4, pos + 6), 6
            if minutes is None:
                return None
        else:
            minutes = _digits(t, pos + 3, pos + 5)
            minutes, used = (minutes, 5) if minutes is not None else (0, 3)
        if hours > 23 or minutes > 59:
            return None
        pos += used
        offset = hours * 60 + minutes if c == b"+" else -(hours * 60 + minutes)
    days = _days_from_civil(year, month, day)
    return days * _MS_PER_DAY + (hour * 3600 + minute * 60 + second - offset * 60) * 1000 + millis, pos


def parse_timestamp_millis(text) -> "int | None":
    """Milliseconds since the epoch of an ISO-8601 timestamp (the whole text,
    surrounding whitespace allowed), or None."""
    t = (text.encode() if isinstance(text, str) else bytes(text)).strip(_WS)
    got = _prefix(t)
    return got[0] if got and got[1] == len(t) else None


def parse_leading_timestamp(data) -> "int | None":
    """The timestamp a record's data is or begins with (a log line), or None."""
    t = (data.encode() if isinstance(data, str) else bytes(data)).lstrip(_WS)
    got = _prefix(t)
    if not got:
        return None
    millis, used = got
    if used == len(t) or t[used : used + 1] in (b" ", b"\t", b"\n", b"\r", b"\x0b", b"\x0c", b",", b";", b"|"):
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
