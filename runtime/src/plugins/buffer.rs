//! Buffers of a plugin's allocator as the host holds them: released through the
//! plugin when dropped, written without being zeroed first.
#![allow(unsafe_code)]

use std::mem::ManuallyDrop;

use plexus_plugin_sdk::abi::{self, PlexusBuffer};
use plexus_plugin_sdk::codec;

/// A buffer of a plugin's allocator, released through the plugin when dropped.
pub(super) struct OwnedBuffer {
    buffer: PlexusBuffer,
    free: abi::BufferFreeFn,
}

// SAFETY: plain bytes, released by a thread-safe function of the plugin.
unsafe impl Send for OwnedBuffer {}
// SAFETY: as above; shared only for reading.
unsafe impl Sync for OwnedBuffer {}

impl OwnedBuffer {
    pub(super) fn new(buffer: PlexusBuffer, free: abi::BufferFreeFn) -> OwnedBuffer {
        OwnedBuffer { buffer, free }
    }

    /// Writes into the buffer's room (from its start) and sets its length to what
    /// was written; writing past the room is an error, not an overflow.
    pub(super) fn fill(
        &mut self,
        write: impl FnOnce(&mut RawOut<'_>) -> Result<(), codec::CodecError>,
    ) -> Result<(), codec::CodecError> {
        let mut out = RawOut {
            ptr: self.buffer.ptr,
            cap: if self.buffer.ptr.is_null() { 0 } else { self.buffer.cap },
            pos: 0,
            _buffer: std::marker::PhantomData,
        };
        let result = write(&mut out);
        self.buffer.len = out.pos;
        result
    }

    /// Hands the buffer over (to the plugin, which releases it).
    pub(super) fn into_raw(self) -> PlexusBuffer {
        let mut this = ManuallyDrop::new(self);
        std::mem::replace(&mut this.buffer, PlexusBuffer::empty())
    }

    pub(super) fn text(&self) -> String {
        String::from_utf8_lossy(self.as_ref()).into_owned()
    }
}

/// Writes into the uninitialised room of an [`OwnedBuffer`].
pub(super) struct RawOut<'a> {
    ptr: *mut u8,
    cap: usize,
    pos: usize,
    _buffer: std::marker::PhantomData<&'a mut OwnedBuffer>,
}

impl codec::Out for RawOut<'_> {
    #[inline]
    fn put(&mut self, bytes: &[u8]) -> Result<(), codec::CodecError> {
        let end = self.pos.checked_add(bytes.len()).filter(|&end| end <= self.cap);
        let Some(end) = end else {
            return Err(codec::CodecError::Overflow {
                what: "bytes for the plugin",
                len: self.cap,
            });
        };
        // SAFETY: `pos..end` lies within the buffer's `cap` bytes of room, which only
        // this writer reaches while it lives (it borrows the buffer); the source is a
        // separate allocation of the host.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.add(self.pos), bytes.len()) };
        self.pos = end;
        Ok(())
    }
}

impl AsRef<[u8]> for OwnedBuffer {
    fn as_ref(&self) -> &[u8] {
        if self.buffer.ptr.is_null() {
            return &[];
        }
        // SAFETY: the plugin returns `len` initialised bytes, valid until released.
        unsafe { std::slice::from_raw_parts(self.buffer.ptr, self.buffer.len) }
    }
}

impl Drop for OwnedBuffer {
    fn drop(&mut self) {
        let buffer = std::mem::replace(&mut self.buffer, PlexusBuffer::empty());
        if !buffer.is_null() {
            // SAFETY: a buffer of this plugin's allocator, released once.
            unsafe { (self.free)(buffer) };
        }
    }
}
