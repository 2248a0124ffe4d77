//! The tools installed from PyPI by `scripts/setup-python`: a Python with pyarrow and
//! DuckDB (independent readers of the Parquet files plexus writes), and SeaweedFS's `weed`.

use std::path::PathBuf;

/// The virtual environment `scripts/setup-python` fills: `PLEXUS_VENV`, else
/// `~/.cache/plexus/venv`.
pub fn venv() -> PathBuf {
    if let Some(dir) = std::env::var_os("PLEXUS_VENV") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".cache/plexus/venv")
}

/// The environment's Python (with pyarrow and DuckDB), or an error that says what to run.
pub fn python() -> Result<PathBuf, String> {
    tool("python")
}

/// SeaweedFS's `weed` binary, or an error that says what to run.
pub fn weed() -> Result<PathBuf, String> {
    tool("weed")
}

fn tool(name: &str) -> Result<PathBuf, String> {
    let path = venv().join("bin").join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "`{}` is missing: run `bash scripts/setup-python` (scripts/test does)",
            path.display()
        ))
    }
}
