//! One line of CSV (RFC 4180 quoting, a record per line) into JSON.

use crate::json::push_str;

/// Splits a line (without its line end) into fields.
pub(crate) fn parse_row(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = line.char_indices().peekable();
    loop {
        let mut field = String::new();
        if chars.peek().is_some_and(|(_, c)| *c == '"') {
            chars.next();
            loop {
                match chars.next() {
                    Some((_, '"')) if chars.peek().is_some_and(|(_, c)| *c == '"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some((_, '"')) => break,
                    Some((_, c)) => field.push(c),
                    None => {
                        return Err(format!(
                            "unterminated quoted field {} (a field cannot span lines)",
                            fields.len() + 1
                        ));
                    }
                }
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some((_, ',')) => fields.push(field),
                Some((at, c)) => {
                    return Err(format!(
                        "unexpected {c:?} after the closing quote of field {} at column {}",
                        fields.len() + 1,
                        at + 1
                    ));
                }
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                    Some((_, ',')) => break,
                    Some((_, c)) => field.push(c),
                }
            }
            fields.push(field);
        }
    }
}

/// `{"name":"value",...}` of a row under a header.
pub(crate) fn row_object(header: &[String], row: &[String], out: &mut Vec<u8>) -> Result<(), String> {
    if header.len() != row.len() {
        return Err(format!(
            "the row has {} fields but the header has {}",
            row.len(),
            header.len()
        ));
    }
    out.push(b'{');
    for (i, (name, value)) in header.iter().zip(row).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_str(out, name);
        out.push(b':');
        push_str(out, value);
    }
    out.push(b'}');
    Ok(())
}

/// `["value",...]` of a row without a header.
pub(crate) fn row_array(row: &[String], out: &mut Vec<u8>) {
    out.push(b'[');
    for (i, value) in row.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_str(out, value);
    }
    out.push(b']');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_split_with_quotes() {
        assert_eq!(parse_row("a,b,c").unwrap(), ["a", "b", "c"]);
        assert_eq!(parse_row("").unwrap(), [""]);
        assert_eq!(parse_row("a,,").unwrap(), ["a", "", ""]);
        assert_eq!(
            parse_row(r#""x, y","say ""hi""",z"#).unwrap(),
            ["x, y", "say \"hi\"", "z"]
        );
        assert_eq!(parse_row(r#""""#).unwrap(), [""]);
        assert_eq!(parse_row("é,ü").unwrap(), ["é", "ü"]);
        assert!(parse_row(r#""open,b"#).unwrap_err().contains("unterminated"));
        assert!(parse_row(r#""a"b,c"#).unwrap_err().contains("after the closing quote"));
    }

    #[test]
    fn rows_become_json() {
        let header = vec!["id".to_owned(), "name".to_owned()];
        let mut out = Vec::new();
        row_object(&header, &["1".to_owned(), "A \"b\"".to_owned()], &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), r#"{"id":"1","name":"A \"b\""}"#);
        assert!(row_object(&header, &["1".to_owned()], &mut Vec::new()).is_err());
        let mut out = Vec::new();
        row_array(&["1".to_owned(), "x".to_owned()], &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), r#"["1","x"]"#);
    }
}
