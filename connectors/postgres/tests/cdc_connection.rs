//! The `postgres-cdc` source's connections against a real PostgreSQL 15: over TLS
//! (`verify-full` with the CA, `require`, and an unknown CA refused), and lost while
//! streaming (the walsender, then the ordinary connection terminated by the server)
//! while the test keeps writing: the source reports a retriable error, a new instance
//! resumes from the last committed position as the runtime would, and every change is
//! there exactly once, in commit order.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/tls.rs"]
mod tls;

use tls::CertificateAuthority;

// `count_ops` goes unused: the log here keeps events, not records.
#[allow(dead_code)]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Collector, Log, context, is_change, settings};
use plexus_config::{Settings, Value};
use plexus_connector::{ConnectorFactory, ErrorKind, Poll, Position, Source, SourceContext, SourceRecord};
use plexus_connector_postgres::PostgresCdcFactory;
use plexus_tests::{TempPostgres, Writer};
use serde_json::Value as Json;

/// The source's `application_name` on every connection (`plexus <connector>`).
const APPLICATION: &str = "plexus pgtest";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_source_runs_over_tls_and_refuses_an_unknown_ca() {
    let ca = CertificateAuthority::new("plexus test CA");
    let other_ca = CertificateAuthority::new("some other CA");
    let (cert, key) = ca.server_certificate(&["127.0.0.1", "localhost"]);
    let pg = TempPostgres::start_with_tls(&cert, &key, &[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write(dir.path(), "ca.pem");
    let other_ca_file = other_ca.write(dir.path(), "other-ca.pem");
    pg.psql(
        "postgres",
        "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 3) g;",
    )
    .unwrap();
    let ctx = context();

    let runs = [
        ("127.0.0.1", "verify-full", Some(&ca_file)),
        ("localhost", "verify-full", Some(&ca_file)),
        ("127.0.0.1", "require", None),
    ];
    for (round, (host, sslmode, root)) in runs.into_iter().enumerate() {
        let what = format!("host {host}, sslmode={sslmode}");
        let mut settings = settings(&pg, &["t"]);
        settings.insert("host", Value::String(host.into()));
        settings.insert("sslmode", Value::String(sslmode.into()));
        if let Some(root) = root {
            settings.insert("sslrootcert", Value::String(root.display().to_string()));
        }
        let mut source = PostgresCdcFactory::new().create_source(&settings).unwrap();
        source.start(&ctx, None).await.unwrap_or_else(|e| panic!("{what}: {e}"));
        let mut collected = Collector::new(Vec::<Event>::new());
        // Each run starts over (no position): a new slot, a full snapshot.
        let rows = 3 + round;
        collected
            .poll_until(source.as_mut(), &ctx, |c| c.log.len() == rows)
            .await;
        let ids: Vec<i64> = collected.log.iter().map(|e| e.id).collect();
        assert_eq!(ids, (1..=rows as i64).collect::<Vec<_>>(), "{what}");
        assert!(collected.log.iter().all(|e| e.op == "r"), "{what}");

        let id = rows as i64 + 1;
        pg.psql(
            "postgres",
            &format!("INSERT INTO t VALUES ({id}, 'over TLS'); UPDATE t SET v = 'updated' WHERE id = {id};"),
        )
        .unwrap();
        collected
            .poll_until(source.as_mut(), &ctx, |c| c.log.len() == rows + 2)
            .await;
        let streamed: Vec<(i64, &str, &str)> = collected.log[rows..]
            .iter()
            .map(|e| (e.id, e.op.as_str(), e.v.as_str()))
            .collect();
        assert_eq!(streamed, [(id, "c", "over TLS"), (id, "u", "updated")], "{what}");

        // Every connection of the source is encrypted: the walsender and the ordinary one.
        let ssl = pg
            .psql(
                "postgres",
                &format!(
                    "SELECT string_agg(a.backend_type || '=' || s.ssl, ',' ORDER BY a.backend_type) \
                     FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.application_name = '{APPLICATION}'"
                ),
            )
            .unwrap();
        assert_eq!(ssl, "client backend=true,walsender=true", "{what}");
        source.stop().await.unwrap();
    }

    // An unknown CA: refused at start, with an error that says why, and not retried:
    // the certificate will not change by itself (the replication client's TLS errors are
    // configuration errors too).
    let mut settings = settings(&pg, &["t"]);
    settings.insert("sslmode", Value::String("verify-full".into()));
    settings.insert("sslrootcert", Value::String(other_ca_file.display().to_string()));
    let mut source = PostgresCdcFactory::new().create_source(&settings).unwrap();
    let error = source.start(&ctx, None).await.unwrap_err();
    let message = error.to_string().to_lowercase();
    assert!(
        message.contains("tls") || message.contains("certificate"),
        "{error} ({:?})",
        error.kind()
    );
    assert_eq!(error.kind(), ErrorKind::Fatal, "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_connections_are_retriable_and_a_restart_loses_nothing() {
    let pg = Arc::new(TempPostgres::start().unwrap());
    pg.psql(
        "postgres",
        "CREATE TABLE t (id bigint PRIMARY KEY, v text NOT NULL);
         INSERT INTO t SELECT g, 'snapshot' FROM generate_series(1, 100) g;",
    )
    .unwrap();
    let factory = PostgresCdcFactory::new();
    let mut settings = settings(&pg, &["t"]);
    settings.insert("batch_size", Value::Integer(50));
    // A heartbeat at every housekeeping round (every few seconds): the ordinary
    // connection is in use all along.
    settings.insert(
        "heartbeat_interval",
        Value::Duration(plexus_config::Duration(Duration::from_secs(1))),
    );
    let ctx = context();
    let mut source = factory.create_source(&settings).unwrap();
    source.start(&ctx, None).await.unwrap();
    let mut collected = Collector::new(Vec::<Event>::new());
    collected
        .poll_until(source.as_mut(), &ctx, |c| c.log.len() == 100)
        .await;
    for id in 101..=110 {
        pg.psql("postgres", &format!("INSERT INTO t VALUES ({id}, 'before')"))
            .unwrap();
    }
    collected
        .poll_until(source.as_mut(), &ctx, |c| c.log.len() == 110)
        .await;

    // From now on the test writes all the time: transactions of an insert and an update.
    let writer = Writer::start(Arc::clone(&pg), 111, |id| {
        format!("BEGIN; INSERT INTO t VALUES ({id}, 'written'); UPDATE t SET v = 'updated' WHERE id = {id}; COMMIT;")
    });
    // The walsender: the replication stream breaks, the next polls fail.
    recover(
        &pg,
        "walsender",
        true,
        &factory,
        &settings,
        &ctx,
        &mut source,
        &mut collected,
    )
    .await;
    // The ordinary connection (heartbeats, catalog lookups, lag): the source notices,
    // with an error or by connecting again.
    recover(
        &pg,
        "client backend",
        false,
        &factory,
        &settings,
        &ctx,
        &mut source,
        &mut collected,
    )
    .await;

    // Stop writing, then read up to the last change written.
    let written = writer.stop().unwrap();
    assert!(written > 150, "the writer wrote only up to id {written}");
    let total = 110 + 2 * (written - 110) as usize;
    collected
        .poll_until(source.as_mut(), &ctx, |c| c.log.len() >= total)
        .await;
    source.stop().await.unwrap();

    // Every change once, in commit order: the snapshot, the ten inserts, then each
    // writer transaction's insert and update.
    let mut expected: Vec<(i64, &str)> = (1..=100).map(|id| (id, "r")).collect();
    expected.extend((101..=110).map(|id| (id, "c")));
    for id in 111..=written {
        expected.extend([(id as i64, "c"), (id as i64, "u")]);
    }
    let got: Vec<(i64, &str)> = collected.log.iter().map(|e| (e.id, e.op.as_str())).collect();
    if got != expected {
        let diverge = got
            .iter()
            .zip(&expected)
            .position(|(g, e)| g != e)
            .unwrap_or(got.len().min(expected.len()));
        panic!(
            "{} events, {} expected; first difference at {diverge}: {:?} versus {:?}",
            got.len(),
            expected.len(),
            &got[diverge.saturating_sub(2)..(diverge + 3).min(got.len())],
            &expected[diverge.saturating_sub(2)..(diverge + 3).min(expected.len())],
        );
    }
    let stream: Vec<(u64, u64)> = collected.log[100..].iter().map(|e| e.at).collect();
    assert!(
        stream.windows(2).all(|w| w[0] < w[1]),
        "(commit_lsn, seq) strictly increase"
    );
    let values_ok = collected.log[100..].iter().all(|e| {
        e.v == if e.op == "u" {
            "updated"
        } else if e.id <= 110 {
            "before"
        } else {
            "written"
        }
    });
    assert!(values_ok, "the values are the ones written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_between_the_snapshot_and_the_first_change_reads_no_row_twice() {
    let pg = TempPostgres::start().unwrap();
    pg.psql(
        "postgres",
        "CREATE TABLE t (id bigint PRIMARY KEY, v text NOT NULL);
         INSERT INTO t SELECT g, 'snapshot' FROM generate_series(1, 100) g;",
    )
    .unwrap();
    let factory = PostgresCdcFactory::new();
    let settings = settings(&pg, &["t"]);
    let ctx = context();
    let mut source = factory.create_source(&settings).unwrap();
    source.start(&ctx, None).await.unwrap();
    let mut collected = Collector::new(Vec::<Event>::new());
    collected
        .poll_until(source.as_mut(), &ctx, |c| c.log.len() == 100)
        .await;
    // The snapshot is read and the source streams: the log's last position says the
    // snapshot is complete. Rows are written, and the source stops (the walsender is
    // lost, the worker restarts, or stops) before it hands out a batch of them.
    collected
        .poll_until(source.as_mut(), &ctx, |c| {
            c.last
                .as_ref()
                .is_some_and(|p| factory.position_to_json(p).get("lsn").is_some())
        })
        .await;
    assert_eq!(collected.log.len(), 100, "no change yet");
    pg.psql(
        "postgres",
        "INSERT INTO t SELECT g, 'written' FROM generate_series(101, 105) g; UPDATE t SET v = 'updated' WHERE id = 103;",
    )
    .unwrap();
    source.stop().await.unwrap();

    let mut source = factory.create_source(&settings).unwrap();
    start_with_retries(source.as_mut(), &ctx, collected.last.clone()).await;
    collected
        .poll_until(source.as_mut(), &ctx, |c| c.log.iter().any(|e| e.op == "u"))
        .await;
    // Nothing more: a poll waits a moment for changes before it reports idle.
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Poll::Batch(batch) = source.poll(&ctx).await.unwrap() {
        assert!(Instant::now() < deadline, "the source never became idle");
        let more: Vec<_> = batch.records.iter().filter(|r| is_change(r)).collect();
        assert!(more.is_empty(), "more records: {more:?}");
    }
    source.stop().await.unwrap();
    let after: Vec<(i64, &str)> = collected.log[100..].iter().map(|e| (e.id, e.op.as_str())).collect();
    assert_eq!(
        after,
        [(101, "c"), (102, "c"), (103, "c"), (104, "c"), (105, "c"), (103, "u")],
        "rows written after the snapshot's consistent point come from the stream, once"
    );
}

/// Terminates the source's connection of `backend_type` after some changes streamed,
/// then polls, restarting the source at the last committed position on a retriable error
/// as the runtime does, until the source has both of its connections again (new ones)
/// and changes flow. `must_fail`: the polls must report the loss.
#[allow(clippy::too_many_arguments)]
async fn recover(
    pg: &TempPostgres,
    backend_type: &str,
    must_fail: bool,
    factory: &PostgresCdcFactory,
    settings: &Settings,
    ctx: &SourceContext,
    source: &mut Box<dyn Source>,
    collected: &mut Collector<Vec<Event>>,
) {
    let seen = collected.log.len();
    collected
        .poll_until(source.as_mut(), ctx, |c| c.log.len() >= seen + 20)
        .await;
    let pids = |filter: &str| {
        pg.psql(
            "postgres",
            &format!(
                "SELECT string_agg(pid::text, ',') FROM pg_stat_activity \
                 WHERE application_name = '{APPLICATION}' AND {filter}"
            ),
        )
        .unwrap()
    };
    let killed = pids(&format!("backend_type = '{backend_type}'"));
    assert!(
        !killed.is_empty() && !killed.contains(','),
        "one {backend_type}: {killed:?}"
    );
    let terminated = pg
        .psql("postgres", &format!("SELECT pg_terminate_backend({killed})"))
        .unwrap();
    assert_eq!(terminated, "t");

    let deadline = Instant::now() + Duration::from_secs(30);
    let mut failed = false;
    loop {
        assert!(
            Instant::now() < deadline,
            "no recovery after terminating the {backend_type} (pid {killed}); failed: {failed}"
        );
        let seen = collected.log.len();
        let result = collected
            .poll_within(source.as_mut(), ctx, Duration::from_secs(30), |c| {
                c.log.len() >= seen + 10
            })
            .await;
        if let Err(error) = result {
            assert!(error.is_retriable(), "{error} ({:?})", error.kind());
            failed = true;
            source.stop().await.unwrap();
            *source = factory.create_source(settings).unwrap();
            start_with_retries(source.as_mut(), ctx, collected.last.clone()).await;
            continue;
        }
        let types = pg
            .psql(
                "postgres",
                &format!(
                    "SELECT string_agg(backend_type, ',' ORDER BY backend_type) FROM pg_stat_activity \
                     WHERE application_name = '{APPLICATION}' AND pid <> {killed}"
                ),
            )
            .unwrap();
        if types == "client backend,walsender" && (failed || !must_fail) {
            return;
        }
    }
}

/// A change of table `t`, as the "log" holds it.
#[derive(Debug)]
struct Event {
    id: i64,
    op: String,
    v: String,
    /// `(commit_lsn, seq)` of a streamed change.
    at: (u64, u64),
}

/// The table's events in order.
impl Log for Vec<Event> {
    fn append(&mut self, records: Vec<SourceRecord>) {
        for record in records.iter().filter(|r| is_change(r)) {
            // Tombstones: none here (no deletes).
            let value: Json = serde_json::from_slice(record.value.as_ref().unwrap()).unwrap();
            let source = &value["source"];
            self.push(Event {
                id: value["after"]["id"].as_i64().unwrap(),
                op: value["op"].as_str().unwrap().to_owned(),
                v: value["after"]["v"].as_str().unwrap().to_owned(),
                at: (
                    source["commit_lsn"].as_u64().unwrap_or(0),
                    source["seq"].as_u64().unwrap_or(0),
                ),
            });
        }
    }

    fn progress(&self) -> String {
        format!("{} events", self.len())
    }
}

/// Starts `source` at `position`, retrying retriable errors with a short backoff for up
/// to 30 s, as the runtime does (the server may take a moment to release the slot).
async fn start_with_retries(source: &mut dyn Source, ctx: &SourceContext, position: Option<Position>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut backoff = Duration::from_millis(50);
    loop {
        match source.start(ctx, position.clone()).await {
            Ok(()) => return,
            Err(e) if e.is_retriable() && Instant::now() < deadline => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            Err(e) => panic!("the restart failed: {e} ({:?})", e.kind()),
        }
    }
}
