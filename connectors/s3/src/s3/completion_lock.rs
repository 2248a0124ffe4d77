//! Completions of one key, one at a time within this process.
//!
//! SeaweedFS (4.48, the server the tests run) evaluates `If-None-Match: *` on
//! CompleteMultipartUpload *before* writing the object, not atomically with it: two
//! completions of one key racing each other can both pass the check and both succeed,
//! the second replacing the first (`weed/s3api/filer_multipart.go`,
//! `completeMultipartUpload`: `checkConditionalHeaders`, then `completionBody` with no
//! lock held when the object has a ring owner). Its PutObject is atomic (the condition
//! rides in the filer transaction), and so are both on AWS S3.
//!
//! Serialising the conditional writes of a key inside the process closes that window
//! for writers in one process (a task and the zombie it replaced, two stores on one
//! bucket), whatever the server. Writers in different processes still rely on the
//! server alone.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use tokio::sync::OwnedMutexGuard;

type Slot = Arc<tokio::sync::Mutex<()>>;

/// One lock per object in use, shared by every store of the process.
static HELD: LazyLock<Mutex<HashMap<String, Slot>>> = LazyLock::new(|| Mutex::new(HashMap::new()));

/// Held while a conditional write of one object is in flight.
#[derive(Debug)]
pub(super) struct CompletionLock {
    name: String,
    guard: Option<OwnedMutexGuard<()>>,
}

impl CompletionLock {
    /// Waits until no other conditional write of `key` in `bucket` at `endpoint` is in
    /// flight in this process.
    pub(super) async fn acquire(endpoint: &str, bucket: &str, key: &str) -> CompletionLock {
        let name = format!("{endpoint}\n{bucket}\n{key}");
        let slot = {
            let mut held = HELD.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(held.entry(name.clone()).or_default())
        };
        let guard = slot.lock_owned().await;
        CompletionLock {
            name,
            guard: Some(guard),
        }
    }
}

impl Drop for CompletionLock {
    fn drop(&mut self) {
        // Release first, then forget the slot if nobody else holds or waits for it
        // (each of them holds a clone of the Arc), so the map stays as small as the
        // writes in flight.
        drop(self.guard.take());
        let mut held = HELD.lock().unwrap_or_else(PoisonError::into_inner);
        if held.get(&self.name).is_some_and(|slot| Arc::strong_count(slot) == 1) {
            held.remove(&self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn one_writer_per_key_and_no_slot_left_behind() {
        let first = CompletionLock::acquire("e", "b", "k").await;
        let other_key = CompletionLock::acquire("e", "b", "other").await;
        let waiting = tokio::spawn(CompletionLock::acquire("e", "b", "k"));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "a second writer of the key got the lock");
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(5), waiting).await;
        assert!(matches!(second, Ok(Ok(_))), "the waiting writer never got the lock");
        drop(second);
        drop(other_key);
        let held = HELD.lock().unwrap_or_else(PoisonError::into_inner);
        assert!(
            !held.keys().any(|name| name.starts_with("e\nb\n")),
            "slots left: {}",
            held.len()
        );
    }
}
