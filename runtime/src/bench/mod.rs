//! `plexus bench ...`: end-to-end benchmarks in one process.
//!
//! - `pipeline`: datagen -> log -> a sink that discards (here);
//! - `postgres-cdc`: the `postgres-cdc` source against PostgreSQL's own readers
//!   ([`postgres`]);
//! - `parquet`: the `parquet` sink exporting from the log, against pyarrow and DuckDB
//!   converting the same events ([`parquet`]);
//! - `plugin`: the pipeline into the built-in `discard` sink against the same sink as
//!   a plugin ([`plugin`]);
//! - `sql`: the `sql` sink applying change events to PostgreSQL, against `COPY` of as
//!   many rows ([`sql`]).

mod parquet;
mod pipeline;
mod plugin;
mod postgres;
mod procfs;
mod sql;

use std::path::PathBuf;

use clap::Subcommand;
use plexus_runtime::Registry;

#[derive(Subcommand)]
pub enum Bench {
    /// datagen -> log -> a sink that discards, in one process.
    Pipeline {
        /// Change events to generate (deletes add a tombstone record each).
        #[arg(long, default_value_t = 5_000_000)]
        records: u64,
        /// Where the benchmark's log lives (emptied first).
        #[arg(long, default_value = "target/pipeline-bench")]
        dir: PathBuf,
    },
    /// The postgres-cdc source against PostgreSQL's own readers, on a throw-away cluster.
    ///
    /// Streaming from the WAL into the durable log (against pg_recvlogical reading the
    /// same WAL), commit-to-durable latency at a steady rate, and the snapshot of a large
    /// table (against COPY ... TO STDOUT of it). The last line sums it up.
    PostgresCdc(postgres::CdcBenchArgs),
    /// The parquet sink exporting datagen change events from the log to a local
    /// directory and to SeaweedFS, against pyarrow and DuckDB converting the same events
    /// from JSON lines. The last line sums it up.
    Parquet(parquet::ParquetBenchArgs),
    /// The pipeline of `bench pipeline` into the built-in discard sink and into the
    /// same sink built as a plugin (the jsonl example's `blackhole`), in one process.
    /// The last line sums it up.
    Plugin(plugin::PluginBenchArgs),
    /// The sql sink applying change events (70% inserts, 25% updates, 5% deletes) from
    /// the log to a throw-away PostgreSQL, against COPY of as many rows into an empty
    /// table of the same shape. The last line sums it up.
    Sql(sql::SqlBenchArgs),
}

pub async fn run(which: Bench) -> anyhow::Result<std::process::ExitCode> {
    match which {
        Bench::Pipeline { records, dir } => pipeline(records, &dir).await,
        Bench::PostgresCdc(args) => postgres::run(args).await,
        Bench::Parquet(args) => parquet::run(args).await,
        Bench::Plugin(args) => plugin::run(args).await,
        Bench::Sql(args) => sql::run(args).await,
    }
}

async fn pipeline(records: u64, dir: &std::path::Path) -> anyhow::Result<std::process::ExitCode> {
    let _ = std::fs::remove_dir_all(dir);
    let run = pipeline::pipeline(records, dir, "discard", Registry::builtin()).await?;
    let rss = procfs::peak_rss_mb().unwrap_or(f64::NAN);
    println!(
        "pipeline-bench: records={} rec_s={:.0} mb_s={:.1} peak_rss_mb={rss:.1}",
        run.records,
        run.rec_s,
        run.bytes as f64 / run.secs / 1e6
    );
    Ok(std::process::ExitCode::SUCCESS)
}
