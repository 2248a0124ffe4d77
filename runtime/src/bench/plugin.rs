//! `plexus bench plugin`: what crossing the plugin boundary costs.
//!
//! The pipeline of `plexus bench pipeline` (datagen change events of `orders`, to the
//! log, to a sink that drops them) runs twice in this process: once into the built-in
//! `discard` sink, once into the `blackhole` sink of the `jsonl` example plugin, which
//! does exactly what `discard` does. Each run has a log of its own (a `sync` before it,
//! deleted after it, so neither pays for the other's write-back) and is timed from
//! the worker's start until the sink has read every record. The last line:
//!
//! ```text
//! plugin-bench: builtin_rec_s=X plugin_rec_s=X ratio=X
//! ```

use std::path::PathBuf;

use anyhow::{Context, bail};
use plexus_runtime::{PluginHost, Registry};

use super::pipeline::pipeline;

/// The library that offers `blackhole`, as cargo names it.
const PLUGIN_FILE: &str = if cfg!(target_os = "macos") {
    "libplexus_plugin_jsonl.dylib"
} else {
    "libplexus_plugin_jsonl.so"
};

#[derive(clap::Args)]
pub struct PluginBenchArgs {
    /// Change events to generate (deletes add a tombstone record each).
    #[arg(long, default_value_t = 5_000_000)]
    records: u64,
    /// Where the benchmark's logs live (emptied first).
    #[arg(long, default_value = "target/plugin-bench")]
    dir: PathBuf,
    /// The `jsonl` example plugin (default: `libplexus_plugin_jsonl.so` beside the
    /// plexus binary, where `cargo build --release -p plexus-plugin-jsonl` puts it).
    #[arg(long)]
    plugin: Option<PathBuf>,
}

pub async fn run(args: PluginBenchArgs) -> anyhow::Result<std::process::ExitCode> {
    let plugin = match args.plugin {
        Some(path) => path,
        None => std::env::current_exe()
            .context("find the plexus binary")?
            .with_file_name(PLUGIN_FILE),
    };
    if !plugin.is_file() {
        bail!(
            "plugin `{}` not found; build it with `cargo build --release -p plexus-plugin-jsonl` (beside a release plexus) or name it with --plugin",
            plugin.display()
        );
    }
    let host = PluginHost::new();
    let mut registry = Registry::builtin();
    let types = host
        .load_file(&plugin, &mut registry)
        .with_context(|| format!("load `{}`", plugin.display()))?;
    if !types.iter().any(|t| t == "blackhole") {
        bail!(
            "plugin `{}` offers no `blackhole` sink (it offers {})",
            plugin.display(),
            types.join(", ")
        );
    }
    eprintln!("plugin-bench: sink plugin {}", plugin.display());

    let _ = std::fs::remove_dir_all(&args.dir);
    // Each run's log is deleted right after it, so that the second run does not pay for
    // writing back the first one's pages.
    let builtin = pipeline(args.records, &args.dir.join("builtin"), "discard", registry.clone()).await?;
    println!("plugin-bench: sink=discard {}", builtin.line());
    let plugin = pipeline(args.records, &args.dir.join("plugin"), "blackhole", registry).await?;
    println!("plugin-bench: sink=blackhole(plugin) {}", plugin.line());
    if plugin.records != builtin.records {
        bail!(
            "the plugin sink read {} records, the built-in one {}",
            plugin.records,
            builtin.records
        );
    }
    let _ = std::fs::remove_dir_all(&args.dir);
    println!(
        "plugin-bench: builtin_rec_s={:.0} plugin_rec_s={:.0} ratio={:.3}",
        builtin.rec_s,
        plugin.rec_s,
        plugin.rec_s / builtin.rec_s
    );
    Ok(std::process::ExitCode::SUCCESS)
}
