//! Which files a source reads: one path, or the files of a directory whose names
//! match a pattern with `*` and `?`.

use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};

use crate::error::FileError;

/// The files a source reads, in reading (name) order.
#[derive(Debug, Clone)]
pub(crate) struct FileSet {
    dir: PathBuf,
    pattern: NamePattern,
}

#[derive(Debug, Clone)]
enum NamePattern {
    Exact(OsString),
    Wildcard(Vec<char>),
}

impl FileSet {
    /// The files of the `path` setting: a path, or a directory and a file-name pattern.
    pub(crate) fn new(path: &Path) -> Result<FileSet, FileError> {
        let name = path
            .file_name()
            .ok_or_else(|| FileError::Config(format!("file-source `path` {path:?} does not name a file")))?;
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if dir.to_string_lossy().contains(['*', '?']) {
            return Err(FileError::Config(format!(
                "file-source `path` {path:?} has wildcards in a directory name; only the file name may have `*` or `?`"
            )));
        }
        let pattern = match name.to_str() {
            Some(text) if text.contains(['*', '?']) => NamePattern::Wildcard(text.chars().collect()),
            _ => NamePattern::Exact(name.to_owned()),
        };
        Ok(FileSet { dir, pattern })
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn is_pattern(&self) -> bool {
        matches!(self.pattern, NamePattern::Wildcard(_))
    }

    /// Whether a file of this name belongs to the set.
    pub(crate) fn matches(&self, name: &OsStr) -> bool {
        match &self.pattern {
            NamePattern::Exact(exact) => exact == name,
            NamePattern::Wildcard(pattern) => name
                .to_str()
                .is_some_and(|name| wildcard_match(pattern, &name.chars().collect::<Vec<_>>())),
        }
    }

    /// The names of the regular files of the set, in name (byte) order.
    pub(crate) fn list(&self) -> Result<Vec<OsString>, FileError> {
        let mut names = match &self.pattern {
            NamePattern::Exact(name) => match std::fs::metadata(self.dir.join(name)) {
                Ok(metadata) if metadata.is_file() => vec![name.clone()],
                Ok(_) => Vec::new(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(FileError::io("read", self.dir.join(name))(e)),
            },
            NamePattern::Wildcard(_) => {
                let entries = match std::fs::read_dir(&self.dir) {
                    Ok(entries) => entries,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
                    Err(e) => return Err(FileError::io("list the directory", &self.dir)(e)),
                };
                let mut names = Vec::new();
                for entry in entries {
                    let entry = entry.map_err(FileError::io("list the directory", &self.dir))?;
                    let name = entry.file_name();
                    // Follows symbolic links: a link to a file is read as that file.
                    if self.matches(&name) && std::fs::metadata(entry.path()).is_ok_and(|m| m.is_file()) {
                        names.push(name);
                    }
                }
                names
            }
        };
        names.sort();
        Ok(names)
    }
}

/// Whether `name` matches `pattern`, where `*` matches any characters (none too) and
/// `?` exactly one.
fn wildcard_match(pattern: &[char], name: &[char]) -> bool {
    let (mut p, mut n) = (0, 0);
    // Where to resume after the last `*`: the pattern after it, and the name position
    // it has absorbed up to.
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p + 1, n));
                p += 1;
            }
            Some(c) if *c == '?' || *c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((after, absorbed)) => {
                    p = after;
                    n = absorbed + 1;
                    star = Some((after, absorbed + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, name: &str) -> bool {
        wildcard_match(&pattern.chars().collect::<Vec<_>>(), &name.chars().collect::<Vec<_>>())
    }

    #[test]
    fn wildcards_match_like_a_shell() {
        assert!(matches("*.jsonl", "a.jsonl"));
        assert!(matches("*.jsonl", ".jsonl"));
        assert!(!matches("*.jsonl", "a.jsonl.1"));
        assert!(matches("app-??.log", "app-01.log"));
        assert!(!matches("app-??.log", "app-1.log"));
        assert!(matches("a*b*c", "aXXbYYbZc"));
        assert!(!matches("a*b*c", "aXXbYYbZ"));
        assert!(matches("*", ""));
        assert!(matches("**x", "abx"));
        assert!(matches("é?*", "éa"));
        assert!(!matches("exact", "exactly"));
    }

    #[test]
    fn directories_cannot_have_wildcards() {
        assert!(FileSet::new(Path::new("logs/*/a.jsonl")).is_err());
        let set = FileSet::new(Path::new("logs/app-*.jsonl")).unwrap();
        assert_eq!(set.dir(), Path::new("logs"));
        assert!(set.is_pattern());
        assert!(set.matches(OsStr::new("app-2.jsonl")));
        let set = FileSet::new(Path::new("a.jsonl")).unwrap();
        assert_eq!(set.dir(), Path::new("."));
        assert!(!set.is_pattern());
    }
}
