//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

#[path = "../../../../tests/support/shared.rs"]
mod support;

/// `../shared/<sub>`, or `None` after a counted skip note; a panic under CI (see `tests/support/shared.rs`).
pub use support::shared;

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
