//! Dates and times in PostgreSQL's ISO output style (`DateStyle=ISO`) to ISO-8601.
//!
//! PostgreSQL writes `2026-11-22 13:04:05.5+00`, with a space before the time, years
//! before 1 AD as `0044-03-15 ... BC`, and `infinity` / `-infinity` for the endless dates.
//! The JSON encoding uses ISO-8601 instead: a `T` before the time, `Z` for UTC, and
//! astronomical year numbering for the years before 1 AD (1 BC is year `0000`, 44 BC is
//! `-0043`), with a sign before years outside 0000-9999 as ISO-8601's expanded years,
//! `java.time` and Arrow's date parser have it (`+12345-01-01`).
//!
//! Every function here appends a complete JSON string literal to `out`, or returns why the
//! text is not a value of the type; the caller names the type and shows the value.

/// Why a text is not a date or time in the expected style (a [`super::ValueError`]'s reason).
pub(super) type Reason = &'static str;

/// Appends a `date` (`2026-11-22`, `0044-03-15 BC`, `infinity`) as a JSON string.
pub(super) fn write_date(text: &[u8], out: &mut Vec<u8>) -> Result<(), Reason> {
    if write_infinity(text, out) {
        return Ok(());
    }
    let (body, bc) = strip_era(text);
    let (date, rest) = Date::parse(body, bc)?;
    if !rest.is_empty() {
        return Err("unexpected text after the date");
    }
    out.push(b'"');
    date.write(out);
    out.push(b'"');
    Ok(())
}

/// Appends a `timestamp without time zone` (`2026-11-22 13:04:05.5`) as a JSON string
/// with a `T` and no zone: `"2026-11-22T13:04:05.5"`.
pub(super) fn write_timestamp(text: &[u8], out: &mut Vec<u8>) -> Result<(), Reason> {
    if write_infinity(text, out) {
        return Ok(());
    }
    let (body, bc) = strip_era(text);
    let (date, rest) = Date::parse(body, bc)?;
    let rest = rest.strip_prefix(b" ").ok_or("no time after the date")?;
    let (time, rest) = Time::parse(rest)?;
    if !rest.is_empty() {
        return Err("unexpected text after the time");
    }
    out.push(b'"');
    date.write(out);
    out.push(b'T');
    time.write(out);
    out.push(b'"');
    Ok(())
}

/// Appends a `timestamp with time zone` (`2026-11-22 13:04:05.123456+00`) as a JSON string
/// in UTC: `"2026-11-22T13:04:05.123456Z"`. A time at another offset (`+05:30`, or the
/// `+00:19:32` of a zone's local mean time) is converted to UTC, the date included.
pub(super) fn write_timestamptz(text: &[u8], out: &mut Vec<u8>) -> Result<(), Reason> {
    if write_infinity(text, out) {
        return Ok(());
    }
    let (body, bc) = strip_era(text);
    let (mut date, rest) = Date::parse(body, bc)?;
    let rest = rest.strip_prefix(b" ").ok_or("no time after the date")?;
    let (mut time, after_time) = Time::parse(rest)?;
    let (offset, after_offset) = parse_offset(after_time)?;
    if !after_offset.is_empty() {
        return Err("unexpected text after the time zone offset");
    }
    if offset == 0 && !bc && body.get(4) == Some(&b'-') {
        // UTC with a four-digit year (the usual case): the parsed digits are written
        // back exactly as PostgreSQL gave them, so copy them.
        let time_len = rest.len() - after_time.len();
        out.push(b'"');
        out.extend_from_slice(&body[..10]);
        out.push(b'T');
        out.extend_from_slice(&rest[..time_len]);
        out.extend_from_slice(b"Z\"");
        return Ok(());
    }
    if offset != 0 {
        (date, time) = to_utc(date, time, offset);
    }
    out.push(b'"');
    date.write(out);
    out.push(b'T');
    time.write(out);
    out.extend_from_slice(b"Z\"");
    Ok(())
}

/// Appends a `time without time zone` (`13:04:05.123`, up to `24:00:00`) as PostgreSQL
/// gives it, as a JSON string.
pub(super) fn write_time(text: &[u8], out: &mut Vec<u8>) -> Result<(), Reason> {
    let (_, rest) = Time::parse(text)?;
    if !rest.is_empty() {
        return Err("unexpected text after the time");
    }
    write_quoted(text, out);
    Ok(())
}

/// Appends a `time with time zone` (`13:04:05+02`) as PostgreSQL gives it, as a JSON
/// string: without a date, the offset cannot be turned into a zone or removed.
pub(super) fn write_timetz(text: &[u8], out: &mut Vec<u8>) -> Result<(), Reason> {
    let (_, rest) = Time::parse(text)?;
    let (_, rest) = parse_offset(rest)?;
    if !rest.is_empty() {
        return Err("unexpected text after the time zone offset");
    }
    write_quoted(text, out);
    Ok(())
}

/// Appends an `interval` in `IntervalStyle=iso_8601` (`P1Y2M3DT4H5M6.5S`, `PT0S`,
/// `P-1Y-2M3DT-4H`) as PostgreSQL gives it, as a JSON string.
pub(super) fn write_interval(text: &[u8], out: &mut Vec<u8>) -> Result<(), Reason> {
    let rest = text
        .strip_prefix(b"P")
        .ok_or("not an ISO-8601 duration (is IntervalStyle iso_8601?)")?;
    let allowed = |b: &u8| b.is_ascii_digit() || b"YMWDTHS.-".contains(b);
    if rest.is_empty() || !rest.iter().all(allowed) {
        return Err("not an ISO-8601 duration (is IntervalStyle iso_8601?)");
    }
    write_quoted(text, out);
    Ok(())
}

/// A calendar date with the year numbered astronomically (1 BC = 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Date {
    pub(super) year: i64,
    pub(super) month: u8,
    pub(super) day: u8,
}

/// A time of day; the fraction is kept as PostgreSQL's digits (without the dot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Time<'a> {
    pub(super) hour: u8,
    pub(super) minute: u8,
    pub(super) second: u8,
    pub(super) fraction: &'a [u8],
}

impl Date {
    /// Parses `YYYY-MM-DD` (four or more year digits) at the start of `text`; `bc` says the
    /// text ended in ` BC`. Returns the date and the text after it.
    fn parse(text: &[u8], bc: bool) -> Result<(Date, &[u8]), Reason> {
        let year_digits = text.iter().take_while(|b| b.is_ascii_digit()).count();
        // PostgreSQL's dates end in 5874897 AD, seven digits.
        if !(4..=7).contains(&year_digits) {
            return Err("the year does not have 4 to 7 digits");
        }
        let year = digits(&text[..year_digits]).ok_or("the year is not a number")?;
        let rest = &text[year_digits..];
        let (month, rest) = two_digits_after(b'-', rest).ok_or("no month after the year")?;
        let (day, rest) = two_digits_after(b'-', rest).ok_or("no day after the month")?;
        let year = i64::from(year);
        let year = if bc {
            if year == 0 {
                return Err("there is no year 0 BC");
            }
            1 - year
        } else {
            year
        };
        if !(1..=12).contains(&month) {
            return Err("the month is not 1 to 12");
        }
        if day == 0 || day > days_in_month(year, month) {
            return Err("the day is not in the month");
        }
        Ok((Date { year, month, day }, rest))
    }

    /// Appends `YYYY-MM-DD` with the year as ISO-8601 writes it (`0000`, `-0043`, `+12345`).
    pub(super) fn write(&self, out: &mut Vec<u8>) {
        if (0..=9999).contains(&self.year) {
            // The usual case in one fixed-size copy (no call per field).
            let year = self.year as u16;
            let [month_tens, month_ones] = two(self.month);
            let [day_tens, day_ones] = two(self.day);
            out.extend_from_slice(&[
                b'0' + (year / 1000) as u8,
                b'0' + (year / 100 % 10) as u8,
                b'0' + (year / 10 % 10) as u8,
                b'0' + (year % 10) as u8,
                b'-',
                month_tens,
                month_ones,
                b'-',
                day_tens,
                day_ones,
            ]);
            return;
        }
        if self.year < 0 {
            out.push(b'-');
        } else if self.year > 9999 {
            out.push(b'+');
        }
        write_padded(out, self.year.unsigned_abs(), 4);
        out.push(b'-');
        write_padded(out, u64::from(self.month), 2);
        out.push(b'-');
        write_padded(out, u64::from(self.day), 2);
    }

    /// Days since 1970-01-01 (proleptic Gregorian; Howard Hinnant's `days_from_civil`).
    pub(super) fn days_since_epoch(&self) -> i64 {
        let month = i64::from(self.month);
        let year = if month <= 2 { self.year - 1 } else { self.year };
        let era = year.div_euclid(400);
        let year_of_era = year.rem_euclid(400);
        let shifted_month = if month > 2 { month - 3 } else { month + 9 };
        let day_of_year = (153 * shifted_month + 2) / 5 + i64::from(self.day) - 1;
        let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
        era * 146_097 + day_of_era - 719_468
    }

    /// The date `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`).
    pub(super) fn from_days_since_epoch(days: i64) -> Date {
        let days = days + 719_468;
        let era = days.div_euclid(146_097);
        let day_of_era = days.rem_euclid(146_097);
        let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
        let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
        let shifted_month = (5 * day_of_year + 2) / 153;
        let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
        let month = if shifted_month < 10 {
            shifted_month + 3
        } else {
            shifted_month - 9
        };
        let year = year_of_era + era * 400 + i64::from(month <= 2);
        // In range by construction: month 1-12, day 1-31.
        Date {
            year,
            month: month as u8,
            day: day as u8,
        }
    }
}

impl<'a> Time<'a> {
    /// Parses `HH:MM:SS` with an optional fraction of 1 to 6 digits at the start of `text`;
    /// returns the time and the text after it.
    fn parse(text: &'a [u8]) -> Result<(Time<'a>, &'a [u8]), Reason> {
        let (hour, rest) = two_digits(text).ok_or("no hour")?;
        let (minute, rest) = two_digits_after(b':', rest).ok_or("no minutes after the hour")?;
        let (second, rest) = two_digits_after(b':', rest).ok_or("no seconds after the minutes")?;
        // 24:00:00 is a valid `time`; seconds go to 60 for a leap second.
        if hour > 24 || minute > 59 || second > 60 {
            return Err("the time is out of range");
        }
        let (fraction, rest) = match rest.strip_prefix(b".") {
            Some(after_dot) => {
                let count = after_dot.iter().take_while(|b| b.is_ascii_digit()).count();
                if !(1..=6).contains(&count) {
                    return Err("the fraction of a second does not have 1 to 6 digits");
                }
                after_dot.split_at(count)
            }
            None => (&rest[..0], rest),
        };
        let time = Time {
            hour,
            minute,
            second,
            fraction,
        };
        Ok((time, rest))
    }

    /// Appends `HH:MM:SS` and, if there is one, the fraction as PostgreSQL gave it.
    pub(super) fn write(&self, out: &mut Vec<u8>) {
        // `HH:MM:SS.ffffff` in one fixed-size copy, then cut to its length: a call per
        // field cost more than the formatting.
        let [hour_tens, hour_ones] = two(self.hour);
        let [minute_tens, minute_ones] = two(self.minute);
        let [second_tens, second_ones] = two(self.second);
        let mut text = [
            hour_tens,
            hour_ones,
            b':',
            minute_tens,
            minute_ones,
            b':',
            second_tens,
            second_ones,
            b'.',
            0,
            0,
            0,
            0,
            0,
            0,
        ];
        let len = match self.fraction.len() {
            0 => 8,
            digits @ 1..=6 => {
                for (slot, digit) in text[9..].iter_mut().zip(self.fraction) {
                    *slot = *digit;
                }
                9 + digits
            }
            // Longer than `Time::parse` allows: written whole.
            _ => {
                out.extend_from_slice(&text[..9]);
                out.extend_from_slice(self.fraction);
                return;
            }
        };
        let end = out.len() + len;
        out.extend_from_slice(&text);
        out.truncate(end);
    }

    fn seconds_of_day(&self) -> i64 {
        i64::from(self.hour) * 3600 + i64::from(self.minute) * 60 + i64::from(self.second)
    }
}

/// The UTC date and time of a local date and time at `offset` seconds east of UTC.
/// Offsets are whole seconds, so the fraction does not change.
pub(super) fn to_utc<'a>(date: Date, time: Time<'a>, offset: i64) -> (Date, Time<'a>) {
    let seconds = date.days_since_epoch() * 86_400 + time.seconds_of_day() - offset;
    let date = Date::from_days_since_epoch(seconds.div_euclid(86_400));
    let second_of_day = seconds.rem_euclid(86_400);
    // In range by construction: below 24 hours.
    let time = Time {
        hour: (second_of_day / 3600) as u8,
        minute: (second_of_day / 60 % 60) as u8,
        second: (second_of_day % 60) as u8,
        fraction: time.fraction,
    };
    (date, time)
}

/// `31`, `30`, `29` or `28`: the days in a month of an astronomically numbered year.
pub(super) fn days_in_month(year: i64, month: u8) -> u8 {
    match month {
        2 if year.rem_euclid(4) == 0 && (year.rem_euclid(100) != 0 || year.rem_euclid(400) == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Appends `"infinity"` or `"-infinity"` if that is the text.
fn write_infinity(text: &[u8], out: &mut Vec<u8>) -> bool {
    let is_infinity = text == b"infinity" || text == b"-infinity";
    if is_infinity {
        write_quoted(text, out);
    }
    is_infinity
}

/// The text without its ` BC` suffix, and whether it had one.
fn strip_era(text: &[u8]) -> (&[u8], bool) {
    match text.strip_suffix(b" BC") {
        Some(body) => (body, true),
        None => (text, false),
    }
}

/// Parses a UTC offset as PostgreSQL writes it: `+HH`, `+HH:MM` or `+HH:MM:SS` (or `-`).
/// Returns seconds east of UTC and the text after it.
fn parse_offset(text: &[u8]) -> Result<(i64, &[u8]), Reason> {
    let (sign, rest) = match text.split_first() {
        Some((b'+', rest)) => (1, rest),
        Some((b'-', rest)) => (-1, rest),
        _ => return Err("no time zone offset after the time"),
    };
    let (hours, mut rest) = two_digits(rest).ok_or("no hours in the time zone offset")?;
    let mut seconds = i64::from(hours) * 3600;
    for unit in [60, 1] {
        match two_digits_after(b':', rest) {
            Some((value, after)) if value < 60 => {
                seconds += i64::from(value) * unit;
                rest = after;
            }
            Some(_) => return Err("the time zone offset is out of range"),
            None => break,
        }
    }
    Ok((sign * seconds, rest))
}

fn write_quoted(text: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    out.extend_from_slice(text);
    out.push(b'"');
}

/// Two ASCII digits at the start of `text`, and the text after them.
fn two_digits(text: &[u8]) -> Option<(u8, &[u8])> {
    match text {
        [tens @ b'0'..=b'9', ones @ b'0'..=b'9', rest @ ..] => Some(((tens - b'0') * 10 + (ones - b'0'), rest)),
        _ => None,
    }
}

/// `separator`, then two ASCII digits, at the start of `text`.
fn two_digits_after(separator: u8, text: &[u8]) -> Option<(u8, &[u8])> {
    two_digits(text.strip_prefix(&[separator])?)
}

/// The value of a run of at most nine ASCII digits.
fn digits(text: &[u8]) -> Option<u32> {
    if text.len() > 9 {
        return None;
    }
    text.iter().try_fold(0u32, |value, &b| {
        b.is_ascii_digit().then(|| value * 10 + u32::from(b - b'0'))
    })
}

/// The two decimal digits of `value` (below 100).
fn two(value: u8) -> [u8; 2] {
    [b'0' + value / 10 % 10, b'0' + value % 10]
}

/// Appends `value` in decimal with at least `width` digits, zero-padded.
fn write_padded(out: &mut Vec<u8>, value: u64, width: usize) {
    let mut buffer = [0u8; 20];
    let mut at = buffer.len();
    let mut rest = value;
    loop {
        at -= 1;
        buffer[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    for _ in buffer.len() - at..width {
        out.push(b'0');
    }
    out.extend_from_slice(&buffer[at..]);
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn json(write: fn(&[u8], &mut Vec<u8>) -> Result<(), Reason>, text: &str) -> Result<String, Reason> {
        let mut out = Vec::new();
        write(text.as_bytes(), &mut out)?;
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn dates_use_astronomical_years() {
        assert_eq!(json(write_date, "2026-11-22"), Ok(r#""2026-11-22""#.to_owned()));
        assert_eq!(json(write_date, "0044-03-15 BC"), Ok(r#""-0043-03-15""#.to_owned()));
        assert_eq!(json(write_date, "0001-12-31 BC"), Ok(r#""0000-12-31""#.to_owned()));
        assert_eq!(json(write_date, "4714-11-24 BC"), Ok(r#""-4713-11-24""#.to_owned()));
        assert_eq!(json(write_date, "5874897-12-31"), Ok(r#""+5874897-12-31""#.to_owned()));
        assert_eq!(json(write_date, "infinity"), Ok(r#""infinity""#.to_owned()));
        assert_eq!(json(write_date, "-infinity"), Ok(r#""-infinity""#.to_owned()));
    }

    #[test]
    fn dates_in_other_styles_are_rejected() {
        for text in [
            "11/22/2026",
            "2026-11-22 ",
            "2026-13-01",
            "2026-02-29",
            "0000-01-01 BC",
            "26-11-22",
            "2026-11-2",
            "Infinity",
            "",
        ] {
            assert!(json(write_date, text).is_err(), "{text:?}");
        }
        assert_eq!(json(write_date, "2024-02-29"), Ok(r#""2024-02-29""#.to_owned()));
    }

    #[test]
    fn timestamps_get_a_t() {
        assert_eq!(
            json(write_timestamp, "2026-11-22 13:04:05.5"),
            Ok(r#""2026-11-22T13:04:05.5""#.to_owned())
        );
        assert_eq!(
            json(write_timestamp, "0044-03-15 10:00:00 BC"),
            Ok(r#""-0043-03-15T10:00:00""#.to_owned())
        );
        assert_eq!(json(write_timestamp, "infinity"), Ok(r#""infinity""#.to_owned()));
        assert!(json(write_timestamp, "2026-11-22T13:04:05").is_err());
        assert!(json(write_timestamp, "2026-11-22 13:04:05+00").is_err());
        assert!(json(write_timestamp, "2026-11-22 13:04:05.1234567").is_err());
        assert!(json(write_timestamp, "2026-11-22 13:04:05.").is_err());
    }

    #[test]
    fn timestamptz_is_written_in_utc() {
        let utc = |text| json(write_timestamptz, text).unwrap();
        assert_eq!(utc("2026-11-22 13:04:05.123456+00"), r#""2026-11-22T13:04:05.123456Z""#);
        assert_eq!(utc("2026-11-22 13:04:05+00"), r#""2026-11-22T13:04:05Z""#);
        assert_eq!(utc("2026-11-22 13:04:05.5+05:30"), r#""2026-11-22T07:34:05.5Z""#);
        assert_eq!(utc("2026-01-01 01:00:00+02"), r#""2025-12-31T23:00:00Z""#);
        assert_eq!(utc("2024-02-28 23:30:00-01"), r#""2024-02-29T00:30:00Z""#);
        assert_eq!(utc("2023-02-28 23:30:00-01"), r#""2023-03-01T00:30:00Z""#);
        assert_eq!(utc("1800-01-01 00:19:32+00:19:32"), r#""1800-01-01T00:00:00Z""#);
        assert_eq!(utc("0044-03-15 10:00:00+00 BC"), r#""-0043-03-15T10:00:00Z""#);
        assert_eq!(utc("0001-01-01 00:30:00+01"), r#""0000-12-31T23:30:00Z""#);
        assert_eq!(utc("0001-12-31 23:30:00-01 BC"), r#""0001-01-01T00:30:00Z""#);
        assert_eq!(utc("9999-12-31 23:00:00-02"), r#""+10000-01-01T01:00:00Z""#);
        assert_eq!(utc("-infinity"), r#""-infinity""#);
    }

    #[test]
    fn timestamptz_needs_an_offset() {
        for text in [
            "2026-11-22 13:04:05",
            "2026-11-22 13:04:05 UTC",
            "2026-11-22 13:04:05+0",
            "2026-11-22 13:04:05+05:60",
            "2026-11-22 13:04:05+05:30:",
            "2026-11-22 13:04:05+00 AD",
        ] {
            assert!(json(write_timestamptz, text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn times_and_intervals_pass_through() {
        assert_eq!(json(write_time, "13:04:05.123"), Ok(r#""13:04:05.123""#.to_owned()));
        assert_eq!(json(write_time, "24:00:00"), Ok(r#""24:00:00""#.to_owned()));
        assert!(json(write_time, "13:04").is_err());
        assert!(json(write_time, "1:04:05").is_err());
        assert_eq!(json(write_timetz, "13:04:05+02"), Ok(r#""13:04:05+02""#.to_owned()));
        assert_eq!(
            json(write_timetz, "13:04:05.5-09:30"),
            Ok(r#""13:04:05.5-09:30""#.to_owned())
        );
        assert!(json(write_timetz, "13:04:05").is_err());
        assert_eq!(
            json(write_interval, "P1Y2M3DT4H5M6.5S"),
            Ok(r#""P1Y2M3DT4H5M6.5S""#.to_owned())
        );
        assert_eq!(
            json(write_interval, "P-1Y-2M3DT-4H"),
            Ok(r#""P-1Y-2M3DT-4H""#.to_owned())
        );
        assert_eq!(json(write_interval, "PT0S"), Ok(r#""PT0S""#.to_owned()));
        assert!(json(write_interval, "1 year 2 mons").is_err());
        assert!(json(write_interval, "P").is_err());
        assert!(json(write_interval, "P1\"").is_err());
    }

    /// The day after `date`, counted by hand.
    fn next_day(date: Date) -> Date {
        if date.day < days_in_month(date.year, date.month) {
            Date {
                day: date.day + 1,
                ..date
            }
        } else if date.month < 12 {
            Date {
                month: date.month + 1,
                day: 1,
                ..date
            }
        } else {
            Date {
                year: date.year + 1,
                month: 1,
                day: 1,
            }
        }
    }

    /// The day before `date`, counted by hand.
    fn previous_day(date: Date) -> Date {
        if date.day > 1 {
            Date {
                day: date.day - 1,
                ..date
            }
        } else if date.month > 1 {
            Date {
                month: date.month - 1,
                day: days_in_month(date.year, date.month - 1),
                ..date
            }
        } else {
            Date {
                year: date.year - 1,
                month: 12,
                day: 31,
            }
        }
    }

    /// The text PostgreSQL writes for a date (` BC` is added by the caller).
    fn pg_date(date: Date) -> (String, &'static str) {
        if date.year <= 0 {
            (format!("{:04}-{:02}-{:02}", 1 - date.year, date.month, date.day), " BC")
        } else {
            (format!("{:04}-{:02}-{:02}", date.year, date.month, date.day), "")
        }
    }

    fn pg_offset(offset: i64) -> String {
        let sign = if offset < 0 { '-' } else { '+' };
        let (h, m, s) = (offset.abs() / 3600, offset.abs() / 60 % 60, offset.abs() % 60);
        match (m, s) {
            (0, 0) => format!("{sign}{h:02}"),
            (_, 0) => format!("{sign}{h:02}:{m:02}"),
            _ => format!("{sign}{h:02}:{m:02}:{s:02}"),
        }
    }

    fn iso_year(year: i64) -> String {
        match year {
            ..0 => format!("-{:04}", -year),
            0..=9999 => format!("{year:04}"),
            _ => format!("+{year}"),
        }
    }

    fn any_date() -> impl Strategy<Value = Date> {
        (-4713i64..=294_276, 1u8..=12, 1u8..=31).prop_map(|(year, month, day)| Date {
            year,
            month,
            day: day.min(days_in_month(year, month)),
        })
    }

    proptest! {
        #[test]
        fn day_numbers_count_days(date in any_date()) {
            let days = date.days_since_epoch();
            prop_assert_eq!(Date::from_days_since_epoch(days), date);
            prop_assert_eq!(Date::from_days_since_epoch(days + 1), next_day(date));
            prop_assert_eq!(Date::from_days_since_epoch(days - 1), previous_day(date));
        }

        #[test]
        fn timestamptz_converts_to_utc_like_by_hand(
            date in any_date(),
            second_of_day in 0i64..86_400,
            fraction in "(\\.[0-9]{1,6})?",
            // UTC (the usual case, written by a shortcut) half of the time.
            offset in prop_oneof![Just(0i64), -(15 * 3600 + 59 * 60 + 59)..=(15i64 * 3600 + 59 * 60 + 59)],
        ) {
            let (h, m, s) = (second_of_day / 3600, second_of_day / 60 % 60, second_of_day % 60);
            let (pg, era) = pg_date(date);
            let text = format!("{pg} {h:02}:{m:02}:{s:02}{fraction}{}{era}", pg_offset(offset));

            // The reference: move the clock, then step the calendar by at most one day.
            let utc_second = second_of_day - offset;
            let (utc_date, utc_second) = if utc_second < 0 {
                (previous_day(date), utc_second + 86_400)
            } else if utc_second >= 86_400 {
                (next_day(date), utc_second - 86_400)
            } else {
                (date, utc_second)
            };
            let expected = format!(
                "\"{}-{:02}-{:02}T{:02}:{:02}:{:02}{fraction}Z\"",
                iso_year(utc_date.year),
                utc_date.month,
                utc_date.day,
                utc_second / 3600,
                utc_second / 60 % 60,
                utc_second % 60,
            );
            prop_assert_eq!(json(write_timestamptz, &text), Ok(expected), "{}", text);
        }
    }
}
