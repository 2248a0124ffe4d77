//! Golden tests: every `tests/golden/<case>.expected` holds the exact output of loading
//! `tests/golden/<case>.toml` (or every `*.toml` of the folder `tests/golden/<case>/`,
//! in name order): the rendered problems, or `ok: <summary>` for a valid configuration.
//! File names are rendered relative to `tests/golden/`, so the output is stable.
//!
//! `UPDATE_GOLDEN=1 cargo test -p plexus-config --test golden` rewrites the expected files;
//! review the diff before committing it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use plexus_config::Config;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// `(name relative to the golden folder, text)` of a case's files.
fn case_sources(dir: &Path, case: &str) -> Vec<(PathBuf, String)> {
    let single = dir.join(format!("{case}.toml"));
    let files: Vec<PathBuf> = if single.is_file() {
        vec![PathBuf::from(format!("{case}.toml"))]
    } else {
        let mut names: Vec<PathBuf> = fs::read_dir(dir.join(case))
            .unwrap_or_else(|e| panic!("case `{case}` has neither {case}.toml nor a folder {case}/: {e}"))
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
            .map(|path| Path::new(case).join(path.file_name().unwrap()))
            .collect();
        names.sort();
        names
    };
    assert!(!files.is_empty(), "case `{case}` has no files");
    files
        .into_iter()
        .map(|name| (name.clone(), fs::read_to_string(dir.join(&name)).unwrap()))
        .collect()
}

fn render(sources: &[(PathBuf, String)]) -> String {
    match Config::load_str(sources, &common::registry(), &common::env) {
        Ok(config) => format!("ok: {}\n", config.summary()),
        Err(problems) => format!("{problems}\n"),
    }
}

#[test]
fn golden_cases() {
    let dir = golden_dir();
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut cases: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "expected"))
        .map(|path| path.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    cases.sort();
    // Every input has an expected output (a new case without one must not pass silently).
    for entry in fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        if (path.is_dir() || path.extension().is_some_and(|ext| ext == "toml")) && !cases.contains(&stem) {
            if update {
                cases.push(stem);
            } else {
                panic!("{} has no {stem}.expected", path.display());
            }
        }
    }
    assert!(
        cases.len() >= 14,
        "expected the full set of golden cases, found {cases:?}"
    );

    let mut failures = Vec::new();
    for case in &cases {
        let actual = render(&case_sources(&dir, case));
        let expected_path = dir.join(format!("{case}.expected"));
        if update {
            fs::write(&expected_path, &actual).unwrap();
            continue;
        }
        let expected = fs::read_to_string(&expected_path).unwrap();
        if actual != expected {
            failures.push(format!("--- {case}: expected\n{expected}--- {case}: actual\n{actual}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} golden case(s) differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
