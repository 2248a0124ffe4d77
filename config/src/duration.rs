//! Durations written the way people write them: `"500ms"`, `"30s"`, `"1h30m"`, `"2d"`.

use std::fmt;
use std::str::FromStr;

use crate::ParseValueError;

/// A duration written like `"30s"`, `"500ms"`, `"1h30m"` or `"2d"`.
///
/// Units: `ns`, `us` (or `µs`), `ms`, `s`, `m`, `h`, `d`, `w`; components may be
/// combined (`"1h30m"`) and separated by spaces (`"1h 30m"`). A number without a unit is
/// refused: `"30"` could mean seconds or milliseconds. `Display` prints the canonical form
/// (`"90m"` prints as `"1h30m"`), which parses back to the same value. Serialized as that
/// string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    pub const ZERO: Duration = Duration(std::time::Duration::ZERO);

    pub const fn new(duration: std::time::Duration) -> Self {
        Self(duration)
    }

    pub const fn from_secs(secs: u64) -> Self {
        Self(std::time::Duration::from_secs(secs))
    }

    pub const fn from_millis(millis: u64) -> Self {
        Self(std::time::Duration::from_millis(millis))
    }

    pub const fn as_std(self) -> std::time::Duration {
        self.0
    }
}

impl From<std::time::Duration> for Duration {
    fn from(duration: std::time::Duration) -> Self {
        Self(duration)
    }
}

impl From<Duration> for std::time::Duration {
    fn from(duration: Duration) -> Self {
        duration.0
    }
}

const NANOS_PER: [(&str, u128); 8] = [
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60 * 1_000_000_000),
    ("h", 3_600 * 1_000_000_000),
    ("d", 86_400 * 1_000_000_000),
];
const NANOS_PER_WEEK: u128 = 7 * 86_400 * 1_000_000_000;

impl FromStr for Duration {
    type Err = ParseValueError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || ParseValueError::InvalidDuration(text.to_owned());
        let trimmed = text.trim();
        if let Some(rest) = trimmed.strip_prefix('-') {
            return Err(if rest.trim_start().starts_with(|c: char| c.is_ascii_digit()) {
                ParseValueError::NegativeDuration(text.to_owned())
            } else {
                invalid()
            });
        }
        let mut rest = trimmed;
        let mut total: u128 = 0;
        if rest.is_empty() {
            return Err(invalid());
        }
        while !rest.is_empty() {
            let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
            if digits == 0 {
                return Err(invalid());
            }
            let number: u128 = rest[..digits]
                .parse()
                .map_err(|_| ParseValueError::DurationTooLarge(text.to_owned()))?;
            rest = rest[digits..].trim_start();
            let unit_len = rest.find(|c: char| !c.is_alphabetic()).unwrap_or(rest.len());
            let unit = &rest[..unit_len];
            let per = match unit {
                "w" => NANOS_PER_WEEK,
                _ => NANOS_PER
                    .iter()
                    .find(|(name, _)| *name == unit)
                    .map(|(_, per)| *per)
                    .ok_or_else(invalid)?,
            };
            total = number
                .checked_mul(per)
                .and_then(|n| total.checked_add(n))
                .ok_or_else(|| ParseValueError::DurationTooLarge(text.to_owned()))?;
            rest = rest[unit_len..].trim_start();
        }
        let secs =
            u64::try_from(total / 1_000_000_000).map_err(|_| ParseValueError::DurationTooLarge(text.to_owned()))?;
        // The remainder is below 10^9, so it fits.
        let nanos = (total % 1_000_000_000) as u32;
        Ok(Self(std::time::Duration::new(secs, nanos)))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut left = self.0.as_nanos();
        if left == 0 {
            return f.write_str("0s");
        }
        for (unit, per) in NANOS_PER.iter().rev().filter(|(unit, _)| *unit != "µs") {
            let count = left / per;
            if count > 0 {
                write!(f, "{count}{unit}")?;
                left %= per;
            }
        }
        Ok(())
    }
}

impl serde::Serialize for Duration {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Duration {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<std::time::Duration, ParseValueError> {
        text.parse::<Duration>().map(Duration::as_std)
    }

    #[test]
    fn parses_units_and_combinations() {
        let s = std::time::Duration::from_secs;
        assert_eq!(parse("30s"), Ok(s(30)));
        assert_eq!(parse("500ms"), Ok(std::time::Duration::from_millis(500)));
        assert_eq!(parse("1h30m"), Ok(s(5_400)));
        assert_eq!(parse("1h 30m"), Ok(s(5_400)));
        assert_eq!(parse("2d"), Ok(s(172_800)));
        assert_eq!(parse("1w"), Ok(s(604_800)));
        assert_eq!(parse(" 0s "), Ok(s(0)));
        assert_eq!(parse("250us"), Ok(std::time::Duration::from_micros(250)));
        assert_eq!(parse("7ns"), Ok(std::time::Duration::from_nanos(7)));
    }

    #[test]
    fn refuses_bad_text() {
        for text in ["", "30", "s", "10 parsecs", "1.5h", "1h30", "h1", "--1s", "30 S"] {
            assert_eq!(
                parse(text),
                Err(ParseValueError::InvalidDuration(text.into())),
                "{text:?}"
            );
        }
        assert_eq!(parse("-5s"), Err(ParseValueError::NegativeDuration("-5s".into())));
        let huge = "99999999999999999999999999999999999999999d";
        assert_eq!(parse(huge), Err(ParseValueError::DurationTooLarge(huge.into())));
        assert_eq!(
            parse("999999999999999999d"),
            Err(ParseValueError::DurationTooLarge("999999999999999999d".into()))
        );
    }

    #[test]
    fn display_is_canonical_and_round_trips() {
        for (text, shown) in [
            ("90m", "1h30m"),
            ("30s", "30s"),
            ("1500ms", "1s500ms"),
            ("2d", "2d"),
            ("0ms", "0s"),
            ("1w", "7d"),
        ] {
            let duration: Duration = text.parse().unwrap();
            assert_eq!(duration.to_string(), shown);
            assert_eq!(shown.parse::<Duration>().unwrap(), duration);
        }
    }

    #[test]
    fn serde_uses_the_string_form() {
        let duration: Duration = serde_json::from_str("\"1h30m\"").unwrap();
        assert_eq!(duration, Duration::from_secs(5_400));
        assert_eq!(serde_json::to_string(&duration).unwrap(), "\"1h30m\"");
        assert!(serde_json::from_str::<Duration>("\"soon\"").is_err());
    }
}
