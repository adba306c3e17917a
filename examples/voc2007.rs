//! HST on PASCAL VOC 2007 with an ImageNet-pretrained EfficientNet-Lite0 at 224 px (the `voc-lite0` preset).
//!
//! ```text
//! cargo run --release --example voc2007                                   # train split -> val split, 20 epochs
//! cargo run --release --example voc2007 -- --epochs 1 --train-images 200 --test-images 200   # a quick look
//! ```
//!
//! Needs, relative to the working directory (run it from the repository root): the VOC folder
//! `../shared/data/voc2007-trainval` (`ImageSets/Main/`, `JPEGImages/`; `--root` for another one), the weights
//! `../shared/weights/efficientnet-lite0-imagenet.safetensors` and the GloVe subset
//! `../shared/data/glove/glove.6B.50d.subset.txt.gz` (`--weights`, `--glove` for others). Nothing is
//! downloaded; a missing file stops it with a message naming it.
//!
//! Trains on the `train` split with 30% of its labels known (the reference protocol, seed 0), evaluates on the
//! `val` split after every epoch and prints one line per epoch (loss, thresholds, pseudo-label precision, test
//! mAP, OF1, CF1, speed), then the best epoch and the final metrics. `--train-images N` / `--test-images N` keep
//! the first N images of a split (the kept rows of the partial labels are those of the full split, since the
//! protocol draws image by image). The run folder (`--out`, default `runs/voc2007-<time>`) holds `config.json`,
//! `metrics.csv`, the plots and the checkpoints; `hst predict --run DIR image.jpg` uses it.
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Parser;
use hst::backend::{run_on, BackendName};
use hst::jobs::TrainJob;
use hst_data::datasets::voc::read_voc;
use hst_data::{MultiLabelSource, PartialLabels, WordVectors};
use hst_train::config::{DataSource, WordVectorSource};
use hst_train::data::RunData;
use hst_train::{EpochLog, Phase, TrainConfig, TrainObserver};

/// Train and evaluate HST on a VOC 2007 folder (EfficientNet-Lite0 at 224, ImageNet weights).
#[derive(Parser, Debug)]
struct Args {
    /// The VOC folder (`ImageSets/Main/`, `JPEGImages/`, optional `Annotations/`).
    #[arg(long, default_value = "../shared/data/voc2007-trainval")]
    root: PathBuf,
    /// Training split.
    #[arg(long, default_value = "train")]
    train_split: String,
    /// Test split.
    #[arg(long, default_value = "val")]
    test_split: String,
    /// Training epochs (the preset: 20).
    #[arg(long, default_value_t = 20)]
    epochs: usize,
    /// Keep only the first N training images (a quick run).
    #[arg(long, value_name = "N")]
    train_images: Option<usize>,
    /// Keep only the first N test images (a quick run).
    #[arg(long, value_name = "N")]
    test_images: Option<usize>,
    /// Proportion of known training labels.
    #[arg(long, default_value_t = 0.3)]
    proportion: f64,
    /// EfficientNet-Lite0 ImageNet weights (default: the preset's
    /// ../shared/weights/efficientnet-lite0-imagenet.safetensors).
    #[arg(long, value_name = "FILE")]
    weights: Option<PathBuf>,
    /// GloVe text file for the class-name vectors (default: the preset's
    /// ../shared/data/glove/glove.6B.50d.subset.txt.gz).
    #[arg(long, value_name = "FILE")]
    glove: Option<PathBuf>,
    /// Run folder (default: runs/voc2007-<unix time>).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Backend (those compiled into this binary).
    #[arg(long, value_enum, default_value = "flex")]
    backend: BackendName,
}

/// Prints a line every 10 training batches and one per epoch.
struct Progress {
    batches: usize,
    done: usize,
    started: std::time::Instant,
}

impl TrainObserver for Progress {
    fn phase_start(&mut self, phase: Phase, epoch: usize, batches: usize) {
        (self.batches, self.done) = (batches, 0);
        self.started = std::time::Instant::now();
        let what = match phase {
            Phase::Prototypes => "computing prototypes",
            Phase::Train => "training",
            Phase::Eval => "evaluating",
        };
        eprintln!("epoch {epoch}: {what} ({batches} batches)");
    }

    fn batch_done(&mut self, phase: Phase, loss: Option<f64>) {
        self.done += 1;
        if phase == Phase::Train && (self.done.is_multiple_of(10) || self.done == self.batches) {
            eprintln!(
                "  batch {}/{}  loss {:.4}  {:.1} s/batch",
                self.done,
                self.batches,
                loss.unwrap_or(f64::NAN),
                self.started.elapsed().as_secs_f64() / self.done as f64
            );
        }
    }

    fn epoch_done(&mut self, log: &EpochLog) {
        let r = &log.record;
        let precision = |q: &Option<hst_train::metrics::PseudoLabelQuality>| {
            q.as_ref()
                .map_or("-".to_string(), |q| format!("{:.2}", q.precision))
        };
        println!(
            "epoch {:2}  loss {:.4}  tau_ist {:.3}  tau_cst {:.3}  pseudo precision ist {} cst {}  \
             mAP {:.2}  OF1 {:.2}  CF1 {:.2}  ({:.0} s, {:.1} img/s)",
            r.epoch,
            r.losses.get("total").copied().unwrap_or(f64::NAN),
            r.tau_ist,
            r.tau_cst,
            precision(&r.ist_pseudo),
            precision(&r.cst_pseudo),
            100.0 * r.map,
            100.0 * r.of1,
            100.0 * r.cf1,
            log.seconds,
            log.train_images_per_second
        );
    }
}

fn require(path: &Path, what: &str, option: &str) -> anyhow::Result<()> {
    if !path.is_file() {
        bail!(
            "{what} not found: {} (relative paths are read from {}); run from the repository root or pass \
             {option} FILE",
            path.display(),
            std::env::current_dir()?.display()
        );
    }
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    let main_dir = args.root.join("ImageSets").join("Main");
    if !main_dir.is_dir() || !args.root.join("JPEGImages").is_dir() {
        bail!(
            "no VOC folder at {} (expected ImageSets/Main/ and JPEGImages/ in it; working directory {}); \
             pass --root DIR",
            args.root.display(),
            std::env::current_dir()?.display()
        );
    }

    let mut config = TrainConfig::voc_lite0();
    config.epochs = args.epochs;
    config.data.proportion = args.proportion;
    config.data.source = DataSource::Voc {
        root: args.root.clone(),
        train_split: args.train_split.clone(),
        test_split: args.test_split.clone(),
    };
    if let Some(weights) = &args.weights {
        config.pretrained = Some(weights.clone());
    }
    if let Some(path) = &args.glove {
        config.data.word_vectors = WordVectorSource::Glove { path: path.clone() };
    }
    let weights = config.pretrained.clone().expect("the preset names weights");
    require(&weights, "EfficientNet-Lite0 weights", "--weights")?;
    let WordVectorSource::Glove { path: glove } = config.data.word_vectors.clone() else {
        unreachable!("the voc-lite0 preset uses GloVe vectors");
    };
    require(&glove, "GloVe vectors", "--glove")?;

    // The data: as `hst_train::data::load` does, plus the optional subsampling.
    let split = |s: &str| s.parse().map_err(|e: String| anyhow::anyhow!("{e}"));
    let read = |s: &str, keep: Option<usize>| -> anyhow::Result<_> {
        let set =
            read_voc(&args.root, split(s)?).with_context(|| format!("reading the {s} split"))?;
        let n = keep.unwrap_or(set.len()).min(set.len());
        Ok(set.select(&(0..n).collect::<Vec<_>>()))
    };
    let train = read(&args.train_split, args.train_images)?;
    let test = read(&args.test_split, args.test_images)?;
    let partial = PartialLabels::from_protocol(
        train.full_labels().clone(),
        config.data.proportion,
        config.data.protocol_seed,
    );
    let classes = train.classes().to_vec();
    let word_vectors = WordVectors::read_glove_for(&glove, &classes)?.class_embeddings(&classes)?;
    let stats = partial.partial().stats();
    println!(
        "VOC {}: {} {} images -> {} {} images, {} classes, {:.1}% of the training labels known; \
         EfficientNet-Lite0 at {} px, {} epochs, backend {}",
        args.root.display(),
        train.len(),
        args.train_split,
        test.len(),
        args.test_split,
        classes.len(),
        100.0 * stats.known_fraction,
        config.data.transform.image_size,
        config.epochs,
        args.backend
    );
    if stats.positives_per_class.contains(&0) {
        // Too few images for every class to keep a known positive: the reference's adjacency would be NaN.
        eprintln!("note: some class has no known positive; replacing its NaN adjacency row by 0");
        config.data.guard_adjacency_nan = true;
    }
    let data = RunData {
        train: Box::new(train),
        test: Box::new(test),
        partial,
        word_vectors,
    };

    let out = args.out.clone().unwrap_or_else(|| {
        let secs = std::time::UNIX_EPOCH.elapsed().map_or(0, |d| d.as_secs());
        PathBuf::from(format!("runs/voc2007-{secs}"))
    });
    let mut observer = Progress {
        batches: 0,
        done: 0,
        started: std::time::Instant::now(),
    };
    let summary = run_on(
        args.backend,
        TrainJob {
            config,
            data: &data,
            out: out.clone(),
            resume: false,
            overwrite: false,
            stop: Arc::new(AtomicBool::new(false)),
            observer: &mut observer,
            cluster: None,
            timeout: hst_train::data_parallel::DEFAULT_TIMEOUT,
        },
    )??;
    if let Some(m) = &summary.last {
        println!(
            "done in {:.0} s ({} epochs): last epoch mAP {:.2}  OF1 {:.2}  CF1 {:.2}  OP {:.2}  OR {:.2}  CP {:.2}  \
             CR {:.2} on {} images",
            summary.seconds,
            summary.epochs_completed,
            100.0 * m.map,
            100.0 * m.of1,
            100.0 * m.cf1,
            100.0 * m.op,
            100.0 * m.or,
            100.0 * m.cp,
            100.0 * m.cr,
            m.images
        );
        let worst = m
            .per_class_ap
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.total_cmp(b.1));
        let best = m
            .per_class_ap
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1));
        if let (Some((w, wap)), Some((b, bap))) = (worst, best) {
            let names = data.classes();
            println!(
                "per-class AP: best {} {:.1}, worst {} {:.1}",
                names[b],
                100.0 * bap,
                names[w],
                100.0 * wap
            );
        }
    }
    if let Some((map, epoch)) = summary.best {
        println!("best mAP {:.2} at epoch {epoch}", 100.0 * map);
    }
    println!("run folder: {}", summary.run_dir.display());
    Ok(())
}
