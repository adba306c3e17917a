//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// `/work/shared` (found as `../../../shared` from this crate), or `None` with a note when it
/// is missing; panics when missing and the `CI` environment variable is set.
pub fn shared(sub: &str) -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared")
        .join(sub);
    if dir.exists() {
        return Some(dir);
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "shared test data {} is missing (required when CI is set)",
            dir.display()
        );
    }
    eprintln!("note: {} is missing; skipping", dir.display());
    None
}

/// The crate's committed fixtures.
pub fn fixture(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(sub)
}

/// The repository's `datasets/` directory.
pub fn datasets_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets")
}
