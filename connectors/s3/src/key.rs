//! The keys both backends accept, so a sink tested on a directory behaves the same on S3.

use plexus_connector::ConnectorError;

/// The directory under a local store's root where uploads wait for completion; no key
/// may start with it.
pub(crate) const UPLOADS_DIR: &str = ".uploads";

/// Checks an object key: relative, `/`-separated, no empty, `.` or `..` segment, no
/// NUL, at most 1024 bytes (S3's limit), and not under [`UPLOADS_DIR`]. A bad key is
/// a bug in the caller: the error is fatal.
pub(crate) fn check_key(key: &str) -> Result<(), ConnectorError> {
    let problem = if key.is_empty() {
        Some("is empty")
    } else if key.len() > 1024 {
        Some("is longer than 1024 bytes")
    } else if key.contains('\0') {
        Some("holds a NUL character")
    } else if key.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
        Some("has an empty, `.` or `..` segment (keys are relative, like `dir/file.parquet`)")
    } else if key.split('/').next() == Some(UPLOADS_DIR) {
        Some("starts with `.uploads`, which is reserved for uploads in progress")
    } else {
        None
    };
    match problem {
        Some(problem) => Err(ConnectorError::fatal(format!(
            "object key `{}` {problem}",
            key.escape_debug()
        ))),
        None => Ok(()),
    }
}

/// Checks a listing or cleanup prefix: empty, or a key's beginning (no NUL, no `..`
/// segment, not starting with `/`).
pub(crate) fn check_prefix(prefix: &str) -> Result<(), ConnectorError> {
    if prefix.contains('\0') || prefix.starts_with('/') || prefix.split('/').any(|s| s == "..") {
        return Err(ConnectorError::fatal(format!(
            "object key prefix `{}` is not relative (no leading `/`, no `..`)",
            prefix.escape_debug()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn keys_are_relative_paths() {
        for good in ["a", "dir/file.parquet", "a.b/c-d/e_f", "..a/b.."] {
            check_key(good).unwrap();
        }
        for bad in ["", "/a", "a/", "a//b", "./a", "a/../b", "..", ".uploads/x", "a\0b"] {
            assert!(!check_key(bad).unwrap_err().is_retriable(), "{bad:?}");
        }
        check_prefix("").unwrap();
        check_prefix("dir/pa").unwrap();
        assert!(check_prefix("/dir").is_err());
        assert!(check_prefix("a/../").is_err());
    }
}
