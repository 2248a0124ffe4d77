//! Arrays in PostgreSQL's text format (`{1,2,NULL}`, `{{"a b","c\"d"},{NULL,"NULL"}}`,
//! `[0:1]={1,2}`) to nested JSON arrays.
//!
//! The grammar is `array_in`'s: an optional dimension decoration (`[1:2][0:1]=`, dropped),
//! then braces nesting up to six levels; elements are either double-quoted, with `\`
//! escaping the next character, or unquoted, trimmed of surrounding whitespace, where the
//! word `NULL` in any case is SQL NULL. Elements are separated by the element type's
//! delimiter: `,` for every built-in type except `box`, which uses `;`.

use super::json::{ValueError, write_json};
use super::{BOX_OID, PgType};

/// PostgreSQL's `MAXDIM`.
const MAX_DIMENSIONS: usize = 6;

/// Appends the array `text` of type `array` (whose elements are `element`) as a JSON
/// array, each element encoded by [`write_json`] for `element` and NULL as `null`.
pub(super) fn write_array(array: &PgType, element: &PgType, text: &[u8], out: &mut Vec<u8>) -> Result<(), ValueError> {
    // Arrays of arrays are multi-dimensional arrays of the innermost element type.
    let mut element = element;
    while let PgType::Array(inner) = element {
        element = inner;
    }
    let delimiter = match element {
        PgType::Other { oid: BOX_OID, .. } => b';',
        _ => b',',
    };
    let mut parser = Parser {
        text,
        at: 0,
        delimiter,
        element,
        scratch: Vec::new(),
        elements: 0,
    };
    parser.parse(out).map_err(|failure| match failure {
        Failure::Syntax(reason) => ValueError::new(array, text, reason),
        Failure::Element { index, error } => ValueError::new(array, text, format!("element {index}: {error}")),
    })
}

/// Why an array text could not be read.
enum Failure {
    /// Not an array literal; says what was expected where.
    Syntax(String),
    /// An element (counted from 1 in text order) is not a value of the element type.
    Element { index: usize, error: ValueError },
}

struct Parser<'t, 'e> {
    text: &'t [u8],
    at: usize,
    delimiter: u8,
    element: &'e PgType,
    /// Unescaped element text; reused by the elements of one array.
    scratch: Vec<u8>,
    /// Elements read so far, for error messages.
    elements: usize,
}

/// Where an element's text is: in the array text, or unescaped into `scratch`.
enum ElementText {
    Raw { start: usize, end: usize },
    Unescaped,
}

impl Parser<'_, '_> {
    fn parse(&mut self, out: &mut Vec<u8>) -> Result<(), Failure> {
        self.skip_whitespace();
        if self.peek() == Some(b'[') {
            self.skip_dimensions()?;
            self.skip_whitespace();
        }
        self.parse_level(out, 1)?;
        self.skip_whitespace();
        if self.at != self.text.len() {
            return Err(self.syntax("unexpected text after the closing `}`"));
        }
        Ok(())
    }

    /// Skips `[lower:upper]` (or `[upper]`) once per dimension, and the `=` after them:
    /// JSON arrays start at index 0 whatever PostgreSQL's lower bound.
    fn skip_dimensions(&mut self) -> Result<(), Failure> {
        loop {
            self.skip_whitespace();
            match self.next() {
                Some(b'[') => {
                    let bound = |b: &u8| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b':');
                    while self.peek().as_ref().is_some_and(bound) {
                        self.at += 1;
                    }
                    if self.next() != Some(b']') {
                        return Err(self.syntax("expected `]` after a dimension's bounds"));
                    }
                }
                Some(b'=') => return Ok(()),
                _ => return Err(self.syntax("expected `[` or `=` in the dimensions")),
            }
        }
    }

    /// Reads `{...}` at nesting level `depth` (1 for the outermost braces).
    fn parse_level(&mut self, out: &mut Vec<u8>, depth: usize) -> Result<(), Failure> {
        if depth > MAX_DIMENSIONS {
            return Err(self.syntax("more than 6 dimensions"));
        }
        if self.next() != Some(b'{') {
            return Err(self.syntax("expected `{`"));
        }
        out.push(b'[');
        self.skip_whitespace();
        if self.peek() == Some(b'}') {
            self.at += 1;
            out.push(b']');
            return Ok(());
        }
        let mut sub_arrays = None;
        loop {
            self.skip_whitespace();
            let is_sub_array = self.peek() == Some(b'{');
            if *sub_arrays.get_or_insert(is_sub_array) != is_sub_array {
                return Err(self.syntax("sub-arrays and elements mixed at one level"));
            }
            if is_sub_array {
                self.parse_level(out, depth + 1)?;
            } else {
                self.parse_element(out)?;
            }
            self.skip_whitespace();
            match self.next() {
                Some(b'}') => {
                    out.push(b']');
                    return Ok(());
                }
                Some(b) if b == self.delimiter => out.push(b','),
                _ => {
                    return Err(self.syntax(format!(
                        "expected `{}` or `}}` after an element",
                        char::from(self.delimiter)
                    )));
                }
            }
        }
    }

    /// Reads one element and appends its JSON.
    fn parse_element(&mut self, out: &mut Vec<u8>) -> Result<(), Failure> {
        self.elements += 1;
        let text = if self.peek() == Some(b'"') {
            self.at += 1;
            self.quoted()?
        } else {
            match self.unquoted()? {
                Some(text) => text,
                None => {
                    out.extend_from_slice(b"null");
                    return Ok(());
                }
            }
        };
        let value = match text {
            ElementText::Raw { start, end } => &self.text[start..end],
            ElementText::Unescaped => &self.scratch,
        };
        write_json(self.element, value, out).map_err(|error| Failure::Element {
            index: self.elements,
            error,
        })
    }

    /// Reads a quoted element after its opening quote, through its closing quote.
    fn quoted(&mut self) -> Result<ElementText, Failure> {
        let start = self.at;
        let special = self.text[start..].iter().position(|&b| b == b'"' || b == b'\\');
        let Some(offset) = special else {
            return Err(self.syntax("a quoted element has no closing `\"`"));
        };
        self.at = start + offset;
        if self.text[self.at] == b'"' {
            self.at += 1;
            return Ok(ElementText::Raw {
                start,
                end: start + offset,
            });
        }
        self.scratch.clear();
        self.scratch.extend_from_slice(&self.text[start..self.at]);
        loop {
            match self.next() {
                Some(b'"') => return Ok(ElementText::Unescaped),
                Some(b'\\') => match self.next() {
                    Some(escaped) => self.scratch.push(escaped),
                    None => return Err(self.syntax("a quoted element has no closing `\"`")),
                },
                Some(b) => self.scratch.push(b),
                None => return Err(self.syntax("a quoted element has no closing `\"`")),
            }
        }
    }

    /// Reads an unquoted element up to the next delimiter or `}`, trimming the whitespace
    /// around it; `None` for the word `NULL`.
    fn unquoted(&mut self) -> Result<Option<ElementText>, Failure> {
        let start = self.at;
        let ends = |b: u8| b == self.delimiter || matches!(b, b'}' | b'{' | b'"' | b'\\');
        let end = self.text[start..]
            .iter()
            .position(|&b| ends(b))
            .map_or(self.text.len(), |offset| start + offset);
        self.at = end;
        if self.peek() != Some(b'\\') {
            if matches!(self.peek(), Some(b'{' | b'"')) {
                return Err(self.syntax("unexpected `{` or `\"` inside an unquoted element"));
            }
            let mut trimmed = end;
            while trimmed > start && is_space(self.text[trimmed - 1]) {
                trimmed -= 1;
            }
            let raw = &self.text[start..trimmed];
            if raw.is_empty() {
                return Err(self.syntax("empty unquoted element"));
            }
            if raw.eq_ignore_ascii_case(b"NULL") {
                return Ok(None);
            }
            return Ok(Some(ElementText::Raw { start, end: trimmed }));
        }
        // With backslashes: unescape, and trim only whitespace that was not escaped.
        self.scratch.clear();
        self.scratch.extend_from_slice(&self.text[start..end]);
        let mut kept = self.scratch.len();
        while kept > 0 && is_space(self.scratch[kept - 1]) {
            kept -= 1;
        }
        loop {
            match self.peek() {
                Some(b'\\') => {
                    self.at += 1;
                    let Some(escaped) = self.next() else {
                        return Err(self.syntax("the array ends after a `\\`"));
                    };
                    self.scratch.push(escaped);
                    kept = self.scratch.len();
                }
                Some(b) if b == self.delimiter || b == b'}' => break,
                Some(b'{' | b'"') => {
                    return Err(self.syntax("unexpected `{` or `\"` inside an unquoted element"));
                }
                Some(b) => {
                    self.at += 1;
                    self.scratch.push(b);
                    if !is_space(b) {
                        kept = self.scratch.len();
                    }
                }
                None => break,
            }
        }
        self.scratch.truncate(kept);
        Ok(Some(ElementText::Unescaped))
    }

    fn skip_whitespace(&mut self) {
        while self.peek().is_some_and(is_space) {
            self.at += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.at += 1;
        Some(b)
    }

    #[cold]
    fn syntax(&self, what: impl Into<String>) -> Failure {
        Failure::Syntax(format!("{} at byte {}", what.into(), self.at))
    }
}

/// The whitespace `array_in` skips (`array_isspace`).
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn json(element: PgType, text: &str) -> Result<String, ValueError> {
        let mut out = Vec::new();
        write_json(&PgType::Array(Box::new(element)), text.as_bytes(), &mut out)?;
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn arrays_of_numbers_and_nulls() {
        assert_eq!(json(PgType::Int4, "{1,2,NULL}").unwrap(), "[1,2,null]");
        assert_eq!(json(PgType::Int4, "{}").unwrap(), "[]");
        assert_eq!(json(PgType::Int4, "{{1,2},{3,4}}").unwrap(), "[[1,2],[3,4]]");
        assert_eq!(json(PgType::Int4, "[0:1]={1,2}").unwrap(), "[1,2]");
        assert_eq!(
            json(PgType::Int4, "[1:2][-1:0]={{1,2},{3,4}}").unwrap(),
            "[[1,2],[3,4]]"
        );
        assert_eq!(json(PgType::Int4, " { 1 , null ,Null } ").unwrap(), "[1,null,null]");
        assert_eq!(json(PgType::Float8, "{1.5e+300,NaN}").unwrap(), r#"[1.5e+300,"NaN"]"#);
        let numeric = PgType::Numeric {
            precision: None,
            scale: None,
        };
        assert_eq!(json(numeric, "{12.50,-1}").unwrap(), r#"["12.50","-1"]"#);
    }

    #[test]
    fn quoted_elements_are_unescaped() {
        assert_eq!(
            json(PgType::Text, r#"{"a b","c\"d",NULL,"NULL","","x\\y"," s "}"#).unwrap(),
            r#"["a b","c\"d",null,"NULL","","x\\y"," s "]"#
        );
        assert_eq!(
            json(PgType::Text, r"{a\,b,\ x\ ,c  d}").unwrap(),
            r#"["a,b"," x ","c  d"]"#
        );
        assert_eq!(json(PgType::Text, r"{\NULL}").unwrap(), r#"["NULL"]"#);
        assert_eq!(json(PgType::Bytea, r#"{"\\x00ff",NULL}"#).unwrap(), r#"["AP8=",null]"#);
        assert_eq!(json(PgType::Json, r#"{"{\"a\": 1}"}"#).unwrap(), r#"["{\"a\": 1}"]"#);
        assert_eq!(
            json(PgType::TimestampTz, r#"{"2026-11-22 13:04:05+00",infinity}"#).unwrap(),
            r#"["2026-11-22T13:04:05Z","infinity"]"#
        );
    }

    #[test]
    fn box_arrays_use_semicolons() {
        let ty = PgType::from_builtin(603, -1).unwrap();
        assert_eq!(
            json(ty, "{(1,1),(0,0);(2,2),(1,1)}").unwrap(),
            r#"["(1,1),(0,0)","(2,2),(1,1)"]"#
        );
    }

    #[test]
    fn malformed_arrays_are_rejected() {
        for text in [
            "",
            "1,2",
            "{1,2",
            "{1,,2}",
            "{1,2,}",
            "{,}",
            "{1}}",
            "{{1},2}",
            "{1,{2}}",
            r#"{"a}"#,
            r#"{a"b"}"#,
            "{a\\",
            "[0:1]{1,2}",
            "[0:1={1,2}",
            "{{{{{{{1}}}}}}}",
            "{1} x",
        ] {
            assert!(json(PgType::Text, text).is_err(), "{text:?} accepted");
        }
        assert_eq!(json(PgType::Text, "{{{{{{1}}}}}}").unwrap(), r#"[[[[[["1"]]]]]]"#);
    }

    #[test]
    fn element_errors_say_which_element() {
        let error = json(PgType::Int4, "{1,2,x}").unwrap_err();
        assert_eq!(
            error.to_string(),
            "cannot read `{1,2,x}` as integer[]: element 3: cannot read `x` as integer: not a decimal integer"
        );
        let error = json(PgType::Int4, "{1;2}").unwrap_err();
        assert_eq!(
            error.to_string(),
            "cannot read `{1;2}` as integer[]: element 1: cannot read `1;2` as integer: not a decimal integer"
        );
        let error = json(PgType::Int4, "{1,2").unwrap_err();
        assert_eq!(error.reason(), "expected `,` or `}` after an element at byte 4");
    }

    /// An array of strings and NULLs, nested to any depth up to 3.
    #[derive(Debug, Clone)]
    enum Item {
        Element(Option<String>),
        Array(Vec<Item>),
    }

    fn items() -> impl Strategy<Value = Vec<Item>> {
        // Dimensions are rectangular in PostgreSQL, but the parser does not rely on it.
        let element = prop_oneof![
            1 => Just(None),
            1 => Just(Some("NULL".to_owned())),
            1 => Just(Some("null".to_owned())),
            8 => any::<String>().prop_map(Some),
            4 => "[ a-z,{}\"\\\\\t\n]{0,6}".prop_map(Some),
        ];
        let elements = prop::collection::vec(element.prop_map(Item::Element), 0..5);
        elements.prop_recursive(2, 40, 4, |inner| {
            prop::collection::vec(inner.prop_map(Item::Array), 1..4)
        })
    }

    /// The text `array_out` writes.
    fn render(items: &[Item], out: &mut String) {
        out.push('{');
        for (index, item) in items.iter().enumerate() {
            if index > 0 {
                out.push(',');
            }
            match item {
                Item::Element(None) => out.push_str("NULL"),
                Item::Element(Some(text)) => {
                    let needs_quotes = text.is_empty()
                        || text.eq_ignore_ascii_case("NULL")
                        || text
                            .bytes()
                            .any(|b| matches!(b, b'{' | b'}' | b',' | b'"' | b'\\') || is_space(b));
                    if needs_quotes {
                        out.push('"');
                        for c in text.chars() {
                            if matches!(c, '"' | '\\') {
                                out.push('\\');
                            }
                            out.push(c);
                        }
                        out.push('"');
                    } else {
                        out.push_str(text);
                    }
                }
                Item::Array(items) => render(items, out),
            }
        }
        out.push('}');
    }

    fn to_json(items: &[Item]) -> serde_json::Value {
        serde_json::Value::Array(
            items
                .iter()
                .map(|item| match item {
                    Item::Element(None) => serde_json::Value::Null,
                    Item::Element(Some(text)) => serde_json::Value::String(text.clone()),
                    Item::Array(items) => to_json(items),
                })
                .collect(),
        )
    }

    proptest! {
        #[test]
        fn arrays_as_postgres_writes_them_read_back(items in items()) {
            let mut text = String::new();
            render(&items, &mut text);
            let written = json(PgType::Text, &text).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let parsed: serde_json::Value = serde_json::from_str(&written).unwrap();
            prop_assert_eq!(parsed, to_json(&items), "{}", text);
        }

        #[test]
        fn arbitrary_bytes_never_panic(text in prop::collection::vec(any::<u8>(), 0..40)) {
            let mut out = Vec::new();
            let _ = write_json(&PgType::Array(Box::new(PgType::Text)), &text, &mut out);
        }
    }
}
