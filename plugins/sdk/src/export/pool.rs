//! Large buffers the host fills (record batches for a sink) are kept for the next
//! batch instead of going back to the allocator: allocating and releasing a megabyte
//! per batch cost more than decoding it (fresh pages fault in, and the allocator
//! consolidates on every release).

use std::sync::Mutex;

/// Smaller buffers are not worth keeping.
const MIN_POOLED: usize = 64 << 10;
/// Buffers kept at most: a sink task holds one batch at a time.
const KEEP: usize = 4;

static POOL: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// An empty vector with room for `len` bytes, from the pool when there is one.
pub(super) fn take(len: usize) -> Vec<u8> {
    if len >= MIN_POOLED {
        let pooled = POOL.lock().ok().and_then(|mut pool| pool.pop());
        if let Some(mut vec) = pooled {
            vec.clear();
            vec.reserve(len);
            return vec;
        }
    }
    Vec::with_capacity(len)
}

/// A buffer that goes back to the pool when dropped.
pub(super) struct Recycled(pub Vec<u8>);

impl AsRef<[u8]> for Recycled {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Recycled {
    fn drop(&mut self) {
        if self.0.capacity() < MIN_POOLED {
            return;
        }
        if let Ok(mut pool) = POOL.lock()
            && pool.len() < KEEP
        {
            pool.push(std::mem::take(&mut self.0));
        }
    }
}
