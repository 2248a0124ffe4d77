//! Sizes written the way people write them: `"100"`, `"512KiB"`, `"64MiB"`, `"1GB"`.

use std::fmt;
use std::str::FromStr;

use crate::ParseValueError;

/// A number of bytes written like `"64MiB"`, `"512KiB"`, `"1GB"` or `"100"` (bytes).
///
/// Binary units `KiB`, `MiB`, `GiB`, `TiB` (powers of 1024) and decimal units `B`, `KB`,
/// `MB`, `GB`, `TB` (powers of 1000); units are case-insensitive and may follow a space.
/// Negative or overflowing sizes are refused. `Display` prints the largest unit that
/// divides the size exactly (`67108864` prints as `"64MiB"`). Serialized as that string;
/// deserializes from such a string or from a plain number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const TIB: u64 = 1 << 40;

impl ByteSize {
    pub const fn b(bytes: u64) -> Self {
        Self(bytes)
    }

    pub const fn kib(n: u64) -> Self {
        Self(n * KIB)
    }

    pub const fn mib(n: u64) -> Self {
        Self(n * MIB)
    }

    pub const fn gib(n: u64) -> Self {
        Self(n * GIB)
    }

    pub const fn as_u64(self) -> u64 {
        self.0
    }
}

impl From<u64> for ByteSize {
    fn from(bytes: u64) -> Self {
        Self(bytes)
    }
}

impl From<ByteSize> for u64 {
    fn from(size: ByteSize) -> Self {
        size.0
    }
}

/// Display order matters: binary units first, then decimal ones, largest first.
const UNITS: [(&str, u64); 9] = [
    ("TiB", TIB),
    ("GiB", GIB),
    ("MiB", MIB),
    ("KiB", KIB),
    ("TB", 1_000_000_000_000),
    ("GB", 1_000_000_000),
    ("MB", 1_000_000),
    ("KB", 1_000),
    ("B", 1),
];

impl FromStr for ByteSize {
    type Err = ParseValueError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || ParseValueError::InvalidSize(text.to_owned());
        let trimmed = text.trim();
        if let Some(rest) = trimmed.strip_prefix('-') {
            return Err(if rest.trim_start().starts_with(|c: char| c.is_ascii_digit()) {
                ParseValueError::NegativeSize(text.to_owned())
            } else {
                invalid()
            });
        }
        let digits = trimmed.find(|c: char| !c.is_ascii_digit()).unwrap_or(trimmed.len());
        if digits == 0 {
            return Err(invalid());
        }
        let too_large = || ParseValueError::SizeTooLarge(text.to_owned());
        let number: u64 = trimmed[..digits].parse().map_err(|_| too_large())?;
        let unit = trimmed[digits..].trim_start();
        let per = if unit.is_empty() {
            1
        } else {
            UNITS
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(unit))
                .map(|(_, per)| *per)
                .ok_or_else(invalid)?
        };
        number.checked_mul(per).map(Self).ok_or_else(too_large)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.0;
        let (unit, per) = UNITS
            .iter()
            .find(|(_, per)| bytes != 0 && bytes.is_multiple_of(*per))
            .copied()
            .unwrap_or(("B", 1));
        write!(f, "{}{unit}", bytes / per)
    }
}

impl serde::Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ByteSize;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size like \"64MiB\" or a number of bytes")
            }

            fn visit_u64<E: serde::de::Error>(self, bytes: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(bytes))
            }

            fn visit_i64<E: serde::de::Error>(self, bytes: i64) -> Result<ByteSize, E> {
                u64::try_from(bytes)
                    .map(ByteSize)
                    .map_err(|_| E::custom(ParseValueError::NegativeSize(bytes.to_string())))
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<ByteSize, E> {
                text.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<u64, ParseValueError> {
        text.parse::<ByteSize>().map(|size| size.0)
    }

    #[test]
    fn parses_binary_and_decimal_units() {
        assert_eq!(parse("100"), Ok(100));
        assert_eq!(parse("100B"), Ok(100));
        assert_eq!(parse("512KiB"), Ok(512 * 1024));
        assert_eq!(parse("64MiB"), Ok(64 << 20));
        assert_eq!(parse("64 mib"), Ok(64 << 20));
        assert_eq!(parse("1GiB"), Ok(1 << 30));
        assert_eq!(parse("2TiB"), Ok(2 << 40));
        assert_eq!(parse("1KB"), Ok(1_000));
        assert_eq!(parse("1GB"), Ok(1_000_000_000));
        assert_eq!(parse("3TB"), Ok(3_000_000_000_000));
        assert_eq!(parse("0"), Ok(0));
    }

    #[test]
    fn refuses_negative_overflowing_and_bad_text() {
        assert_eq!(parse("-5MiB"), Err(ParseValueError::NegativeSize("-5MiB".into())));
        assert_eq!(
            parse("20000000TiB"),
            Err(ParseValueError::SizeTooLarge("20000000TiB".into()))
        );
        assert_eq!(
            parse("99999999999999999999"),
            Err(ParseValueError::SizeTooLarge("99999999999999999999".into()))
        );
        for text in ["", "MiB", "1.5GiB", "64 megs", "64MiBs", "-MiB"] {
            assert_eq!(parse(text), Err(ParseValueError::InvalidSize(text.into())), "{text:?}");
        }
    }

    #[test]
    fn display_picks_the_largest_exact_unit_and_round_trips() {
        for (bytes, shown) in [
            (0, "0B"),
            (100, "100B"),
            (64 << 20, "64MiB"),
            (1_000_000_000, "1GB"),
            (3072, "3KiB"),
            (1536, "1536B"),
            (1500, "1500B"),
        ] {
            let size = ByteSize(bytes);
            assert_eq!(size.to_string(), shown);
            assert_eq!(size.to_string().parse::<ByteSize>(), Ok(size));
        }
    }

    #[test]
    fn serde_accepts_strings_and_numbers() {
        assert_eq!(
            serde_json::from_str::<ByteSize>("\"64MiB\"").unwrap(),
            ByteSize::mib(64)
        );
        assert_eq!(serde_json::from_str::<ByteSize>("4096").unwrap(), ByteSize::kib(4));
        assert!(serde_json::from_str::<ByteSize>("-1").is_err());
        assert_eq!(serde_json::to_string(&ByteSize::mib(64)).unwrap(), "\"64MiB\"");
    }
}
