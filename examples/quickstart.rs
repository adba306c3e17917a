//! Quick start: HST as a library, on the embedded dataset (no download).
//!
//! ```text
//! cargo run --release --example quickstart
//! ```
//!
//! Loads 800 training and 400 test images of the embedded mosaic dataset (20 classes), keeps 30% of the
//! training labels with the reference protocol, trains the `embedded` preset's model (ResNet-10 from scratch +
//! SARL, IST, CST, DTL) for 2 epochs on the Flex CPU backend, then evaluates the best checkpoint. Prints the
//! label statistics, one line per epoch (losses, thresholds, test mAP) and the final test metrics. About a
//! minute on a 2-core CPU; the run folder is `$TMPDIR/hst-quickstart`.
use burn::backend::{Autodiff, Flex};
use hst_data::{
    BatchMode, EmbeddedConfig, EmbeddedDataset, HstBatcher, MultiLabelSource, PartialLabels,
};
use hst_train::config::DataSource;
use hst_train::data::RunData;
use hst_train::trainer::{evaluate, load_run_model};
use hst_train::{train, EpochLog, TrainConfig, TrainObserver, TrainOptions};

/// Prints one line per epoch (the library itself never prints).
struct PrintEpochs;

impl TrainObserver for PrintEpochs {
    fn epoch_done(&mut self, log: &EpochLog) {
        let r = &log.record;
        println!(
            "epoch {}: loss {:.4}  tau_ist {:.3}  tau_cst {:.3}  test mAP {:.2}  ({:.0} s, {:.0} img/s)",
            r.epoch,
            r.losses.get("total").copied().unwrap_or(f64::NAN),
            r.tau_ist,
            r.tau_cst,
            100.0 * r.map,
            log.seconds,
            log.train_images_per_second
        );
    }
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    // 1. Data: the embedded mosaics, with the reference protocol keeping 30% of the training labels (seed 0).
    let (train_images, test_images) = (800, 400);
    let data = EmbeddedConfig::new()
        .with_train_images(train_images)
        .with_test_images(test_images)
        .load()?;
    let partial = PartialLabels::from_protocol(data.train.full_labels().clone(), 0.3, 0);
    let stats = partial.partial().stats();
    println!(
        "embedded dataset: {} train / {} test images, {} classes; {:.1}% of the training labels known",
        data.train.len(),
        data.test.len(),
        data.classes().len(),
        100.0 * stats.known_fraction
    );
    let run_data = RunData {
        train: Box::new(data.train),
        test: Box::new(data.test),
        partial,
        word_vectors: EmbeddedDataset::class_embeddings(),
    };

    // 2. Configuration: the embedded preset, shortened. Pseudo labels (IST, CST, DTL) start in the 2nd epoch.
    let mut config = TrainConfig::embedded();
    config.epochs = 2;
    config.model.schedule.pseudo_label_epoch = 1;
    // Recorded in the run's config.json, so `hst eval --run DIR` rebuilds the same data.
    config.data.source = DataSource::Embedded {
        train_images,
        test_images,
    };

    // 3. Training on Flex (CPU); `hst::backend::run_on` picks a backend at run time instead.
    type B = Autodiff<Flex>;
    let device = Default::default();
    let out = std::env::temp_dir().join("hst-quickstart");
    let _ = std::fs::remove_dir_all(&out);
    let summary = train::<B>(
        &config,
        &run_data,
        &out,
        &TrainOptions::default(),
        &device,
        &mut PrintEpochs,
    )?;

    // 4. Evaluation of the best checkpoint, on the inference backend.
    let (config, _, model) = load_run_model::<Flex>(&out, "best.ckpt", &device)?;
    let batcher = HstBatcher::new(config.data.transform.init(), BatchMode::Test);
    let eval = evaluate(
        &model,
        run_data.test.as_ref(),
        &batcher,
        config.eval_batch_size,
        false,
        &device,
        || {},
    )?;
    let m = &eval.metrics;
    println!(
        "best checkpoint (epoch {}): mAP {:.2}  OF1 {:.2}  CF1 {:.2} on {} test images; {:.0} s in all; run folder {}",
        summary.best.map_or(0, |(_, e)| e),
        100.0 * m.map,
        100.0 * m.of1,
        100.0 * m.cf1,
        m.images,
        summary.seconds,
        out.display()
    );
    Ok(())
}
