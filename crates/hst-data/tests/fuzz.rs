//! A bounded mutation fuzzer over the readers of user files: manifests (CSV, JSON lines), partial-label
//! CSVs, GloVe text (plain and gzipped) and `.npy` word vectors. Each case starts from a valid file, applies
//! a few seeded mutations (flipped, inserted, deleted and duplicated bytes, truncation, hostile tokens) and
//! reads it: the reader must return `Ok` or an error, never panic. `HST_FUZZ_CASES` (default 300 per
//! reader) sets the count; a failing case prints its seed, so it reproduces.

use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use hst_data::datasets::manifest::read_manifest;
use hst_data::label_file::read_label_csv;
use hst_data::{ClassEmbeddings, WordVectors};
use rand_mt::Mt64;

const TOKENS: &[&[u8]] = &[
    b",",
    b"\n",
    b"\r\n",
    b"\"",
    b"-1",
    b"0",
    b"1",
    b"2",
    b"-",
    b"nan",
    b"inf",
    b"1e999",
    b"18446744073709551616",
    b"\xff\xfe",
    b"\xc3",
    b"{",
    b"}",
    b"[",
    b"]",
    b":",
    b" ",
    b"\0",
    b"\x93NUMPY",
    b"'shape': (",
    b"<f8",
    b">f4",
    b"True",
];

fn cases() -> u64 {
    std::env::var("HST_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

fn mutate(seed_input: &[u8], rng: &mut Mt64) -> Vec<u8> {
    let mut bytes = seed_input.to_vec();
    let n = 1 + rng.next_u64() % 4;
    for _ in 0..n {
        let len = bytes.len().max(1) as u64;
        let at = (rng.next_u64() % len) as usize;
        match rng.next_u64() % 6 {
            0 if !bytes.is_empty() => {
                let i = at.min(bytes.len() - 1);
                bytes[i] ^= 1 << (rng.next_u64() % 8);
            }
            1 => {
                let token = TOKENS[(rng.next_u64() % TOKENS.len() as u64) as usize];
                let at = at.min(bytes.len());
                bytes.splice(at..at, token.iter().copied());
            }
            2 if !bytes.is_empty() => {
                let end = (at + 1 + (rng.next_u64() % 16) as usize).min(bytes.len());
                bytes.drain(at.min(bytes.len())..end);
            }
            3 => bytes.truncate(at),
            4 if !bytes.is_empty() => {
                let end = (at + 1 + (rng.next_u64() % 64) as usize).min(bytes.len());
                let chunk = bytes[at.min(bytes.len())..end].to_vec();
                bytes.splice(at..at, chunk);
            }
            _ => {
                let at = at.min(bytes.len());
                bytes.insert(at, (rng.next_u64() % 256) as u8);
            }
        }
    }
    bytes
}

/// Writes each mutation of `valid` to `file` and runs `read` on it; panics (the test fails) naming the
/// seed of the first case whose reader panicked.
fn fuzz(name: &str, valid: &[u8], file: &Path, read: impl Fn(&Path)) {
    read(file_with(file, valid)); // the valid input reads
    for seed in 0..cases() {
        let mut rng = Mt64::new(seed ^ 0x4853_5446_555a_5a00);
        let input = mutate(valid, &mut rng);
        let outcome = catch_unwind(AssertUnwindSafe(|| read(file_with(file, &input))));
        assert!(
            outcome.is_ok(),
            "{name}: the reader panicked on case {seed} ({} bytes: {:?})",
            input.len(),
            String::from_utf8_lossy(&input)
        );
    }
}

fn file_with<'a>(path: &'a Path, bytes: &[u8]) -> &'a Path {
    std::fs::write(path, bytes).unwrap();
    path
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

#[test]
fn manifests_never_panic() {
    let tmp = tempfile::tempdir().unwrap();
    for name in ["a.png", "b.png", "c.png"] {
        image::RgbImage::new(4, 4)
            .save(tmp.path().join(name))
            .unwrap();
    }
    let csv = b"image,cat,dog,bird\na.png,1,-1,0\nb.png,0,1,1\nc.png,-1,-1,1\n";
    fuzz("manifest.csv", csv, &tmp.path().join("m.csv"), |p| {
        let _ = read_manifest(p, None);
    });
    let jsonl = br#"{"classes": ["cat", "dog", "bird"]}
{"image": "a.png", "labels": {"cat": 1, "dog": -1}}
{"image": "b.png", "labels": {"bird": 1}}
"#;
    fuzz("manifest.jsonl", jsonl, &tmp.path().join("m.jsonl"), |p| {
        let _ = read_manifest(p, None);
    });
}

#[test]
fn label_files_never_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let csv = b"id,cat,dog,bird\n000005,1,-1,0\n000007,0,0,1\n000009,-1,1,-1\n";
    fuzz("labels.csv", csv, &tmp.path().join("l.csv"), |p| {
        let _ = read_label_csv(p);
    });
}

#[test]
fn glove_files_never_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let text = b"cat 0.1 0.2 -0.3\ndog 1e-2 0.5 0.25\nbird -1 0 1\n";
    fuzz("glove.txt", text, &tmp.path().join("g.txt"), |p| {
        let _ = WordVectors::read_glove(p);
    });
    fuzz(
        "glove.txt.gz",
        &gzip(text),
        &tmp.path().join("g.txt.gz"),
        |p| {
            let _ = WordVectors::read_glove(p);
        },
    );
}

#[test]
fn npy_files_never_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("w.npy");
    ClassEmbeddings::new(2, 3, vec![0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
        .unwrap()
        .write_npy(&path)
        .unwrap();
    let valid = std::fs::read(&path).unwrap();
    fuzz("words.npy", &valid, &path, |p| {
        let _ = ClassEmbeddings::read_npy(p);
    });
}
