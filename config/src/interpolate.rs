//! `${VAR}` and `${VAR:-default}` in string values, from the environment.

/// Why a string could not be interpolated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum InterpolationError {
    /// `${NAME}` without a default, and `NAME` is not set.
    Missing(String),
    /// `${` without its `}`.
    Unterminated,
    /// `${...}` whose name is not a variable name (letters, digits, `_`).
    BadName(String),
}

/// Replaces `${VAR}` by the variable's value and `${VAR:-default}` by the value, or by
/// `default` when the variable is unset or empty (as a shell does). `$$` is a literal
/// `$`; any other `$` is kept as written. Reports every problem of the string.
pub(crate) fn interpolate(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, Vec<InterpolationError>> {
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(close) = body.find('}') else {
                errors.push(InterpolationError::Unterminated);
                return Err(errors);
            };
            let inner = &body[..close];
            let (name, default) = match inner.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (inner, None),
            };
            if !is_variable_name(name) {
                errors.push(InterpolationError::BadName(name.to_owned()));
            } else {
                match (env(name), default) {
                    (Some(value), Some(default)) if value.is_empty() => out.push_str(default),
                    (Some(value), _) => out.push_str(&value),
                    (None, Some(default)) => out.push_str(default),
                    (None, None) => errors.push(InterpolationError::Missing(name.to_owned())),
                }
            }
            rest = &body[close + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    if errors.is_empty() { Ok(out) } else { Err(errors) }
}

fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOME" => Some("/home/ada".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    fn run(text: &str) -> Result<String, Vec<InterpolationError>> {
        interpolate(text, &env)
    }

    #[test]
    fn replaces_variables_and_defaults() {
        assert_eq!(run("plain"), Ok("plain".into()));
        assert_eq!(run("${HOME}/x"), Ok("/home/ada/x".into()));
        assert_eq!(run("${OUT_DIR:-./out}/orders.jsonl"), Ok("./out/orders.jsonl".into()));
        assert_eq!(run("${HOME:-/tmp}"), Ok("/home/ada".into()));
        assert_eq!(run("${EMPTY:-fallback}"), Ok("fallback".into()));
        assert_eq!(run("[${EMPTY}]"), Ok("[]".into()));
        assert_eq!(run("${NOPE:-}"), Ok(String::new()));
        assert_eq!(run("a${HOME}b${HOME}c"), Ok("a/home/adab/home/adac".into()));
    }

    #[test]
    fn dollars_escape_and_pass_through() {
        assert_eq!(run("cost $$5"), Ok("cost $5".into()));
        assert_eq!(run("$${HOME}"), Ok("${HOME}".into()));
        assert_eq!(run("$5 and $"), Ok("$5 and $".into()));
    }

    #[test]
    fn reports_every_missing_variable_and_bad_syntax() {
        assert_eq!(
            run("${A}:${HOME}:${B}"),
            Err(vec![
                InterpolationError::Missing("A".into()),
                InterpolationError::Missing("B".into())
            ])
        );
        assert_eq!(run("x${HOME"), Err(vec![InterpolationError::Unterminated]));
        assert_eq!(run("${}"), Err(vec![InterpolationError::BadName(String::new())]));
        assert_eq!(run("${A B}"), Err(vec![InterpolationError::BadName("A B".into())]));
    }
}
