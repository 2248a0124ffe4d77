//! The rule on part sizes, checked the same way by both backends.

use plexus_connector::ConnectorError;

use crate::MIN_PART_SIZE;

/// S3's largest part number.
pub(crate) const MAX_PARTS: i32 = 10_000;

/// The parts handed to an upload so far: numbers them and refuses a part after one
/// that was too small to be anything but the last.
#[derive(Debug, Default)]
pub(crate) struct PartSequence {
    count: i32,
    last_len: usize,
    bytes: u64,
}

impl PartSequence {
    /// Accepts the next part and returns its number (from 1), or a fatal error if the
    /// previous part was below [`MIN_PART_SIZE`] or S3's 10,000 parts are used up.
    pub(crate) fn next(&mut self, key: &str, len: usize) -> Result<i32, ConnectorError> {
        if self.count > 0 && self.last_len < MIN_PART_SIZE {
            return Err(ConnectorError::fatal(format!(
                "upload of `{key}`: part {} holds {} bytes, but every part but the last needs at least {MIN_PART_SIZE} \
                 bytes",
                self.count, self.last_len
            )));
        }
        if self.count >= MAX_PARTS {
            return Err(ConnectorError::fatal(format!(
                "upload of `{key}`: more than {MAX_PARTS} parts; write larger parts"
            )));
        }
        self.count += 1;
        self.last_len = len;
        self.bytes += len as u64;
        Ok(self.count)
    }

    /// Parts accepted so far.
    pub(crate) fn count(&self) -> i32 {
        self.count
    }

    /// Bytes accepted so far.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn only_the_last_part_may_be_small() {
        let mut parts = PartSequence::default();
        assert_eq!(parts.next("k", MIN_PART_SIZE).unwrap(), 1);
        assert_eq!(parts.next("k", MIN_PART_SIZE + 1).unwrap(), 2);
        assert_eq!(parts.next("k", 10).unwrap(), 3);
        let error = parts.next("k", MIN_PART_SIZE).unwrap_err();
        assert!(error.message().contains("part 3 holds 10 bytes"), "{error}");
        assert_eq!(parts.count(), 3);
        assert_eq!(parts.bytes(), 2 * MIN_PART_SIZE as u64 + 11);
    }
}
