//! Column values: from PostgreSQL's text format to plexus' JSON encoding.
//!
//! PostgreSQL sends every column value as text: pgoutput in text mode, and `COPY ... TO
//! STDOUT` for the initial snapshot. This module turns that text into the JSON of the
//! change envelope (`connectors/datagen/ENVELOPE.md`), without a value tree and without an
//! allocation per value for the common types, and says which Arrow type a columnar sink
//! should decode each column into. `connectors/postgres/TYPES.md` is the user's version of
//! the same rules.
//!
//! - [`PgType`]: a column type, built from the type OID and type modifier that pgoutput's
//!   Relation message and `pg_attribute` give, with its SQL, JSON and Arrow type names.
//! - [`write_json`]: one value in text format to JSON.
//! - [`copy`]: splitting the rows of `COPY ... TO STDOUT` (text format) into fields.
//!
//! Every text this module reads must come from a session with the settings plexus sets on
//! its connections: `DateStyle=ISO`, `TimeZone=UTC`, `IntervalStyle=iso_8601`,
//! `extra_float_digits=3`, `bytea_output=hex`, `client_encoding=UTF8`. Text in any other
//! style is rejected with a [`ValueError`] rather than guessed at, except that a
//! `timestamp with time zone` in another zone is still converted to UTC correctly.

mod array;
pub mod binary;
pub mod copy;
mod datetime;
mod json;

pub use json::{ValueError, write_json, write_json_string};

/// A column type as plexus maps it. Built from the type OID and the type modifier that
/// pgoutput's Relation message and `pg_attribute` give.
///
/// [`PgType::from_builtin`] knows the built-in types; for a user-defined type (an enum, a
/// domain, an array of either) the caller reads `pg_type` and builds the variant itself:
/// [`PgType::Enum`] with the enum's name, [`PgType::Array`] around the element type, the
/// domain's base type for a domain, and [`PgType::Other`] for anything else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgType {
    /// `boolean`.
    Bool,
    /// `smallint`.
    Int2,
    /// `integer`.
    Int4,
    /// `bigint`.
    Int8,
    /// `oid`.
    Oid,
    /// `real`.
    Float4,
    /// `double precision`.
    Float8,
    /// `numeric(precision, scale)`; both `None` for unconstrained `numeric`. PostgreSQL 15
    /// allows a precision of 1 to 1000 and a scale of -1000 to 1000, hence the widths.
    Numeric { precision: Option<u16>, scale: Option<i16> },
    /// `text`, `character varying`, `name`, `"char"` and `bpchar` without a length: they
    /// are all encoded alike, so the length limits are not kept.
    Text,
    /// `character(n)`: encoded as text (with its blanks), and kept apart so that the
    /// schema names it and SQL sinks create a blank-padded column, whose comparisons
    /// ignore trailing blanks as the source's do.
    Char(u32),
    /// `bytea`.
    Bytea,
    /// `uuid`.
    Uuid,
    /// `json`.
    Json,
    /// `jsonb`.
    Jsonb,
    /// `date`.
    Date,
    /// `time without time zone`.
    Time,
    /// `time with time zone`.
    TimeTz,
    /// `timestamp without time zone`.
    Timestamp,
    /// `timestamp with time zone`.
    TimestampTz,
    /// `interval`.
    Interval,
    /// An array of the element type (any dimension count).
    Array(Box<PgType>),
    /// A user-defined enum (its type name).
    Enum(String),
    /// Anything else (inet, money, xml, geometric, ranges, composite ...): emitted as its
    /// text form; `name` is the type's name.
    Other { oid: u32, name: String },
}

impl PgType {
    /// The built-in type with this OID and type modifier (`atttypmod`, -1 for none), or
    /// `None` for an OID that is not built in (enums, domains, arrays of enums, extension
    /// types): the caller then reads the type from `pg_type` and builds the variant itself.
    ///
    /// Only `numeric` (its precision and scale) and `character` (its length) read the
    /// type modifier, also as the elements of arrays, whose columns carry the element's
    /// modifier.
    pub fn from_builtin(oid: u32, typmod: i32) -> Option<PgType> {
        if let Some(&(element, _, _)) = BUILTIN.iter().find(|(_, array, _)| *array == oid) {
            return PgType::from_builtin(element, typmod).map(|ty| PgType::Array(Box::new(ty)));
        }
        let ty = match oid {
            16 => PgType::Bool,
            17 => PgType::Bytea,
            // A `character(n)` column's modifier is n + 4.
            1042 if typmod >= 5 => PgType::Char((typmod - 4) as u32),
            18 | 19 | 25 | 1042 | 1043 => PgType::Text,
            20 => PgType::Int8,
            21 => PgType::Int2,
            23 => PgType::Int4,
            26 => PgType::Oid,
            114 => PgType::Json,
            700 => PgType::Float4,
            701 => PgType::Float8,
            1082 => PgType::Date,
            1083 => PgType::Time,
            1114 => PgType::Timestamp,
            1184 => PgType::TimestampTz,
            1186 => PgType::Interval,
            1266 => PgType::TimeTz,
            1700 => numeric_from_typmod(typmod),
            2950 => PgType::Uuid,
            3802 => PgType::Jsonb,
            _ => {
                let &(_, _, name) = BUILTIN.iter().find(|(scalar, _, _)| *scalar == oid)?;
                PgType::Other {
                    oid,
                    name: name.to_owned(),
                }
            }
        };
        Some(ty)
    }

    /// The SQL name for the schema documentation, as PostgreSQL's `format_type` writes it
    /// without the length or precision modifiers: `integer`, `numeric(10,2)`,
    /// `timestamp with time zone`, `text[]`, `character(84)`, the enum's name. Every
    /// [`PgType::Text`] type is `text`.
    pub fn sql_name(&self) -> String {
        match self {
            PgType::Bool => "boolean".to_owned(),
            PgType::Int2 => "smallint".to_owned(),
            PgType::Int4 => "integer".to_owned(),
            PgType::Int8 => "bigint".to_owned(),
            PgType::Oid => "oid".to_owned(),
            PgType::Float4 => "real".to_owned(),
            PgType::Float8 => "double precision".to_owned(),
            PgType::Numeric {
                precision: Some(precision),
                scale,
            } => format!("numeric({precision},{})", scale.unwrap_or(0)),
            PgType::Numeric { precision: None, .. } => "numeric".to_owned(),
            PgType::Text => "text".to_owned(),
            PgType::Char(length) => format!("character({length})"),
            PgType::Bytea => "bytea".to_owned(),
            PgType::Uuid => "uuid".to_owned(),
            PgType::Json => "json".to_owned(),
            PgType::Jsonb => "jsonb".to_owned(),
            PgType::Date => "date".to_owned(),
            PgType::Time => "time without time zone".to_owned(),
            PgType::TimeTz => "time with time zone".to_owned(),
            PgType::Timestamp => "timestamp without time zone".to_owned(),
            PgType::TimestampTz => "timestamp with time zone".to_owned(),
            PgType::Interval => "interval".to_owned(),
            PgType::Array(element) => format!("{}[]", element.sql_name()),
            PgType::Enum(name) | PgType::Other { name, .. } => name.clone(),
        }
    }

    /// The Arrow type columnar sinks should decode this column's JSON into, in the form
    /// `arrow_schema::DataType::from_str` parses: `Int32`, `Decimal128(10, 2)`,
    /// `Timestamp(Microsecond, Some("UTC"))`, `List(Utf8)` ... The choices, and the values
    /// that do not fit them (`NaN` in a `Decimal128`, `infinity` in a `Date32`), are in
    /// TYPES.md.
    pub fn arrow_type(&self) -> String {
        match self {
            PgType::Bool => "Boolean".to_owned(),
            PgType::Int2 => "Int16".to_owned(),
            PgType::Int4 => "Int32".to_owned(),
            PgType::Int8 => "Int64".to_owned(),
            PgType::Oid => "UInt32".to_owned(),
            PgType::Float4 => "Float32".to_owned(),
            PgType::Float8 => "Float64".to_owned(),
            PgType::Numeric { precision, scale } => match decimal128(*precision, *scale) {
                Some((precision, scale)) => format!("Decimal128({precision}, {scale})"),
                None => "Utf8".to_owned(),
            },
            PgType::Bytea => "Binary".to_owned(),
            PgType::Date => "Date32".to_owned(),
            PgType::Time => "Time64(Microsecond)".to_owned(),
            PgType::Timestamp => "Timestamp(Microsecond, None)".to_owned(),
            PgType::TimestampTz => "Timestamp(Microsecond, Some(\"UTC\"))".to_owned(),
            PgType::Array(element) => format!("List({})", element.arrow_type()),
            // Arrow has no type for these that arrow-json can fill from their text.
            PgType::Text
            | PgType::Char(_)
            | PgType::Uuid
            | PgType::Json
            | PgType::Jsonb
            | PgType::TimeTz
            | PgType::Interval
            | PgType::Enum(_)
            | PgType::Other { .. } => "Utf8".to_owned(),
        }
    }

    /// The JSON type of this column's values, for the registered schema: `boolean`,
    /// `integer`, `number`, `string` or `array`. `number` columns (`real`, `double
    /// precision`) also hold the strings `"NaN"`, `"Infinity"` and `"-Infinity"`.
    pub fn json_type(&self) -> &'static str {
        match self {
            PgType::Bool => "boolean",
            PgType::Int2 | PgType::Int4 | PgType::Int8 | PgType::Oid => "integer",
            PgType::Float4 | PgType::Float8 => "number",
            PgType::Array(_) => "array",
            PgType::Numeric { .. }
            | PgType::Text
            | PgType::Char(_)
            | PgType::Bytea
            | PgType::Uuid
            | PgType::Json
            | PgType::Jsonb
            | PgType::Date
            | PgType::Time
            | PgType::TimeTz
            | PgType::Timestamp
            | PgType::TimestampTz
            | PgType::Interval
            | PgType::Enum(_)
            | PgType::Other { .. } => "string",
        }
    }
}

/// `(type OID, array type OID, name)` of the built-in types `from_builtin` knows, as in
/// PostgreSQL's `pg_type.dat` (checked against a PostgreSQL 15 server by
/// `tests/types.rs`). The name is the one `format_type` shows, used for [`PgType::Other`].
const BUILTIN: &[(u32, u32, &str)] = &[
    (16, 1000, "boolean"),
    (17, 1001, "bytea"),
    (18, 1002, "\"char\""),
    (19, 1003, "name"),
    (20, 1016, "bigint"),
    (21, 1005, "smallint"),
    (23, 1007, "integer"),
    (25, 1009, "text"),
    (26, 1028, "oid"),
    (114, 199, "json"),
    (142, 143, "xml"),
    (603, 1020, "box"),
    (650, 651, "cidr"),
    (700, 1021, "real"),
    (701, 1022, "double precision"),
    (774, 775, "macaddr8"),
    (790, 791, "money"),
    (829, 1040, "macaddr"),
    (869, 1041, "inet"),
    (1042, 1014, "character"),
    (1043, 1015, "character varying"),
    (1082, 1182, "date"),
    (1083, 1183, "time without time zone"),
    (1114, 1115, "timestamp without time zone"),
    (1184, 1185, "timestamp with time zone"),
    (1186, 1187, "interval"),
    (1266, 1270, "time with time zone"),
    (1560, 1561, "bit"),
    (1562, 1563, "bit varying"),
    (1700, 1231, "numeric"),
    (2950, 2951, "uuid"),
    (3802, 3807, "jsonb"),
];

/// The OID of `box`, the only built-in type whose arrays separate elements with `;`.
pub(crate) const BOX_OID: u32 = 603;

/// The numeric type of a `numeric` type modifier: `((precision << 16) | scale) + 4`, where
/// since PostgreSQL 15 the scale is the low 11 bits taken as signed (-1000 to 1000), and
/// anything below 4 (-1) means unconstrained.
fn numeric_from_typmod(typmod: i32) -> PgType {
    const VARHDRSZ: i32 = 4;
    if typmod < VARHDRSZ {
        return PgType::Numeric {
            precision: None,
            scale: None,
        };
    }
    let bits = typmod - VARHDRSZ;
    // Both fit by construction: 16 bits of precision, an 11-bit signed scale.
    let precision = u16::try_from((bits >> 16) & 0xffff).ok();
    let scale = i16::try_from(((bits & 0x7ff) ^ 0x400) - 0x400).ok();
    PgType::Numeric { precision, scale }
}

/// The `Decimal128(precision, scale)` that holds every value of `numeric(precision,
/// scale)` exactly, or `None` when there is none (unconstrained, or more than 38 digits).
///
/// A negative scale becomes scale 0 with the zeros counted as digits (`numeric(5,-2)` holds
/// integers of up to 7 digits), so that sinks never meet Arrow's rarely supported negative
/// scales; a scale above the precision (`numeric(2,5)`, values below 0.001) widens the
/// precision to the scale, since Arrow requires scale <= precision.
fn decimal128(precision: Option<u16>, scale: Option<i16>) -> Option<(u16, i16)> {
    const MAX_DECIMAL128_PRECISION: u16 = 38;
    let precision = precision?;
    let scale = scale.unwrap_or(0);
    let (precision, scale) = if scale < 0 {
        (precision.checked_add(scale.unsigned_abs())?, 0)
    } else {
        (precision.max(scale.unsigned_abs()), scale)
    };
    (precision <= MAX_DECIMAL128_PRECISION).then_some((precision, scale))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(precision: u16, scale: i16) -> PgType {
        PgType::Numeric {
            precision: Some(precision),
            scale: Some(scale),
        }
    }

    fn typmod(precision: i32, scale: i32) -> i32 {
        ((precision << 16) | (scale & 0x7ff)) + 4
    }

    #[test]
    fn numeric_type_modifiers_give_precision_and_scale() {
        assert_eq!(PgType::from_builtin(1700, typmod(10, 2)), Some(numeric(10, 2)));
        assert_eq!(PgType::from_builtin(1700, typmod(5, -2)), Some(numeric(5, -2)));
        assert_eq!(
            PgType::from_builtin(1700, typmod(1000, 1000)),
            Some(numeric(1000, 1000))
        );
        assert_eq!(PgType::from_builtin(1700, typmod(1, -1000)), Some(numeric(1, -1000)));
        assert_eq!(
            PgType::from_builtin(1700, -1),
            Some(PgType::Numeric {
                precision: None,
                scale: None
            })
        );
        assert_eq!(
            PgType::from_builtin(1231, typmod(12, 3)),
            Some(PgType::Array(Box::new(numeric(12, 3))))
        );
    }

    #[test]
    fn builtin_types_and_their_arrays_are_known() {
        for &(oid, array, name) in BUILTIN {
            let scalar = PgType::from_builtin(oid, -1);
            assert!(scalar.is_some(), "{name} ({oid}) unknown");
            assert_eq!(
                PgType::from_builtin(array, -1),
                scalar.map(|ty| PgType::Array(Box::new(ty))),
                "{name}[] ({array})"
            );
        }
        assert_eq!(PgType::from_builtin(1043, 104), Some(PgType::Text));
        assert_eq!(PgType::from_builtin(1042, 88), Some(PgType::Char(84)));
        assert_eq!(PgType::from_builtin(1042, -1), Some(PgType::Text));
        assert_eq!(
            PgType::from_builtin(1014, 14),
            Some(PgType::Array(Box::new(PgType::Char(10))))
        );
        assert_eq!(PgType::Char(84).sql_name(), "character(84)");
        assert_eq!(
            PgType::from_builtin(869, -1),
            Some(PgType::Other {
                oid: 869,
                name: "inet".to_owned()
            })
        );
        // User types have OIDs from 16384 on; 2249 is the pseudo-type `record`.
        assert_eq!(PgType::from_builtin(16_390, -1), None);
        assert_eq!(PgType::from_builtin(2249, -1), None);
    }

    #[test]
    fn sql_names_follow_format_type() {
        assert_eq!(PgType::Int4.sql_name(), "integer");
        assert_eq!(numeric(10, 2).sql_name(), "numeric(10,2)");
        assert_eq!(numeric(5, -2).sql_name(), "numeric(5,-2)");
        assert_eq!(PgType::TimestampTz.sql_name(), "timestamp with time zone");
        assert_eq!(PgType::Array(Box::new(PgType::Text)).sql_name(), "text[]");
        assert_eq!(PgType::Enum("mood".to_owned()).sql_name(), "mood");
    }

    #[test]
    fn arrow_decimals_hold_every_value_exactly() {
        assert_eq!(numeric(10, 2).arrow_type(), "Decimal128(10, 2)");
        assert_eq!(numeric(38, 0).arrow_type(), "Decimal128(38, 0)");
        assert_eq!(numeric(39, 2).arrow_type(), "Utf8");
        assert_eq!(numeric(5, -2).arrow_type(), "Decimal128(7, 0)");
        assert_eq!(numeric(37, -2).arrow_type(), "Utf8");
        assert_eq!(numeric(2, 5).arrow_type(), "Decimal128(5, 5)");
        assert_eq!(numeric(1, -1000).arrow_type(), "Utf8");
        assert_eq!(numeric(1000, 0).arrow_type(), "Utf8");
        let unconstrained = PgType::Numeric {
            precision: None,
            scale: None,
        };
        assert_eq!(unconstrained.arrow_type(), "Utf8");
    }

    #[test]
    fn arrow_types_of_arrays_and_times() {
        let array = PgType::Array(Box::new(numeric(10, 2)));
        assert_eq!(array.arrow_type(), "List(Decimal128(10, 2))");
        assert_eq!(array.json_type(), "array");
        assert_eq!(
            PgType::TimestampTz.arrow_type(),
            r#"Timestamp(Microsecond, Some("UTC"))"#
        );
        assert_eq!(PgType::Timestamp.arrow_type(), "Timestamp(Microsecond, None)");
        assert_eq!(PgType::Time.arrow_type(), "Time64(Microsecond)");
        assert_eq!(PgType::TimeTz.arrow_type(), "Utf8");
        assert_eq!(PgType::Oid.arrow_type(), "UInt32");
        assert_eq!(PgType::Bytea.arrow_type(), "Binary");
    }

    #[test]
    fn json_types_match_the_encoding() {
        assert_eq!(PgType::Int8.json_type(), "integer");
        assert_eq!(PgType::Float8.json_type(), "number");
        assert_eq!(numeric(10, 2).json_type(), "string");
        assert_eq!(PgType::Bool.json_type(), "boolean");
        assert_eq!(PgType::Jsonb.json_type(), "string");
    }
}
