//! The replication client against real PostgreSQL 15 clusters (plexus-tests): SCRAM,
//! replication commands, streaming a slot and acknowledging it, TLS in every sslmode,
//! and a cancel-safe `recv`. What the client reports is checked against `psql`, an
//! independent client, where the server can tell.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/tls.rs"]
mod tls;

use tls::CertificateAuthority;

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use plexus_connector_postgres::client::{
    ClientError, ConnectOptions, ReplicationConnection, ReplicationStream, SslMode,
};
use plexus_connector_postgres::pgoutput::{ColumnValue, Decoder, Message};
use plexus_connector_postgres::replication::{Lsn, PgTimestamp, ReplicationMessage, StandbyStatusUpdate};
use plexus_tests::TempPostgres;
use plexus_tests::postgres::{PASSWORD, USER};

/// No test may hang: each runs within this.
const TEST_TIMEOUT: Duration = Duration::from_secs(120);

#[tokio::test]
async fn scram_connection_identifies_the_system() {
    within(async {
        let pg = TempPostgres::start().unwrap();
        let mut options = options(&pg, SslMode::Disable);
        options.settings = vec![
            // A space in a value checks the escaping of the startup `options`.
            ("DateStyle".to_owned(), "ISO, DMY".to_owned()),
            ("TimeZone".to_owned(), "UTC".to_owned()),
        ];
        let mut conn = ReplicationConnection::connect(&options).await.unwrap();

        let rows = conn.simple_query("IDENTIFY_SYSTEM").await.unwrap();
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0].len(), 4, "systemid, timeline, xlogpos, dbname: {rows:?}");
        let systemid = rows[0][0].clone().unwrap();
        assert!(!systemid.is_empty());
        let expected = pg
            .psql("postgres", "SELECT system_identifier FROM pg_control_system()")
            .unwrap();
        assert_eq!(systemid, expected);
        assert_eq!(rows[0][3].as_deref(), Some("postgres"));
        rows[0][2].as_deref().unwrap().parse::<Lsn>().unwrap();

        assert!(conn.server_version_num() >= 150_000, "{}", conn.server_version_num());
        let version = pg.psql("postgres", "SHOW server_version_num").unwrap();
        assert_eq!(conn.server_version_num().to_string(), version);

        let pid = conn.simple_query("SELECT pg_backend_pid()").await.unwrap();
        assert_eq!(pid, vec![vec![Some(conn.backend_pid().to_string())]]);

        let session = conn
            .simple_query(
                "SELECT backend_type, application_name, current_setting('DateStyle'), current_setting('TimeZone') \
                 FROM pg_stat_activity WHERE pid = pg_backend_pid()",
            )
            .await
            .unwrap();
        let expected = ["walsender", "plexus-client-test", "ISO, DMY", "UTC"].map(|s| Some(s.to_owned()));
        assert_eq!(session, vec![expected.to_vec()]);
    })
    .await;
}

#[tokio::test]
async fn authentication_and_sql_errors_are_reported() {
    within(async {
        let pg = TempPostgres::start().unwrap();

        let mut wrong = options(&pg, SslMode::Disable);
        wrong.password = Some("not-the-password".to_owned());
        let error = ReplicationConnection::connect(&wrong).await.unwrap_err();
        assert_eq!(error.sqlstate(), Some("28P01"), "{error}");
        assert!(
            error
                .to_string()
                .contains("password authentication failed for user \"plexus\""),
            "{error}"
        );
        assert!(!error.is_transient());

        let mut missing = options(&pg, SslMode::Disable);
        missing.password = None;
        let error = ReplicationConnection::connect(&missing).await.unwrap_err();
        assert!(matches!(error, ClientError::Auth { .. }), "{error:?}");
        let message = error.to_string();
        assert!(
            message.contains("user `plexus`") && message.contains("set `password`"),
            "{message}"
        );

        let mut conn = ReplicationConnection::connect(&options(&pg, SslMode::Disable))
            .await
            .unwrap();
        let error = conn.simple_query("SELEC 1").await.unwrap_err();
        assert_eq!(error.sqlstate(), Some("42601"), "{error}");
        assert!(error.to_string().starts_with("ERROR 42601: syntax error"), "{error}");

        let error = conn.simple_query("DROP_REPLICATION_SLOT missing").await.unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("ERROR 42704: replication slot \"missing\" does not exist"),
            "{error}"
        );

        // The errors were drained to ReadyForQuery: the connection still answers.
        let rows = conn.simple_query("SELECT 1 + 1, NULL::text").await.unwrap();
        assert_eq!(rows, vec![vec![Some("2".to_owned()), None]]);
    })
    .await;
}

#[tokio::test]
async fn connect_timeout_bounds_a_silent_server() {
    within(async {
        // Accepts connections (the kernel's backlog does) and never answers.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let options = ConnectOptions {
            host: "127.0.0.1".to_owned(),
            port: silent.local_addr().unwrap().port(),
            connect_timeout: Duration::from_millis(300),
            ..ConnectOptions::default()
        };
        let started = Instant::now();
        let error = ReplicationConnection::connect(&options).await.unwrap_err();
        assert!(matches!(error, ClientError::Timeout { .. }), "{error:?}");
        assert!(error.is_transient());
        assert!(started.elapsed() < Duration::from_secs(5));
    })
    .await;
}

#[tokio::test]
async fn replication_streams_inserts_and_confirms_the_flush_position() {
    within(async {
        let pg = TempPostgres::start().unwrap();
        pg.psql(
            "postgres",
            "CREATE TABLE items (id int PRIMARY KEY, name text); CREATE PUBLICATION p FOR TABLE items",
        )
        .unwrap();
        let mut conn = ReplicationConnection::connect(&options(&pg, SslMode::Disable))
            .await
            .unwrap();

        let rows = conn
            .simple_query("CREATE_REPLICATION_SLOT s LOGICAL pgoutput")
            .await
            .unwrap();
        let [row] = rows.as_slice() else {
            panic!("one row expected: {rows:?}")
        };
        let [slot_name, consistent_point, snapshot_name, output_plugin] = row.as_slice() else {
            panic!("four columns expected: {row:?}")
        };
        assert_eq!(slot_name.as_deref(), Some("s"));
        let consistent_point: Lsn = consistent_point.as_deref().unwrap().parse().unwrap();
        assert!(snapshot_name.as_deref().is_some_and(|name| !name.is_empty()), "{row:?}");
        assert_eq!(output_plugin.as_deref(), Some("pgoutput"));
        assert_eq!(confirmed_flush(&pg, "s"), consistent_point);

        let mut stream = conn
            .start_replication("START_REPLICATION SLOT s LOGICAL 0/0 (proto_version '1', publication_names 'p')")
            .await
            .unwrap();
        pg.psql("postgres", "INSERT INTO items VALUES (1, 'one'), (2, NULL)")
            .unwrap();
        let (inserts, commit_end) = receive_transaction(&mut stream).await;
        let expected = vec![
            vec![Some("1".to_owned()), Some("one".to_owned())],
            vec![Some("2".to_owned()), None],
        ];
        assert_eq!(inserts, expected);
        assert!(commit_end > consistent_point);

        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
        let update = StandbyStatusUpdate {
            written: commit_end,
            flushed: commit_end,
            applied: commit_end,
            client_time: PgTimestamp::from_unix_millis(now),
            reply_requested: false,
        };
        stream.send(&update.to_bytes()).await.unwrap();
        let confirmed = poll(Duration::from_secs(10), || {
            let lsn = confirmed_flush(&pg, "s");
            (lsn >= commit_end).then_some(lsn)
        })
        .await;
        assert_eq!(
            confirmed,
            Some(commit_end),
            "confirmed_flush_lsn did not reach {commit_end}"
        );

        stream.finish().await.unwrap();
        let released = poll(Duration::from_secs(10), || {
            let active = pg
                .psql(
                    "postgres",
                    "SELECT active FROM pg_replication_slots WHERE slot_name = 's'",
                )
                .unwrap();
            (active == "f").then_some(())
        })
        .await;
        assert!(released.is_some(), "the slot is still active after finish");
        let log = pg.log();
        assert!(
            !log.contains("unexpected EOF"),
            "finish did not end the session politely:\n{log}"
        );
    })
    .await;
}

#[tokio::test]
async fn recv_is_cancel_safe() {
    within(async {
        let pg = TempPostgres::start().unwrap();
        pg.psql(
            "postgres",
            "CREATE TABLE big (id int PRIMARY KEY, payload text); CREATE PUBLICATION p FOR TABLE big",
        )
        .unwrap();
        let mut conn = ReplicationConnection::connect(&options(&pg, SslMode::Disable))
            .await
            .unwrap();
        conn.simple_query("CREATE_REPLICATION_SLOT s LOGICAL pgoutput")
            .await
            .unwrap();
        let mut stream = conn
            .start_replication("START_REPLICATION SLOT s LOGICAL 0/0 (proto_version '1', publication_names 'p')")
            .await
            .unwrap();

        // Mostly small rows, and every 50th row 420 kB: bigger than the read buffer, and
        // arriving over many reads, so that cancellations fall inside messages.
        const ROWS: usize = 500;
        pg.psql(
            "postgres",
            &format!(
                "INSERT INTO big SELECT i, repeat(lpad(i::text, 6, '0') || ':', \
                 CASE WHEN i % 50 = 0 THEN 60000 ELSE 5 END) FROM generate_series(1, {ROWS}) i"
            ),
        )
        .unwrap();

        let mut decoder = Decoder::new();
        let mut inserts = 0;
        let mut cancelled = 0;
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut committed = false;
        while !committed {
            assert!(
                Instant::now() < deadline,
                "only {inserts} of {ROWS} inserts within 30 s"
            );
            // A zero timeout cancels every recv that would wait: each time a message is
            // only partly there.
            let Ok(received) = tokio::time::timeout(Duration::ZERO, stream.recv()).await else {
                cancelled += 1;
                // Lets the runtime poll the socket's readiness before trying again.
                tokio::task::yield_now().await;
                continue;
            };
            let payload = received.unwrap().expect("the stream ended");
            let ReplicationMessage::XLogData(data) = ReplicationMessage::decode(payload).unwrap() else {
                continue;
            };
            match decoder.decode(data.data).unwrap() {
                Message::Insert(insert) => {
                    inserts += 1;
                    let id = inserts;
                    let repeat = if id % 50 == 0 { 60_000 } else { 5 };
                    let expected = [Some(id.to_string()), Some(format!("{id:06}:").repeat(repeat))];
                    let row = insert.new.columns.iter().map(text).collect::<Vec<_>>();
                    assert!(row == expected, "insert {id} is corrupted or out of order");
                }
                Message::Commit(_) => committed = true,
                _ => {}
            }
        }
        assert_eq!(inserts, ROWS);
        assert!(cancelled > 0, "no recv was cancelled: the test did not test anything");
        stream.finish().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn tls_modes_against_a_server_with_ssl() {
    within(async {
        let ca = CertificateAuthority::new("plexus test CA");
        let other_ca = CertificateAuthority::new("some other CA");
        let (cert, key) = ca.server_certificate(&["127.0.0.1", "localhost"]);
        let pg = TempPostgres::start_with_tls(&cert, &key, &[]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca_file = ca.write(dir.path(), "ca.pem");
        let other_ca_file = other_ca.write(dir.path(), "other-ca.pem");

        for sslmode in [SslMode::Prefer, SslMode::Require] {
            let mut conn = ReplicationConnection::connect(&options(&pg, sslmode)).await.unwrap();
            assert_eq!(ssl_in_use(&mut conn).await, "t", "sslmode={sslmode}");
        }
        let mut plain = ReplicationConnection::connect(&options(&pg, SslMode::Disable))
            .await
            .unwrap();
        assert_eq!(ssl_in_use(&mut plain).await, "f");

        for sslmode in [SslMode::Require, SslMode::VerifyCa, SslMode::VerifyFull] {
            let mut conn = ReplicationConnection::connect(&with_root(options(&pg, sslmode), &ca_file))
                .await
                .unwrap();
            assert_eq!(ssl_in_use(&mut conn).await, "t", "sslmode={sslmode}");
        }

        // A root certificate makes even `require` check the issuer, as in libpq.
        for sslmode in [SslMode::Require, SslMode::VerifyCa, SslMode::VerifyFull] {
            let error = ReplicationConnection::connect(&with_root(options(&pg, sslmode), &other_ca_file))
                .await
                .unwrap_err();
            let message = error.to_string();
            assert!(matches!(error, ClientError::Tls { .. }), "{error:?}");
            assert!(
                message.contains("unknown issuer") && message.contains("other-ca.pem"),
                "sslmode={sslmode}: {message}"
            );
        }
        let error = ReplicationConnection::connect(&options(&pg, SslMode::VerifyFull))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("unknown issuer") && error.contains("webpki roots"),
            "{error}"
        );
    })
    .await;
}

#[tokio::test]
async fn tls_verify_full_checks_the_host_name() {
    within(async {
        let ca = CertificateAuthority::new("plexus test CA");
        let (cert, key) = ca.server_certificate(&["db.plexus.test"]);
        let pg = TempPostgres::start_with_tls(&cert, &key, &[]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca_file = ca.write(dir.path(), "ca.pem");

        let error = ReplicationConnection::connect(&with_root(options(&pg, SslMode::VerifyFull), &ca_file))
            .await
            .unwrap_err();
        let message = error.to_string();
        assert!(matches!(error, ClientError::Tls { .. }), "{error:?}");
        assert!(
            message.contains("does not match the host name `127.0.0.1`")
                && message.contains("db.plexus.test")
                && message.contains("sslmode=verify-ca"),
            "{message}"
        );

        let mut conn = ReplicationConnection::connect(&with_root(options(&pg, SslMode::VerifyCa), &ca_file))
            .await
            .unwrap();
        assert_eq!(ssl_in_use(&mut conn).await, "t");
    })
    .await;
}

#[tokio::test]
async fn tls_modes_against_a_server_without_ssl() {
    within(async {
        let pg = TempPostgres::start().unwrap();
        for sslmode in [SslMode::Require, SslMode::VerifyFull] {
            let error = ReplicationConnection::connect(&options(&pg, sslmode))
                .await
                .unwrap_err();
            assert!(matches!(error, ClientError::TlsUnavailable { .. }), "{error:?}");
            let message = error.to_string();
            assert!(
                message.contains("does not accept SSL")
                    && message.contains(&format!("sslmode={sslmode} requires SSL"))
                    && message.contains("set sslmode=disable or sslmode=prefer")
                    && message.contains("enable ssl on the server"),
                "{message}"
            );
            assert!(!error.is_transient());
        }
        let mut conn = ReplicationConnection::connect(&options(&pg, SslMode::Prefer))
            .await
            .unwrap();
        assert_eq!(ssl_in_use(&mut conn).await, "f");
    })
    .await;
}

/// An ordinary session reads a COPY row by row, the same rows psql reads; a failing
/// COPY is a server error that leaves the session usable, and the session is no
/// walsender.
#[tokio::test]
async fn an_sql_session_reads_a_copy_like_psql() {
    within(async {
        let pg = TempPostgres::start().unwrap();
        pg.psql(
            "postgres",
            "CREATE TABLE copied (id int PRIMARY KEY, note text); \
             INSERT INTO copied SELECT g, CASE WHEN g % 7 = 0 THEN NULL ELSE repeat(E'x\\t', g % 50) END \
             FROM generate_series(1, 50000) g",
        )
        .unwrap();
        let mut conn = ReplicationConnection::connect_sql(&options(&pg, SslMode::Disable))
            .await
            .unwrap();
        let walsender = conn
            .simple_query("SELECT backend_type FROM pg_stat_activity WHERE pid = pg_backend_pid()")
            .await
            .unwrap();
        assert_eq!(walsender, vec![vec![Some("client backend".to_owned())]]);

        let mut text = Vec::new();
        let mut rows = 0;
        let mut reads = 0;
        {
            let mut copy = conn.copy_out("COPY copied TO STDOUT").await.unwrap();
            while copy
                .read(|row| {
                    assert_eq!(row.last(), Some(&b'\n'), "one row per message");
                    text.extend_from_slice(row);
                    rows += 1;
                })
                .await
                .unwrap()
            {
                reads += 1;
            }
            assert!(!copy.read(|_| panic!("a row after the end")).await.unwrap());
        }
        assert_eq!(rows, 50_000);
        assert!(reads > 1, "the rows came in {reads} reads");
        let psql = pg.psql("postgres", "COPY copied TO STDOUT").unwrap();
        assert!(String::from_utf8(text).unwrap().trim_end() == psql.trim_end());

        let missing = conn.copy_out("COPY no_such_table TO STDOUT").await.unwrap_err();
        assert_eq!(missing.sqlstate(), Some("42P01"), "{missing}");
        let mut copy = conn
            .copy_out("COPY (SELECT 1 / (3 - g) FROM generate_series(1, 5) g) TO STDOUT")
            .await
            .unwrap();
        let mut seen = 0;
        let failed = loop {
            match copy.read(|_| seen += 1).await {
                Ok(true) => {}
                Ok(false) => panic!("the division by zero was not reported"),
                Err(e) => break e,
            }
        };
        assert_eq!(failed.sqlstate(), Some("22012"), "{failed}");
        assert_eq!(seen, 2);
        let after = conn.simple_query("SELECT count(*) FROM copied").await.unwrap();
        assert_eq!(after, vec![vec![Some("50000".to_owned())]]);
        conn.close().await.unwrap();
    })
    .await;
}

/// Runs a test body within [`TEST_TIMEOUT`].
async fn within(test: impl Future<Output = ()>) {
    tokio::time::timeout(TEST_TIMEOUT, test)
        .await
        .unwrap_or_else(|_| panic!("the test did not finish within {TEST_TIMEOUT:?}"));
}

fn options(pg: &TempPostgres, sslmode: SslMode) -> ConnectOptions {
    ConnectOptions {
        host: "127.0.0.1".to_owned(),
        port: pg.port(),
        user: USER.to_owned(),
        password: Some(PASSWORD.to_owned()),
        database: "postgres".to_owned(),
        sslmode,
        sslrootcert: None,
        application_name: "plexus-client-test".to_owned(),
        connect_timeout: Duration::from_secs(30),
        settings: Vec::new(),
    }
}

fn with_root(options: ConnectOptions, ca_file: &Path) -> ConnectOptions {
    ConnectOptions {
        sslrootcert: Some(ca_file.to_owned()),
        ..options
    }
}

/// What the server says about this connection's encryption: `t` or `f`.
async fn ssl_in_use(conn: &mut ReplicationConnection) -> String {
    let rows = conn
        .simple_query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .await
        .unwrap();
    rows[0][0].clone().unwrap()
}

/// The slot's `confirmed_flush_lsn`, read with psql.
fn confirmed_flush(pg: &TempPostgres, slot: &str) -> Lsn {
    pg.psql(
        "postgres",
        &format!("SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '{slot}'"),
    )
    .unwrap()
    .parse()
    .unwrap()
}

/// Calls `check` every 100 ms until it gives a value or `limit` passes.
async fn poll<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Receives one transaction (within 30 s): its inserted rows as text, and the LSN after
/// its commit.
async fn receive_transaction(stream: &mut ReplicationStream) -> (Vec<Vec<Option<String>>>, Lsn) {
    let receive = async {
        let mut decoder = Decoder::new();
        let mut inserts = Vec::new();
        loop {
            let payload = stream.recv().await.unwrap().expect("the stream ended");
            let ReplicationMessage::XLogData(data) = ReplicationMessage::decode(payload).unwrap() else {
                continue;
            };
            // pgoutput's message tag follows the 25-byte XLogData header.
            match decoder.decode(data.data).unwrap() {
                Message::Insert(insert) => inserts.push(insert.new.columns.iter().map(text).collect()),
                Message::Commit(commit) => return (inserts, commit.end_lsn),
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), receive)
        .await
        .expect("no complete transaction within 30 s")
}

fn text(value: &ColumnValue) -> Option<String> {
    match value {
        ColumnValue::Null => None,
        ColumnValue::Text(bytes) => Some(String::from_utf8(bytes.to_vec()).unwrap()),
        other => panic!("a text value expected, got {other:?}"),
    }
}
