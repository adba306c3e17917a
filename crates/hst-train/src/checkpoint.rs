//! Checkpoints: one self-describing file per checkpoint (`last.ckpt`, `best.ckpt`), written atomically.
//!
//! Layout of a checkpoint file (all integers little-endian):
//!
//! ```text
//! b"HSTCKPT1" · u64 len · JSON header (`CheckpointHeader`) · u64 len · model record · u64 len · optimizer record
//! ```
//!
//! The model and optimizer records are Burn's named MessagePack records at full precision. The header carries
//! the epoch/batch position, the run's RNG seed and the prototypes, so that `--resume` restores everything the
//! reference loses (its prototypes are not saved). A file is first written to `<name>.tmp` in the same folder,
//! flushed to disk, then renamed over the target: a crash never leaves a half-written checkpoint behind.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::TrainError;

const MAGIC: &[u8; 8] = b"HSTCKPT1";

/// Everything in a checkpoint besides the two Burn records.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CheckpointHeader {
    /// Epoch to run next (or the epoch in progress when `next_batch > 0`).
    pub epoch: usize,
    /// First batch of `epoch` still to run (0 at an epoch boundary; > 0 after an interrupt mid-epoch).
    pub next_batch: usize,
    /// Seed of the run: every random stream (shuffle, augmentation, sampling, K-means) is derived from
    /// (seed, epoch, batch), so the seed and the position are the whole RNG state.
    pub seed: u64,
    /// Best test mAP so far and its epoch.
    pub best_map: Option<(f64, usize)>,
    /// The CST prototypes in use: `[classes, k, dim]` row-major values and a `[classes, k]` validity mask.
    pub prototypes: Option<SavedPrototypes>,
    /// The run configuration, as JSON, to detect a resume with another configuration.
    pub config: serde_json::Value,
}

/// Prototypes as plain numbers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SavedPrototypes {
    /// `[classes, k, dim]`.
    pub shape: [usize; 3],
    /// Row-major centres.
    pub centers: Vec<f32>,
    /// Row-major `[classes, k]` mask: 1 for a real prototype, 0 for padding.
    pub valid: Vec<f32>,
}

/// A checkpoint read back from disk.
#[derive(Debug)]
pub struct CheckpointFile {
    /// The header.
    pub header: CheckpointHeader,
    /// The model record bytes (Burn named MessagePack, full precision).
    pub model: Vec<u8>,
    /// The optimizer record bytes.
    pub optimizer: Vec<u8>,
}

/// Whether `dir` already holds a run (its configuration or checkpoints), which nothing may overwrite
/// without being asked to.
pub fn holds_a_run(dir: &Path) -> bool {
    ["config.json", "constants.json", "checkpoints"]
        .iter()
        .any(|f| dir.join(f).exists())
}

/// Write `bytes` to `path` atomically: temp file in the same folder, fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    let io = |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            fs::create_dir_all(dir).map_err(io)?;
        }
    }
    let tmp = tmp_path(path);
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io)
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Serialise a checkpoint and write it atomically to `path`.
pub fn save(
    path: &Path,
    header: &CheckpointHeader,
    model: &[u8],
    optimizer: &[u8],
) -> Result<(), TrainError> {
    let json = serde_json::to_vec(header).map_err(|e| TrainError::Checkpoint {
        path: path.to_path_buf(),
        message: format!("cannot serialise the header: {e}"),
    })?;
    let mut bytes = Vec::with_capacity(8 + 24 + json.len() + model.len() + optimizer.len());
    bytes.extend_from_slice(MAGIC);
    for part in [&json[..], model, optimizer] {
        bytes.extend_from_slice(&(part.len() as u64).to_le_bytes());
        bytes.extend_from_slice(part);
    }
    write_atomic(path, &bytes)
}

/// Read a checkpoint written by [`save`]; a truncated or foreign file is an error naming it.
pub fn load(path: &Path) -> Result<CheckpointFile, TrainError> {
    let bytes = fs::read(path).map_err(|source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let bad = |message: String| TrainError::Checkpoint {
        path: path.to_path_buf(),
        message,
    };
    if bytes.len() < 8 || &bytes[..8] != MAGIC {
        return Err(bad("not an HST checkpoint (bad magic bytes)".into()));
    }
    let mut pos = 8;
    let mut parts = Vec::with_capacity(3);
    for what in ["header", "model record", "optimizer record"] {
        let len_end = pos + 8;
        let len = bytes
            .get(pos..len_end)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
            .ok_or_else(|| bad(format!("truncated before the length of the {what}")))?;
        let end = len_end
            .checked_add(len)
            .filter(|&e| e <= bytes.len())
            .ok_or_else(|| {
                bad(format!(
                    "truncated inside the {what} ({len} bytes announced)"
                ))
            })?;
        parts.push(bytes[len_end..end].to_vec());
        pos = end;
    }
    if pos != bytes.len() {
        return Err(bad(format!("{} trailing bytes", bytes.len() - pos)));
    }
    let optimizer = parts.pop().expect("3 parts");
    let model = parts.pop().expect("3 parts");
    let header =
        serde_json::from_slice(&parts[0]).map_err(|e| bad(format!("unreadable header: {e}")))?;
    Ok(CheckpointFile {
        header,
        model,
        optimizer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> CheckpointHeader {
        CheckpointHeader {
            epoch: 3,
            next_batch: 7,
            seed: 42,
            best_map: Some((0.5, 2)),
            prototypes: Some(SavedPrototypes {
                shape: [1, 2, 2],
                centers: vec![1.0, 2.0, 3.0, 4.0],
                valid: vec![1.0, 0.0],
            }),
            config: serde_json::json!({"a": 1}),
        }
    }

    #[test]
    fn round_trip_and_no_temp_file_left() {
        let dir = std::env::temp_dir().join(format!("hst-ckpt-{}", std::process::id()));
        let path = dir.join("last.ckpt");
        save(&path, &header(), &[1, 2, 3], &[9; 10]).unwrap();
        let back = load(&path).unwrap();
        assert_eq!(back.header, header());
        assert_eq!(back.model, vec![1, 2, 3]);
        assert_eq!(back.optimizer, vec![9; 10]);
        assert!(!tmp_path(&path).exists());
        // Overwriting keeps a complete file.
        save(&path, &header(), &[4; 100], &[]).unwrap();
        assert_eq!(load(&path).unwrap().model, vec![4; 100]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn truncated_and_foreign_files_are_errors_naming_the_file() {
        let dir = std::env::temp_dir().join(format!("hst-ckpt-bad-{}", std::process::id()));
        let path = dir.join("c.ckpt");
        save(&path, &header(), &[1, 2, 3], &[5; 50]).unwrap();
        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(err.contains("c.ckpt") && err.contains("truncated"), "{err}");
        fs::write(&path, b"PK\x03\x04 not ours").unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(err.contains("magic"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn failed_write_leaves_previous_checkpoint() {
        let dir = std::env::temp_dir().join(format!("hst-ckpt-ro-{}", std::process::id()));
        let path = dir.join("last.ckpt");
        save(&path, &header(), &[1], &[2]).unwrap();
        // A directory squatting on the temp name makes the write fail.
        fs::create_dir_all(tmp_path(&path)).unwrap();
        assert!(save(&path, &header(), &[7; 8], &[8]).is_err());
        assert_eq!(load(&path).unwrap().model, vec![1]);
        fs::remove_dir_all(&dir).unwrap();
    }

    /// A bounded mutation fuzzer over the reader: flipped, cut, inserted and duplicated bytes (lengths and
    /// the JSON header included) give an error, never a panic. `HST_FUZZ_CASES` sets the count (default 300).
    #[test]
    fn mutated_checkpoints_never_panic() {
        let dir = std::env::temp_dir().join(format!("hst-ckpt-fuzz-{}", std::process::id()));
        let path = dir.join("f.ckpt");
        save(&path, &header(), &[1, 2, 3, 4, 5], &[6; 40]).unwrap();
        let valid = fs::read(&path).unwrap();
        let cases: u64 = std::env::var("HST_FUZZ_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(300);
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for case in 0..cases {
            let mut bytes = valid.clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() % bytes.len().max(1) as u64) as usize;
                match next() % 4 {
                    0 if !bytes.is_empty() => {
                        let i = at.min(bytes.len() - 1);
                        bytes[i] ^= 1 << (next() % 8);
                    }
                    1 => bytes.truncate(at),
                    2 => bytes.insert(at.min(bytes.len()), (next() % 256) as u8),
                    _ => {
                        let end = (at + 8).min(bytes.len());
                        let chunk = bytes[at.min(end)..end].to_vec();
                        bytes.splice(at.min(bytes.len())..at.min(bytes.len()), chunk);
                    }
                }
            }
            fs::write(&path, &bytes).unwrap();
            let outcome = std::panic::catch_unwind(|| load(&path).map(|_| ()));
            assert!(outcome.is_ok(), "case {case} panicked: {bytes:?}");
        }
        fs::remove_dir_all(&dir).unwrap();
    }
}
