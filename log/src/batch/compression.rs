//! Compression of the records section: the codec names, Kafka's LZ4 frame and
//! zstd frame encodings, and bounded decompression.

use std::fmt;
use std::io::{Cursor, Read};
use std::str::FromStr;

use bytes::{BufMut, Bytes, BytesMut};
use lz4_flex::frame::FrameDecoder;

use super::{BATCH_HEADER_LEN, BatchError};

/// Floor of the decompressed-size bound, see [`max_decompressed_len`].
pub const MIN_DECOMPRESSED_LIMIT: usize = 64 << 20;
/// Compression ratio allowed on top of the floor, see [`max_decompressed_len`].
pub const MAX_COMPRESSION_RATIO: usize = 255;
/// zstd window bound (2^26 = 64 MiB), matching [`MIN_DECOMPRESSED_LIMIT`], so a
/// hostile frame header cannot make the decoder reserve a 2 GiB window.
const ZSTD_WINDOW_LOG_MAX: u32 = 26;
/// zstd level for written batches; 3 is zstd's and Kafka's default.
const ZSTD_LEVEL: i32 = 3;

/// How the records section of a batch is compressed.
///
/// Serialised in configs as `"none"`, `"lz4"` or `"zstd"`. Gzip and snappy
/// batches written by other Kafka clients are refused on read with
/// [`BatchError::UnsupportedCompression`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Records are stored as they are.
    #[default]
    None,
    /// LZ4 frame format (Kafka codec 3), independent 64 KiB blocks as Kafka writes them.
    Lz4,
    /// zstd frame format (Kafka codec 4), level 3.
    Zstd,
}

impl Compression {
    /// The codec id in attribute bits 0-2.
    pub fn attribute_bits(self) -> i16 {
        match self {
            Compression::None => 0,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }

    /// The lower-case config name.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

impl FromStr for Compression {
    type Err = BatchError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "none" => Ok(Compression::None),
            "lz4" => Ok(Compression::Lz4),
            "zstd" => Ok(Compression::Zstd),
            other => Err(BatchError::UnknownCompression(other.to_owned())),
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The most bytes a compressed records section of `compressed_len` bytes may
/// decompress to: `max(64 MiB, 255 × compressed_len)`.
///
/// 255 is LZ4's largest possible ratio; zstd can go beyond it, which the
/// 64 MiB floor allows for small batches. The bound keeps memory proportional
/// to the bytes actually received, so a tiny hostile batch cannot make the
/// reader allocate gigabytes. Batches the builder writes stay far inside it as
/// long as the log caps batch sizes well below 64 MiB.
pub fn max_decompressed_len(compressed_len: usize) -> usize {
    compressed_len
        .saturating_mul(MAX_COMPRESSION_RATIO)
        .max(MIN_DECOMPRESSED_LIMIT)
}

/// Reusable compression state of a builder: a scratch block for LZ4, the zstd
/// context's workspace.
#[derive(Default)]
pub(crate) struct Compressors {
    lz4_block: Vec<u8>,
    zstd: Option<zstd::bulk::Compressor<'static>>,
}

impl fmt::Debug for Compressors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Compressors")
            .field("lz4_block", &self.lz4_block.len())
            .field("zstd_ready", &self.zstd.is_some())
            .finish()
    }
}

/// Kafka's LZ4 frames: independent blocks of at most 64 KiB, no checksums.
const LZ4_BLOCK: usize = 64 << 10;
/// Magic, FLG (version 01, independent blocks, no checksums, no content size),
/// BD (64 KiB blocks) and the header checksum, `(xxh32(FLG BD) >> 8) & 0xFF`.
const LZ4_FRAME_HEADER: [u8; 7] = [0x04, 0x22, 0x4D, 0x18, 0x60, 0x40, 0x82];
/// The high bit of a block's size: the block is stored uncompressed.
const LZ4_STORED: u32 = 1 << 31;

impl Compressors {
    /// Compresses `records` into a new buffer that starts with
    /// `BATCH_HEADER_LEN` zero bytes for the header.
    ///
    /// `Compression::None` copies the records.
    pub(crate) fn compress(&mut self, compression: Compression, records: &[u8]) -> Result<BytesMut, BatchError> {
        match compression {
            Compression::None => {
                let mut out = BytesMut::with_capacity(BATCH_HEADER_LEN + records.len());
                out.put_bytes(0, BATCH_HEADER_LEN);
                out.put_slice(records);
                Ok(out)
            }
            Compression::Lz4 => self.compress_lz4(records),
            Compression::Zstd => self.compress_zstd(records),
        }
    }

    /// Writes the frame itself, block by block with `lz4_flex`'s block encoder: its
    /// frame encoder, reused, takes about 1.4 times as long on the same blocks.
    fn compress_lz4(&mut self, records: &[u8]) -> Result<BytesMut, BatchError> {
        // Records compress about tenfold; start from a quarter and grow if needed.
        let mut out = BytesMut::with_capacity(BATCH_HEADER_LEN + LZ4_FRAME_HEADER.len() + records.len() / 4 + 64);
        out.put_bytes(0, BATCH_HEADER_LEN);
        out.put_slice(&LZ4_FRAME_HEADER);
        let bound = lz4_flex::block::get_maximum_output_size(LZ4_BLOCK);
        if self.lz4_block.len() < bound {
            self.lz4_block.resize(bound, 0);
        }
        for block in records.chunks(LZ4_BLOCK) {
            let written = lz4_flex::block::compress_into(block, &mut self.lz4_block)
                .map_err(|err| BatchError::Compress(std::io::Error::other(err)))?;
            match self.lz4_block.get(..written) {
                Some(compressed) if written < block.len() => {
                    out.put_u32_le(written as u32);
                    out.put_slice(compressed);
                }
                _ => {
                    out.put_u32_le(block.len() as u32 | LZ4_STORED);
                    out.put_slice(block);
                }
            }
        }
        out.put_u32_le(0);
        Ok(out)
    }

    fn compress_zstd(&mut self, records: &[u8]) -> Result<BytesMut, BatchError> {
        let compressor = match &mut self.zstd {
            Some(compressor) => compressor,
            none => none.insert(zstd::bulk::Compressor::new(ZSTD_LEVEL).map_err(BatchError::Compress)?),
        };
        let bound = zstd::zstd_safe::compress_bound(records.len());
        let mut out = Vec::with_capacity(BATCH_HEADER_LEN + bound);
        out.resize(BATCH_HEADER_LEN, 0);
        let mut cursor = Cursor::new(out);
        cursor.set_position(BATCH_HEADER_LEN as u64);
        compressor
            .compress_to_buffer(records, &mut cursor)
            .map_err(BatchError::Compress)?;
        // Vec -> Bytes -> BytesMut hands over the allocation without copying.
        Ok(BytesMut::from(Bytes::from(cursor.into_inner())))
    }
}

/// Decompresses a records section, refusing output beyond
/// [`max_decompressed_len`]. `Compression::None` copies the input.
pub(crate) fn decompress(compression: Compression, section: &[u8]) -> Result<Vec<u8>, BatchError> {
    let limit = max_decompressed_len(section.len());
    match compression {
        Compression::None => Ok(section.to_vec()),
        Compression::Lz4 => read_bounded(FrameDecoder::new(section), section.len().saturating_mul(2), limit),
        Compression::Zstd => {
            let mut decoder = zstd::stream::read::Decoder::with_buffer(section).map_err(BatchError::Decompress)?;
            decoder
                .window_log_max(ZSTD_WINDOW_LOG_MAX)
                .map_err(BatchError::Decompress)?;
            // Pre-size from the frame's declared content size, which is only a
            // hint: the read below enforces the real bound.
            let hint = match zstd::zstd_safe::get_frame_content_size(section) {
                Ok(Some(size)) => usize::try_from(size).unwrap_or(limit),
                _ => section.len().saturating_mul(2),
            };
            read_bounded(decoder, hint, limit)
        }
    }
}

/// Reads `reader` to its end into a new buffer, failing once it yields more
/// than `limit` bytes.
fn read_bounded(reader: impl Read, hint: usize, limit: usize) -> Result<Vec<u8>, BatchError> {
    let mut out = Vec::with_capacity(hint.min(limit));
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    reader.take(cap).read_to_end(&mut out).map_err(BatchError::Decompress)?;
    if out.len() > limit {
        return Err(BatchError::DecompressedTooLarge { limit });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn sample_records() -> Vec<u8> {
        (0..200_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect()
    }

    #[test]
    fn names_round_trip_and_unknown_names_list_valid_ones() {
        for codec in [Compression::None, Compression::Lz4, Compression::Zstd] {
            assert_eq!(codec.to_string().parse::<Compression>().unwrap(), codec);
            let json = serde_json::to_string(&codec).unwrap();
            assert_eq!(json, format!("\"{codec}\""));
            assert_eq!(serde_json::from_str::<Compression>(&json).unwrap(), codec);
        }
        let message = "gzip".parse::<Compression>().unwrap_err().to_string();
        assert!(message.contains("`gzip`"), "{message}");
        assert!(message.contains("none") && message.contains("lz4") && message.contains("zstd"));
        assert_eq!(Compression::default(), Compression::None);
        assert_eq!(Compression::Lz4.attribute_bits(), 3);
        assert_eq!(Compression::Zstd.attribute_bits(), 4);
    }

    #[test]
    fn codecs_round_trip_and_reuse_state() {
        let records = sample_records();
        let mut compressors = Compressors::default();
        for codec in [Compression::None, Compression::Lz4, Compression::Zstd] {
            for round in 0..3 {
                let len = records.len() - round * 1000;
                let out = compressors.compress(codec, &records[..len]).unwrap();
                assert!(out[..BATCH_HEADER_LEN].iter().all(|&b| b == 0));
                let back = decompress(codec, &out[BATCH_HEADER_LEN..]).unwrap();
                assert_eq!(back, &records[..len], "{codec} round {round}");
            }
        }
    }

    #[test]
    fn lz4_frame_is_kafka_style() {
        let mut compressors = Compressors::default();
        let out = compressors.compress(Compression::Lz4, b"hello hello hello").unwrap();
        let frame = &out[BATCH_HEADER_LEN..];
        assert_eq!(frame[..4], 0x184D_2204u32.to_le_bytes());
        // FLG: version 01, independent blocks, no checksums, no content size.
        assert_eq!(frame[4], 0x60);
        // BD: 64 KiB blocks.
        assert_eq!(frame[5], 0x40);
    }

    #[test]
    fn lz4_frames_match_the_reference_encoder_header_and_store_incompressible_blocks() {
        use lz4_flex::frame::{BlockMode, BlockSize, FrameEncoder, FrameInfo};
        let info = FrameInfo::new()
            .block_size(BlockSize::Max64KB)
            .block_mode(BlockMode::Independent);
        let mut reference = FrameEncoder::with_frame_info(info, Vec::new());
        reference.write_all(b"x").unwrap();
        let reference = reference.finish().unwrap();
        assert_eq!(reference[..7], LZ4_FRAME_HEADER, "header checksum byte");

        // Noise does not compress: its blocks are stored, and still read back.
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let noise: Vec<u8> = (0..150_000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let mut compressors = Compressors::default();
        for input in [&noise[..], &noise[..LZ4_BLOCK], &[][..]] {
            let out = compressors.compress(Compression::Lz4, input).unwrap();
            let frame = &out[BATCH_HEADER_LEN..];
            assert_eq!(decompress(Compression::Lz4, frame).unwrap(), input);
            let mut reference = lz4_flex::frame::FrameDecoder::new(frame);
            let mut back = Vec::new();
            reference.read_to_end(&mut back).unwrap();
            assert_eq!(back, input);
        }
        let out = compressors.compress(Compression::Lz4, &noise[..1000]).unwrap();
        let size = u32::from_le_bytes(out[BATCH_HEADER_LEN + 7..BATCH_HEADER_LEN + 11].try_into().unwrap());
        assert_eq!(size, 1000 | LZ4_STORED);
    }

    #[test]
    fn decompression_is_bounded() {
        // zstd goes far beyond LZ4's ratio of 255, so only the 64 MiB floor stops it.
        let zeros = vec![0u8; MIN_DECOMPRESSED_LIMIT + 1];
        let mut compressors = Compressors::default();
        let out = compressors.compress(Compression::Zstd, &zeros).unwrap();
        let section = &out[BATCH_HEADER_LEN..];
        assert!(section.len() * MAX_COMPRESSION_RATIO < MIN_DECOMPRESSED_LIMIT);
        assert!(matches!(
            decompress(Compression::Zstd, section),
            Err(BatchError::DecompressedTooLarge {
                limit: MIN_DECOMPRESSED_LIMIT
            })
        ));
        assert_eq!(max_decompressed_len(1 << 20), 255 << 20);

        let out = compressors.compress(Compression::Lz4, &zeros[..5000]).unwrap();
        let frame = &out[BATCH_HEADER_LEN..];
        assert!(matches!(
            read_bounded(FrameDecoder::new(frame), 0, 4999),
            Err(BatchError::DecompressedTooLarge { limit: 4999 })
        ));
        assert_eq!(read_bounded(FrameDecoder::new(frame), 0, 5000).unwrap().len(), 5000);
    }

    #[test]
    fn garbage_is_a_decompress_error() {
        for codec in [Compression::Lz4, Compression::Zstd] {
            assert!(matches!(
                decompress(codec, b"definitely not a frame"),
                Err(BatchError::Decompress(_))
            ));
        }
    }
}
