//! The replication stream, read by a task of its own so the server is answered
//! (keepalive replies, status updates) even while the runtime holds the source back.

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::client::{ClientError, ReplicationStream};
use crate::replication::{Lsn, PgTimestamp, StandbyStatusUpdate};

/// Messages waiting for the source: bounded, so a slow log slows the server's sending.
const QUEUE: usize = 4096;

#[derive(Debug)]
pub struct WalStream {
    messages: mpsc::Receiver<Result<Bytes, ClientError>>,
    flushed: watch::Sender<Lsn>,
    task: JoinHandle<Option<ReplicationStream>>,
}

impl WalStream {
    /// Starts reading; `flushed` is what the server already knows as flushed.
    pub fn start(stream: ReplicationStream, flushed: Lsn, status_interval: std::time::Duration) -> WalStream {
        let (tx, messages) = mpsc::channel(QUEUE);
        let (flushed_tx, flushed_rx) = watch::channel(flushed);
        let task = tokio::spawn(pump(stream, tx, flushed_rx, status_interval));
        WalStream {
            messages,
            flushed: flushed_tx,
            task,
        }
    }

    /// The next CopyData payload; `None` once the reader has stopped (after an error it
    /// has passed on). Cancel-safe.
    pub async fn recv(&mut self) -> Option<Result<Bytes, ClientError>> {
        self.messages.recv().await
    }

    /// A payload if one is waiting.
    pub fn try_recv(&mut self) -> Option<Result<Bytes, ClientError>> {
        self.messages.try_recv().ok()
    }

    /// Everything up to `lsn` is durable: tell the server (never backwards).
    pub fn acknowledge(&self, lsn: Lsn) {
        self.flushed.send_if_modified(|current| {
            if lsn > *current {
                *current = lsn;
                true
            } else {
                false
            }
        });
    }

    /// Ends replication politely (CopyDone, Terminate), after a last status update.
    pub async fn close(self) {
        let WalStream {
            messages,
            flushed,
            task,
        } = self;
        drop(messages);
        let last = *flushed.borrow();
        drop(flushed);
        if let Ok(Some(mut stream)) = task.await {
            let _ = stream.send(&status(last)).await;
            let _ = stream.finish().await;
        }
    }
}

fn status(flushed: Lsn) -> Bytes {
    StandbyStatusUpdate {
        written: flushed,
        flushed,
        applied: flushed,
        client_time: PgTimestamp::from_unix_millis(now_ms()),
        reply_requested: false,
    }
    .to_bytes()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Reads until the source goes away (returning the stream, to be closed politely) or
/// the connection fails (passing the error on).
async fn pump(
    mut stream: ReplicationStream,
    tx: mpsc::Sender<Result<Bytes, ClientError>>,
    mut flushed: watch::Receiver<Lsn>,
    interval: std::time::Duration,
) -> Option<ReplicationStream> {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let mut report = false;
        let permit = tokio::select! {
            permit = tx.reserve() => match permit {
                Ok(permit) => Some(permit),
                Err(_) => return Some(stream),
            },
            _ = tick.tick() => { report = true; None }
            changed = flushed.changed() => {
                if changed.is_err() {
                    return Some(stream);
                }
                report = true;
                None
            }
        };
        if let Some(permit) = permit {
            tokio::select! {
                message = stream.recv() => match message {
                    Ok(Some(bytes)) => {
                        // A keepalive asking for an answer: give it now, or the server
                        // ends the connection after wal_sender_timeout.
                        report = bytes.first() == Some(&b'k') && bytes.last() == Some(&1);
                        permit.send(Ok(bytes));
                    }
                    Ok(None) => {
                        permit.send(Err(ClientError::Protocol("the server ended replication".into())));
                        return None;
                    }
                    Err(e) => {
                        permit.send(Err(e));
                        return None;
                    }
                },
                _ = tick.tick() => report = true,
                changed = flushed.changed() => {
                    if changed.is_err() {
                        return Some(stream);
                    }
                    report = true;
                }
            }
        }
        if report {
            let lsn = *flushed.borrow_and_update();
            if let Err(e) = stream.send(&status(lsn)).await {
                let _ = tx.send(Err(e)).await;
                return None;
            }
        }
    }
}
