//! A steady writer: numbered transactions committed one after another through `psql`
//! from a thread of its own, while a test kills or disconnects what reads them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::TempPostgres;

/// Commits `sql(id)` for `id` = `first`, `first + 1`, ... (5,000 at most) until stopped.
#[derive(Debug)]
pub struct Writer {
    stop: Arc<AtomicBool>,
    last: Arc<AtomicU64>,
    failed: Arc<Mutex<Option<String>>>,
    thread: std::thread::JoinHandle<()>,
}

impl Writer {
    pub fn start(pg: Arc<TempPostgres>, first: u64, sql: impl Fn(u64) -> String + Send + 'static) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let last = Arc::new(AtomicU64::new(first.saturating_sub(1)));
        let failed = Arc::new(Mutex::new(None));
        let thread = std::thread::spawn({
            let (stop, last, failed) = (Arc::clone(&stop), Arc::clone(&last), Arc::clone(&failed));
            move || {
                // Bounded, in case the test fails to stop it.
                for id in first..first + 5000 {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    if let Err(e) = pg.psql("postgres", &sql(id)) {
                        if let Ok(mut failed) = failed.lock() {
                            *failed = Some(format!("transaction {id}: {e}"));
                        }
                        return;
                    }
                    last.store(id, Ordering::SeqCst);
                }
            }
        });
        Writer {
            stop,
            last,
            failed,
            thread,
        }
    }

    /// Waits (30 s at most) until `count` more transactions are committed.
    pub fn wait_for(&self, count: u64) -> Result<(), String> {
        let target = self.last.load(Ordering::SeqCst) + count;
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.last.load(Ordering::SeqCst) < target {
            self.check()?;
            if Instant::now() >= deadline {
                return Err(format!(
                    "the writer is stuck at id {}",
                    self.last.load(Ordering::SeqCst)
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Stops writing; the last id committed.
    pub fn stop(self) -> Result<u64, String> {
        self.stop.store(true, Ordering::SeqCst);
        let Writer {
            last, failed, thread, ..
        } = self;
        thread.join().map_err(|_| "the writer thread panicked".to_owned())?;
        failed_with(&failed)?;
        Ok(last.load(Ordering::SeqCst))
    }

    fn check(&self) -> Result<(), String> {
        failed_with(&self.failed)
    }
}

fn failed_with(failed: &Mutex<Option<String>>) -> Result<(), String> {
    match failed.lock().map(|f| f.clone()) {
        Ok(None) => Ok(()),
        Ok(Some(e)) => Err(e),
        Err(_) => Err("the writer's error lock is poisoned".to_owned()),
    }
}
