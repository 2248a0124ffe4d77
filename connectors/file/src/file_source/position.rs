//! The source position: which file, which generation of it, which byte.
//!
//! Encoded as bytes whose order is the order in which data is read:
//!
//! ```text
//! path bytes | 0x00 | generation u64 | offset u64 | line u64 | dev u64 | inode u64
//! ```
//!
//! (integers big-endian). Files are read in name order, so the path comes first, and
//! the `0x00` separator (never part of a Unix path) makes a name sort before the longer
//! names it prefixes, as in name order. `generation` counts how often the file at that
//! path was replaced (rotation) or truncated, so a new file read from byte 0 still
//! sorts after the old one. `offset` is the byte after the last line consumed, `line`
//! the number of lines consumed, and (`dev`, `inode`) identify the file read, so a
//! restart can tell whether the file at the path is still the same.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use plexus_connector::Position;

use crate::error::FileError;

/// A file's identity on its file system, which survives renames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FileId {
    pub dev: u64,
    pub inode: u64,
}

impl FileId {
    pub fn of(metadata: &std::fs::Metadata) -> FileId {
        use std::os::unix::fs::MetadataExt;
        FileId {
            dev: metadata.dev(),
            inode: metadata.ino(),
        }
    }
}

/// Where a file source is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilePosition {
    /// The configured path of the file (the directory of the pattern and the file's
    /// name).
    pub path: PathBuf,
    pub generation: u64,
    /// The byte after the last line consumed.
    pub offset: u64,
    /// The number of lines consumed.
    pub line: u64,
    pub file: FileId,
}

const TAIL: usize = 5 * 8;

impl FilePosition {
    pub fn encode(&self) -> Position {
        let path = self.path.as_os_str().as_bytes();
        let mut bytes = Vec::with_capacity(path.len() + 1 + TAIL);
        bytes.extend_from_slice(path);
        bytes.push(0);
        for part in [self.generation, self.offset, self.line, self.file.dev, self.file.inode] {
            bytes.extend_from_slice(&part.to_be_bytes());
        }
        Position::from_bytes(bytes)
    }

    pub fn decode(position: &Position) -> Result<FilePosition, FileError> {
        let bytes = position.as_bytes();
        let problem = |problem: &str| FileError::Position {
            position: position.to_string(),
            problem: problem.to_owned(),
        };
        let separator = bytes
            .iter()
            .position(|b| *b == 0)
            .ok_or_else(|| problem("it is not a file position (no path); was it written by another connector type?"))?;
        let (path, tail) = (&bytes[..separator], &bytes[separator + 1..]);
        if tail.len() != TAIL || path.is_empty() {
            return Err(problem(
                "it is not a file position (wrong length); was it written by another connector type?",
            ));
        }
        let mut parts = tail.chunks_exact(8).map(|chunk| {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            u64::from_be_bytes(word)
        });
        let mut next = || parts.next().unwrap_or_default();
        Ok(FilePosition {
            path: PathBuf::from(OsStr::from_bytes(path)),
            generation: next(),
            offset: next(),
            line: next(),
            file: FileId {
                dev: next(),
                inode: next(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(path: &str, generation: u64, offset: u64) -> Position {
        FilePosition {
            path: path.into(),
            generation,
            offset,
            line: offset / 10,
            file: FileId { dev: 1, inode: 2 },
        }
        .encode()
    }

    #[test]
    fn positions_round_trip_and_sort_in_reading_order() {
        let position = FilePosition {
            path: "logs/a.jsonl".into(),
            generation: 3,
            offset: 1 << 40,
            line: 77,
            file: FileId {
                dev: 9,
                inode: u64::MAX,
            },
        };
        assert_eq!(FilePosition::decode(&position.encode()).unwrap(), position);

        assert!(at("d/a", 0, 500) < at("d/a", 0, 501));
        assert!(
            at("d/a", 0, u64::MAX) < at("d/a", 1, 0),
            "a replaced file sorts after the old one"
        );
        assert!(
            at("d/a", 9, u64::MAX) < at("d/a.1", 0, 0),
            "names sort before the names they prefix"
        );
        assert!(at("d/a-1", 0, u64::MAX) < at("d/a-2", 0, 0));

        assert!(FilePosition::decode(&Position::from_u64(5)).is_err());
        assert!(FilePosition::decode(&Position::from_bytes(&b"a\0short"[..])).is_err());
    }
}
