//! The benchmark's PostgreSQL: a throw-away cluster, its tables, and the references the
//! source is measured against (`pg_recvlogical`, `COPY ... TO STDOUT`).

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use plexus_connector_postgres::client::ReplicationConnection;
use plexus_tests::TempPostgres;
use plexus_tests::postgres::{PASSWORD, USER, VERSION};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgSslMode};
use sqlx::{ConnectOptions, Connection};

use super::STALL;
use crate::bench::procfs::{Cpu, proc_stat};

/// The database of every table (the cluster is ours alone).
pub const DATABASE: &str = "postgres";

/// `postgresql.conf` lines added to the test cluster's.
const SERVER_SETTINGS: &[&str] = &[
    // A commit returns once its WAL is flushed, and the walsender is woken to send it
    // at once; with `off` the WAL writer's delay (200 ms) would dominate the latency.
    // (The cluster runs with `fsync = off`: a flush is a write.)
    "synchronous_commit = on",
    // No background work competing with the readers being measured; the benchmark
    // runs VACUUM ANALYZE and CHECKPOINT itself where they matter.
    "autovacuum = off",
    "max_wal_size = '8GB'",
    "checkpoint_timeout = '1h'",
];

/// Every SQL statement is bounded (the snapshot table's load is the longest).
const STATEMENT_TIMEOUT: &str = "15min";

/// The benchmark's cluster and an ordinary connection to it; stopped on drop.
pub struct Cluster {
    pg: TempPostgres,
    admin: PgConnection,
    /// For CPU accounting (None when it cannot be found).
    postmaster: Option<u32>,
}

impl Cluster {
    pub async fn start() -> anyhow::Result<Cluster> {
        let pg = tokio::task::spawn_blocking(|| TempPostgres::start_with(SERVER_SETTINGS))
            .await
            .context("starting PostgreSQL")??;
        let mut admin = connect(&pg).await?;
        let backend: (i32,) = sqlx::query_as("SELECT pg_backend_pid()")
            .fetch_one(&mut admin)
            .await
            .context("reading the backend's pid")?;
        let postmaster = proc_stat(&backend.0.to_string()).map(|s| s.ppid);
        Ok(Cluster { pg, admin, postmaster })
    }

    pub fn port(&self) -> u16 {
        self.pg.port()
    }

    /// A new connection (for work that runs beside the benchmark's own).
    pub async fn session(&self) -> anyhow::Result<PgConnection> {
        connect(&self.pg).await
    }

    pub async fn execute(&mut self, sql: &str) -> anyhow::Result<()> {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&mut self.admin)
            .await
            .with_context(|| format!("`{sql}` failed"))?;
        Ok(())
    }

    /// The current end of the WAL, as PostgreSQL writes LSNs.
    pub async fn wal_lsn(&mut self) -> anyhow::Result<String> {
        let lsn: (String,) = sqlx::query_as("SELECT pg_current_wal_lsn()::text")
            .fetch_one(&mut self.admin)
            .await
            .context("reading the WAL position")?;
        Ok(lsn.0)
    }

    /// The same realistic shape for every part: an order row with a 40-character note.
    pub async fn create_table(&mut self, table: &str) -> anyhow::Result<()> {
        self.execute(&format!(
            "CREATE TABLE {table} (id bigint PRIMARY KEY, customer_id integer NOT NULL, status text NOT NULL, \
             amount numeric(12,2) NOT NULL, created_at timestamptz NOT NULL, note text)"
        ))
        .await
    }

    /// Inserts rows `first..=last` in one transaction.
    pub async fn insert(&mut self, table: &str, first: u64, last: u64) -> anyhow::Result<()> {
        insert_rows(&mut self.admin, table, first, last).await
    }

    /// Waits until the slot exists: changes committed from then on reach it.
    pub async fn wait_slot(&mut self, slot: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + STALL;
        loop {
            let found: Option<(i32,)> = sqlx::query_as("SELECT 1 FROM pg_replication_slots WHERE slot_name = $1")
                .bind(slot)
                .fetch_optional(&mut self.admin)
                .await
                .context("looking for the source's slot")?;
            if found.is_some() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the source did not create its slot `{slot}` within {} s",
                    STALL.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Runs `pg_recvlogical` on `slot` from its position to `end`, writing nothing.
    pub async fn recvlogical(&self, slot: &str, publication: &str, end: &str, rows: u64) -> anyhow::Result<()> {
        let program = format!("/usr/lib/postgresql/{VERSION}/bin/pg_recvlogical");
        // The source's options (protocol 2 on PostgreSQL 14+, with streaming and
        // messages), so the server does the same work for both readers.
        let child = tokio::process::Command::new(&program)
            .args(["--host", "127.0.0.1", "--port"])
            .arg(self.port().to_string())
            .args(["--username", USER, "--dbname", DATABASE, "--slot", slot])
            .args([
                "--start",
                "--no-loop",
                "--fsync-interval",
                "0",
                "--file",
                "-",
                "--endpos",
                end,
            ])
            .args([
                "--option",
                "proto_version=2",
                "--option",
                "streaming=true",
                "--option",
                "messages=true",
            ])
            .arg("--option")
            .arg(format!("publication_names={publication}"))
            .env("PGPASSWORD", PASSWORD)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start `{program}`: run scripts/setup-postgres"))?;
        // Generous: at least 10,000 rows/s.
        let limit = Duration::from_secs(120 + rows / 10_000);
        let output = tokio::time::timeout(limit, child.wait_with_output())
            .await
            .with_context(|| format!("pg_recvlogical did not reach {end} within {} s", limit.as_secs()))?
            .context("waiting for pg_recvlogical")?;
        if !output.status.success() {
            bail!(
                "pg_recvlogical failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    }

    /// Reads `COPY table TO STDOUT` to its end, counting rows and bytes (streamed: the
    /// data is never held, so it does not count in the process's peak memory).
    /// Reads `COPY table TO STDOUT` with the client the source's snapshot reads with,
    /// counting its rows and bytes.
    pub async fn copy_out(&self, table: &str) -> anyhow::Result<(u64, u64)> {
        let options = plexus_connector_postgres::client::ConnectOptions {
            host: "127.0.0.1".to_owned(),
            port: self.pg.port(),
            user: USER.to_owned(),
            password: Some(PASSWORD.to_owned()),
            database: DATABASE.to_owned(),
            sslmode: plexus_connector_postgres::client::SslMode::Disable,
            ..Default::default()
        };
        let mut conn = ReplicationConnection::connect_sql(&options)
            .await
            .context("connecting for COPY")?;
        let (mut rows, mut bytes) = (0u64, 0u64);
        {
            let mut copy = conn
                .copy_out(&format!("COPY {table} TO STDOUT"))
                .await
                .context("starting COPY")?;
            loop {
                let more = tokio::time::timeout(
                    STALL,
                    copy.read(|row| {
                        bytes += row.len() as u64;
                        rows += 1;
                    }),
                )
                .await
                .with_context(|| format!("COPY sent nothing for {} s", STALL.as_secs()))?
                .context("reading COPY")?;
                if !more {
                    break;
                }
            }
        }
        let _ = conn.close().await;
        Ok((rows, bytes))
    }

    pub fn cpu(&self) -> Cpu {
        Cpu::now(self.postmaster)
    }

    /// Like [`Cluster::cpu`], once a server process that just lost its client has
    /// ended and been counted in the postmaster's children (outside any timing).
    pub async fn cpu_settled(&self) -> Cpu {
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.cpu()
    }

    /// Stops the server (blocking: on the blocking pool).
    pub async fn stop(self) {
        let Cluster { pg, admin, .. } = self;
        let _ = admin.close().await;
        let _ = tokio::task::spawn_blocking(move || drop(pg)).await;
    }
}

async fn connect(pg: &TempPostgres) -> anyhow::Result<PgConnection> {
    let options = PgConnectOptions::new()
        .host("127.0.0.1")
        .port(pg.port())
        .username(USER)
        .password(PASSWORD)
        .database(DATABASE)
        .ssl_mode(PgSslMode::Disable)
        // The source's session settings, so COPY writes values in the same text forms.
        .options([
            ("DateStyle", "ISO"),
            ("TimeZone", "UTC"),
            ("extra_float_digits", "3"),
            ("statement_timeout", STATEMENT_TIMEOUT),
        ])
        // Loading millions of rows is slow by design: no warning for each statement.
        .disable_statement_logging();
    tokio::time::timeout(Duration::from_secs(30), PgConnection::connect_with(&options))
        .await
        .context("connecting to PostgreSQL timed out")?
        .context("connecting to PostgreSQL")
}

/// Inserts rows `first..=last` in one transaction (on any connection).
pub async fn insert_rows(conn: &mut PgConnection, table: &str, first: u64, last: u64) -> anyhow::Result<()> {
    let sql = format!(
        "INSERT INTO {table} SELECT g, (g * 7919) % 100000, \
         (ARRAY['new', 'paid', 'shipped', 'delivered', 'cancelled'])[1 + g % 5], ((g * 37) % 10000000) / 100.0, \
         timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second', 'order ' || md5(g::text) || ' ok' \
         FROM generate_series($1::int8, $2::int8) g"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(first as i64)
        .bind(last as i64)
        .execute(conn)
        .await
        .with_context(|| format!("inserting rows {first} to {last} into {table}"))?;
    Ok(())
}
