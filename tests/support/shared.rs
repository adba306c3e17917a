//! The `../shared` folder (fixtures, weights, data) for the integration tests: one helper for every crate of
//! the workspace, each test target including this file (`#[path = ".../tests/support/shared.rs"] mod shared;`).
//!
//! `../shared` sits beside the repository root (the folder that holds `Cargo.lock`). Under CI (`CI` set) a
//! missing file or folder is an error: the test panics. Elsewhere the test is skipped: a note is written
//! straight to the terminal (libtest's capture hides `eprintln!` of passing tests), and when the test binary
//! exits it prints how many tests it skipped and which, under libtest's `test result:` line.
#![allow(dead_code)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The tests of this binary that skipped, in order.
static SKIPPED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// The repository root: the nearest folder above this test's crate that holds `Cargo.lock`.
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .find(|dir| dir.join("Cargo.lock").is_file())
        .unwrap_or(manifest)
        .to_path_buf()
}

/// The `../shared` folder beside the repository root (whether or not it exists).
pub fn shared_root() -> PathBuf {
    repo_root().join("../shared")
}

/// `../shared/<sub>` (a file or folder) if it exists. If not: a panic under CI, else `None` after the skip is
/// noted and counted (the caller returns, and the test passes as skipped).
pub fn shared(sub: &str) -> Option<PathBuf> {
    let path = shared_root().join(sub);
    if path.exists() {
        return Some(path);
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "{} is missing: under CI the shared fixtures must sit beside the repository (../shared)",
            path.display()
        );
    }
    skip(&format!("{} is missing", path.display()));
    None
}

/// Note and count a skipped test (named after its thread, as libtest names them).
fn skip(why: &str) {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test").to_string();
    // Straight to the file descriptor: `eprintln!` would be captured and dropped for a passing test.
    let _ = writeln!(std::io::stderr(), "note: skipping {test}: {why}");
    let mut skipped = SKIPPED.lock().unwrap_or_else(|e| e.into_inner());
    if skipped.is_empty() {
        // SAFETY: `atexit` registers a plain `extern "C"` function that takes no arguments; it is called once,
        // at process exit, after libtest has printed its summary.
        unsafe {
            atexit(print_skipped);
        }
    }
    skipped.push(test);
}

extern "C" {
    fn atexit(callback: extern "C" fn()) -> std::ffi::c_int;
}

/// Print the skip count of this binary (at exit, under libtest's summary).
extern "C" fn print_skipped() {
    let skipped = SKIPPED.lock().unwrap_or_else(|e| e.into_inner());
    if !skipped.is_empty() {
        let _ = writeln!(
            std::io::stderr(),
            "skipped {} test(s) without ../shared (set CI=1 to make that an error): {}",
            skipped.len(),
            skipped.join(", ")
        );
    }
}
