//! End-to-end tests of the training loop on a tiny configuration of the embedded dataset: resume determinism,
//! the NaN stop, checkpoints and the run folder.
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use hst_train::checkpoint;
use hst_train::config::DataSource;
use hst_train::trainer::{Phase, Silent};
use hst_train::{train, TrainError, TrainObserver, TrainOptions};

mod common;
use common::*;

#[test]
fn interrupted_and_resumed_run_equals_uninterrupted_run() {
    let _guard = serial();
    let config = tiny();
    let data = hst_train::data::load(&config.data).unwrap();
    let device = Default::default();

    let a = out_dir("full");
    let summary = train::<B>(
        &config,
        &data,
        &a,
        &TrainOptions::default(),
        &device,
        &mut Silent,
    )
    .unwrap();
    assert_eq!(summary.epochs_completed, 3);
    assert!(!summary.interrupted);

    // Interrupt mid-epoch 1 (epoch 0 has 3 batches; stop after the 4th batch overall), then resume.
    let b = out_dir("resumed");
    let flag = Arc::new(AtomicBool::new(false));
    let options = TrainOptions {
        resume: false,
        stop: Some(flag.clone()),
        overwrite: false,
    };
    let mut stopper = StopAfter {
        flag,
        after: 4,
        seen: 0,
    };
    let summary = train::<B>(&config, &data, &b, &options, &device, &mut stopper).unwrap();
    assert!(summary.interrupted);
    let header = checkpoint::load(&b.join("checkpoints/last.ckpt"))
        .unwrap()
        .header;
    assert_eq!((header.epoch, header.next_batch), (1, 1));
    assert!(
        header.prototypes.is_some(),
        "prototypes of epoch 1 are saved"
    );
    let resume = TrainOptions {
        resume: true,
        ..TrainOptions::default()
    };
    let summary = train::<B>(&config, &data, &b, &resume, &device, &mut Silent).unwrap();
    assert_eq!(summary.epochs_completed, 3);

    assert_same(
        &weights(&a),
        &weights(&b),
        "resumed run vs uninterrupted run",
    );
    let logs = std::fs::read_to_string(b.join("metrics.jsonl")).unwrap();
    assert_eq!(logs.lines().count(), 3);
    // metrics.csv: one row per epoch, every row as wide as the header, and the mAP column equal to
    // the JSONL record's.
    let mut table = csv::Reader::from_path(b.join("metrics.csv")).unwrap();
    let header = table.headers().unwrap().clone();
    let map_col = header.iter().position(|h| h == "map").unwrap();
    assert!(header.iter().any(|h| h.starts_with("loss_")), "{header:?}");
    let rows: Vec<csv::StringRecord> = table.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 3);
    for (row, line) in rows.iter().zip(logs.lines()) {
        assert_eq!(row.len(), header.len());
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        let map: f64 = row[map_col].parse().unwrap();
        assert_eq!(map, record["metrics"]["map"].as_f64().unwrap(), "{line}");
    }
    for f in [
        "config.json",
        "constants.json",
        "metrics.csv",
        "checkpoints/best.ckpt",
        "report/map.png",
    ] {
        assert!(b.join(f).exists(), "{f} missing");
    }
    std::fs::remove_dir_all(&a).unwrap();
    std::fs::remove_dir_all(&b).unwrap();
}

#[test]
fn non_finite_loss_stops_and_keeps_the_last_good_checkpoint() {
    let _guard = serial();
    let mut config = tiny();
    config.epochs = 1;
    let data = hst_train::data::load(&config.data).unwrap();
    let device = Default::default();
    let dir = out_dir("nan");
    train::<B>(
        &config,
        &data,
        &dir,
        &TrainOptions::default(),
        &device,
        &mut Silent,
    )
    .unwrap();
    let good = weights(&dir);

    // Resume for a second epoch with an absurd learning rate: the weights explode and the loss turns non-finite.
    config.epochs = 3;
    config.optimizer.lr = 1e30;
    std::fs::write(dir.join("config.json"), config.to_json()).unwrap();
    let resume = TrainOptions {
        resume: true,
        ..TrainOptions::default()
    };
    let err = train::<B>(&config, &data, &dir, &resume, &device, &mut Silent).unwrap_err();
    assert!(matches!(err, TrainError::NonFiniteLoss { .. }), "{err}");
    assert!(err.to_string().contains("last good checkpoint"), "{err}");
    assert_same(&weights(&dir), &good, "the last good checkpoint is kept");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn two_identical_runs_end_with_identical_weights() {
    let _guard = serial();
    let mut config = tiny();
    config.epochs = 1;
    let data = hst_train::data::load(&config.data).unwrap();
    let device = Default::default();
    let a = out_dir("same-a");
    let b = out_dir("same-b");
    train::<B>(
        &config,
        &data,
        &a,
        &TrainOptions::default(),
        &device,
        &mut Silent,
    )
    .unwrap();
    train::<B>(
        &config,
        &data,
        &b,
        &TrainOptions::default(),
        &device,
        &mut Silent,
    )
    .unwrap();
    assert_same(&weights(&a), &weights(&b), "two runs with the same seed");
    std::fs::remove_dir_all(&a).unwrap();
    std::fs::remove_dir_all(&b).unwrap();
}

/// Records, for every training batch, the device-to-host reads made since the previous training event.
#[derive(Default)]
struct ReadCounter {
    last: u64,
    /// Per training phase: `(loss reported, reads since the previous event)` per batch.
    phases: Vec<Vec<(bool, u64)>>,
}
impl TrainObserver for ReadCounter {
    fn phase_start(&mut self, phase: Phase, _epoch: usize, _batches: usize) {
        if phase == Phase::Train {
            self.last = hst_train::host::reads_on_this_thread();
            self.phases.push(Vec::new());
        }
    }
    fn batch_done(&mut self, phase: Phase, loss: Option<f64>) {
        if phase == Phase::Train {
            let now = hst_train::host::reads_on_this_thread();
            let phase = self.phases.last_mut().expect("a training phase started");
            phase.push((loss.is_some(), now - self.last));
            self.last = now;
        }
    }
}

#[test]
fn training_steps_read_nothing_between_log_points() {
    let _guard = serial();
    let mut config = tiny();
    config.data.source = DataSource::Embedded {
        train_images: 96,
        test_images: 16,
    };
    config.batch_size = 8;
    config.epochs = 2;
    config.log_every = 5;
    let data = hst_train::data::load(&config.data).unwrap();
    let device = Default::default();
    let dir = out_dir("reads");
    let mut counter = ReadCounter::default();
    train::<B>(
        &config,
        &data,
        &dir,
        &TrainOptions::default(),
        &device,
        &mut counter,
    )
    .unwrap();
    assert_eq!(counter.phases.len(), 2, "two training phases");
    for (epoch, batches) in counter.phases.iter().enumerate() {
        assert_eq!(batches.len(), 12, "epoch {epoch}: 96 images / 8");
        for (b, &(logged, reads)) in batches.iter().enumerate() {
            let due = (b + 1) % config.log_every == 0;
            assert_eq!(logged, due, "epoch {epoch} batch {b}: loss reported");
            assert_eq!(
                reads,
                u64::from(due),
                "epoch {epoch} batch {b}: device reads (one per log point, none in between)"
            );
        }
    }
    // The epoch records still hold every term and, once pseudo labels start (epoch 1), their quality.
    let logs = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(logs.lines().last().unwrap()).unwrap();
    for term in [
        "total",
        "partial_bce",
        "ist_asl",
        "instance",
        "ist_bce",
        "dtl_ist",
    ] {
        assert!(
            last["losses"][term].as_f64().is_some_and(f64::is_finite),
            "loss term {term} in {last}"
        );
    }
    let ist = &last["ist_pseudo"];
    assert!(ist["unknown"].as_u64().unwrap() > 0, "{ist}");
    assert!(
        ist["count"].as_u64().unwrap() <= ist["unknown"].as_u64().unwrap(),
        "{ist}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_non_finite_loss_before_any_checkpoint_says_there_is_none() {
    let _guard = serial();
    let mut config = tiny();
    config.epochs = 1;
    config.optimizer.lr = 1e30;
    let data = hst_train::data::load(&config.data).unwrap();
    let dir = out_dir("nan-first");
    let err = train::<B>(
        &config,
        &data,
        &dir,
        &TrainOptions::default(),
        &Default::default(),
        &mut Silent,
    )
    .unwrap_err();
    assert!(matches!(err, TrainError::NonFiniteLoss { .. }), "{err}");
    assert!(
        err.to_string().contains("No checkpoint exists yet"),
        "{err}"
    );
    assert!(!dir.join("checkpoints").join("last.ckpt").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A run folder is never overwritten unasked; `--resume` refuses an architecture change, and a checkpoint
/// whose tensors do not fit the configuration is refused naming a tensor, before the folder is touched.
#[test]
fn existing_runs_are_protected_and_misfits_refused() {
    let _guard = serial();
    let mut config = tiny();
    config.epochs = 1;
    let data = hst_train::data::load(&config.data).unwrap();
    let device = Default::default();
    let dir = out_dir("protected");
    let fresh = TrainOptions::default();
    train::<B>(&config, &data, &dir, &fresh, &device, &mut Silent).unwrap();
    let config_before = std::fs::read(dir.join("config.json")).unwrap();
    let good = weights(&dir);

    let err = train::<B>(&config, &data, &dir, &fresh, &device, &mut Silent).unwrap_err();
    assert!(matches!(err, TrainError::RunExists { .. }), "{err}");
    assert_same(&weights(&dir), &good, "a refused run changes nothing");

    let mut wider = config.clone();
    wider.model.trunk.base_width = 8;
    let resume = TrainOptions {
        resume: true,
        ..TrainOptions::default()
    };
    let err = train::<B>(&wider, &data, &dir, &resume, &device, &mut Silent).unwrap_err();
    assert!(err.to_string().contains("model.trunk.base_width"), "{err}");
    assert_eq!(
        std::fs::read(dir.join("config.json")).unwrap(),
        config_before
    );

    // An edited config.json: eval's loader checks every tensor's shape.
    std::fs::write(dir.join("config.json"), wider.to_json()).unwrap();
    let err = hst_train::trainer::load_run_model::<B>(&dir, "last.ckpt", &device)
        .map(|_| ())
        .unwrap_err();
    assert!(
        err.to_string().contains("does not fit") && err.to_string().contains("trunk."),
        "{err}"
    );

    // --force (overwrite) replaces the run.
    let overwrite = TrainOptions {
        overwrite: true,
        ..TrainOptions::default()
    };
    let summary = train::<B>(&config, &data, &dir, &overwrite, &device, &mut Silent).unwrap();
    assert_eq!(summary.epochs_completed, 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn resume_without_a_checkpoint_says_to_start_again() {
    let _guard = serial();
    let config = tiny();
    let data = hst_train::data::load(&config.data).unwrap();
    let dir = out_dir("no-ckpt");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), config.to_json()).unwrap();
    let resume = TrainOptions {
        resume: true,
        ..TrainOptions::default()
    };
    let err = train::<B>(
        &config,
        &data,
        &dir,
        &resume,
        &Default::default(),
        &mut Silent,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("no checkpoint to resume from") && err.contains("--force"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
