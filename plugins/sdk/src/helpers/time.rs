//! Event-time helpers: ISO-8601 parsing/formatting and window arithmetic.
//!
//! Hand-written rather than taken from `chrono` because it runs once per record
//! on the hot path inside wasm, and must accept Python's naive `isoformat()`
//! (`2018-07-29T22:35:46.694763`, no offset: read as UTC), which RFC 3339
//! parsers reject.

/// Milliseconds in one second.
const MS_PER_SECOND: i64 = 1_000;
/// Milliseconds in one day.
const MS_PER_DAY: i64 = 86_400_000;

/// Parses an ISO-8601 date-time into milliseconds since the Unix epoch.
///
/// Accepts `YYYY-MM-DD[T| ]HH:MM[:SS[.fraction]][Z|±HH:MM|±HHMM]`; without an
/// offset the time is UTC. Surrounding ASCII whitespace is ignored. Returns
/// `None` for anything else, so callers can fall back to arrival time.
pub fn parse_timestamp_millis(text: &[u8]) -> Option<i64> {
    let text = text.trim_ascii();
    match parse_timestamp_prefix(text)? {
        (millis, used) if used == text.len() => Some(millis),
        _ => None,
    }
}

/// Parses data that is, or begins with, an ISO-8601 timestamp: a log line
/// such as `2018-07-29T22:35:46Z GET /index.html 200`. The timestamp must be
/// followed by the end, whitespace, or one of `,;|`. Only the prefix is read,
/// so long records cost no more than short ones.
pub fn parse_leading_timestamp(data: &[u8]) -> Option<i64> {
    let text = data.trim_ascii_start();
    let (millis, used) = parse_timestamp_prefix(text)?;
    match text.get(used) {
        None => Some(millis),
        Some(b) if b.is_ascii_whitespace() || matches!(b, b',' | b';' | b'|') => Some(millis),
        Some(_) => None,
    }
}

/// Parses a timestamp at the start of `text`; returns it and the bytes used.
fn parse_timestamp_prefix(text: &[u8]) -> Option<(i64, usize)> {
    if text.len() < 16 {
        return None;
    }
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        let mut value = 0i64;
        for &b in text.get(range)? {
            if !b.is_ascii_digit() {
                return None;
            }
            value = value * 10 + i64::from(b - b'0');
        }
        Some(value)
    };
    let year = digits(0..4)?;
    let month = digits(5..7)?;
    let day = digits(8..10)?;
    let hour = digits(11..13)?;
    let minute = digits(14..16)?;
    if text[4] != b'-' || text[7] != b'-' || !matches!(text[10], b'T' | b't' | b' ') || text[13] != b':' {
        return None;
    }
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) || hour > 23 || minute > 59 {
        return None;
    }
    let mut pos = 16;
    let mut second = 0;
    let mut millis = 0;
    if text.get(pos) == Some(&b':') {
        second = digits(pos + 1..pos + 3)?;
        if second > 60 {
            return None;
        }
        pos += 3;
        if matches!(text.get(pos), Some(b'.' | b',')) {
            pos += 1;
            let start = pos;
            while text.get(pos).is_some_and(u8::is_ascii_digit) {
                if pos - start < 3 {
                    millis = millis * 10 + i64::from(text[pos] - b'0');
                }
                pos += 1;
            }
            if pos == start {
                return None;
            }
            for _ in (pos - start)..3 {
                millis *= 10;
            }
        }
    }
    let offset_minutes = match text.get(pos) {
        Some(b'Z' | b'z') => {
            pos += 1;
            0
        }
        Some(&sign @ (b'+' | b'-')) => {
            let hours = digits(pos + 1..pos + 3)?;
            let (minutes, used) = if text.get(pos + 3) == Some(&b':') {
                (digits(pos + 4..pos + 6)?, 6)
            } else if let Some(m) = digits(pos + 3..pos + 5) {
                (m, 5)
            } else {
                (0, 3)
            };
            if hours > 23 || minutes > 59 {
                return None;
            }
            pos += used;
            let total = hours * 60 + minutes;
            if sign == b'+' {
                total
            } else {
                -total
            }
        }
        _ => 0,
    };
    let days = days_from_civil(year, month, day);
    let millis =
        days * MS_PER_DAY + (hour * 3600 + minute * 60 + second - offset_minutes * 60) * MS_PER_SECOND + millis;
    Some((millis, pos))
}

/// Formats milliseconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ`, or with
/// `.mmm` when the value has a millisecond part.
pub fn format_timestamp_millis(millis: i64) -> String {
    let mut out = String::with_capacity(24);
    write_timestamp_millis(&mut out, millis);
    out
}

/// Appends the [`format_timestamp_millis`] text of `millis` to `out`.
pub fn write_timestamp_millis(out: &mut String, millis: i64) {
    use std::fmt::Write;
    let days = millis.div_euclid(MS_PER_DAY);
    let in_day = millis.rem_euclid(MS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    let (h, m, s, ms) = (in_day / 3_600_000, in_day / 60_000 % 60, in_day / 1000 % 60, in_day % 1000);
    // Writing to a String cannot fail.
    let _ = write!(out, "{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}");
    if ms != 0 {
        let _ = write!(out, ".{ms:03}");
    }
    out.push('Z');
}

/// Start of the window of `size_millis` that holds `millis` (windows are
/// aligned to the epoch, so 1-minute windows start on whole minutes).
pub fn window_start(millis: i64, size_millis: i64) -> i64 {
    millis - millis.rem_euclid(size_millis)
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_python_isoformat_as_utc() {
        // 2018-07-29T22:35:46.694Z, checked with `date -u -d ... +%s%3N`.
        assert_eq!(parse_timestamp_millis(b"2018-07-29T22:35:46.694763"), Some(1_532_903_746_694));
        assert_eq!(parse_timestamp_millis(b"2018-07-29T22:35:46"), Some(1_532_903_746_000));
        assert_eq!(parse_timestamp_millis(b"  2018-07-29 22:35:46.6\n"), Some(1_532_903_746_600));
    }

    #[test]
    fn honours_offsets() {
        let utc = parse_timestamp_millis(b"2018-07-29T22:35:46Z");
        assert_eq!(utc, Some(1_532_903_746_000));
        assert_eq!(parse_timestamp_millis(b"2018-07-30T00:35:46+02:00"), utc);
        assert_eq!(parse_timestamp_millis(b"2018-07-29T17:35:46-0500"), utc);
        assert_eq!(parse_timestamp_millis(b"2018-07-29T22:35Z"), Some(1_532_903_700_000));
    }

    #[test]
    fn rejects_what_is_not_a_timestamp() {
        for bad in [
            &b""[..],
            b"hello world, not a time",
            b"2018-13-01T00:00:00",
            b"2019-02-29T00:00:00",
            b"2018-07-29T24:00:00",
            b"2018-07-29T22:35:46.",
            b"2018-07-29T22:35:46Q",
            b"{\"name\": \"ruan\"}",
        ] {
            assert_eq!(parse_timestamp_millis(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(parse_timestamp_millis(b"2020-02-29T00:00:00"), Some(1_582_934_400_000));
    }

    #[test]
    fn reads_timestamps_leading_a_line() {
        let t = Some(1_532_903_746_694);
        assert_eq!(parse_leading_timestamp(b"2018-07-29T22:35:46.694Z GET /index.html 200"), t);
        assert_eq!(parse_leading_timestamp(b"2018-07-29T22:35:46.694763"), t);
        assert_eq!(parse_leading_timestamp(b"2018-07-29T22:35:46.694,8.8.8.8"), t);
        assert_eq!(parse_leading_timestamp(b"2018-07-29T22:35:46.694x"), None);
        assert_eq!(parse_leading_timestamp(b"2018-07-29T22:35:46+0200 up"), Some(1_532_896_546_000));
        assert_eq!(parse_leading_timestamp(b"{\"ts\": 1}"), None);
    }

    #[test]
    fn formats_round_trip() {
        for text in
            ["1970-01-01T00:00:00Z", "2018-07-29T22:36:00Z", "1969-12-31T23:59:59.999Z", "2400-02-29T12:00:00.001Z"]
        {
            let millis = parse_timestamp_millis(text.as_bytes()).expect(text);
            assert_eq!(format_timestamp_millis(millis), text);
        }
    }

    #[test]
    fn windows_align_to_the_epoch() {
        let t = parse_timestamp_millis(b"2018-07-29T22:36:59.999").unwrap_or_default();
        assert_eq!(format_timestamp_millis(window_start(t, 60_000)), "2018-07-29T22:36:00Z");
        assert_eq!(window_start(-1, 60_000), -60_000);
    }
}
