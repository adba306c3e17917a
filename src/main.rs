//! The `hst` command line: train, evaluate, predict, make partial labels, export the embedded dataset, plot a
//! run, benchmark. `cargo run --release` (no arguments) trains HST on the embedded dataset.
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use hst::backend::{run_on, run_on_devices, BackendJob, BackendName, DeviceList};
use hst::jobs::{default_run_dir, EvalJob, ImportJob, PredictJob, TrainJob};
use hst::progress::ProgressObserver;
use hst_data::label_file::{read_label_csv, write_label_csv};
use hst_data::{EmbeddedDataset, PartialLabels};
use hst_train::report::write_report;
use hst_train::{Cluster, TrainConfig};

// The `hst` binary's global allocator (measured in BENCHMARKS.md, "Allocator"). Burn's CPU backends allocate
// and free tensors of tens of MiB every step; glibc returns each large one to the kernel (munmap) and the next
// step pays the page faults and the zeroing again. The `mimalloc` feature (default) keeps freed memory for
// reuse (see `keep_freed_memory`); `jemalloc` is the measured alternative. A library user picks the global
// allocator of their own binary.
#[cfg(all(feature = "mimalloc", not(feature = "jemalloc")))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// mimalloc purges (decommits) freed memory 10 ms after the free by default, so a training step still
/// faults its temporaries in afresh: never purge, unless `MIMALLOC_PURGE_DELAY` says otherwise. The
/// footprint stays the step's peak (BENCHMARKS.md: peak RSS).
fn keep_freed_memory() {
    #[cfg(all(feature = "mimalloc", not(feature = "jemalloc")))]
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // `mi_option_purge_delay` in mimalloc v3's `mimalloc.h` (the version libmimalloc-sys builds).
        const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
        // SAFETY: sets one of mimalloc's global options; any value is valid (-1: never purge).
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
}

#[derive(Parser, Debug)]
#[command(
    name = "hst",
    version,
    about = "HST (Heterogeneous Semantic Transfer): multi-label recognition with partial labels, on Burn",
    long_about = "HST (Heterogeneous Semantic Transfer): multi-label recognition with partial labels, on Burn.\n\
                  Without a command, `hst` trains HST on the embedded dataset (the `embedded` preset)."
)]
struct Cli {
    /// Backend to run on (those compiled into this binary; see `hst backends`) [default: flex].
    #[arg(long, global = true, value_enum)]
    backend: Option<BackendName>,
    /// Log verbosity (`-v` info, `-vv` debug); RUST_LOG overrides it.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Option<Command>,
}

/// Which configuration a command starts from.
#[derive(Args, Debug, Clone)]
struct ConfigArgs {
    /// Start from a preset: reference, coco, voc, vg, voc-lite0, embedded (default: embedded).
    #[arg(long)]
    preset: Option<String>,
    /// Start from a configuration file (JSON, e.g. a run's config.json) instead of a preset.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Override a value: `--set optimizer.lr=1e-4 --set model.ablation.cst=false` (dotted JSON path).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Train the plain partial-BCE baseline (no IST, CST or DTL) of the configuration.
    #[arg(long)]
    baseline: bool,
}

impl ConfigArgs {
    fn load(&self) -> Result<TrainConfig> {
        let base = match &self.config {
            Some(path) => TrainConfig::load(path)?,
            None => TrainConfig::preset(self.preset.as_deref().unwrap_or("embedded"))?,
        };
        let config = base.with_overrides(&self.overrides)?;
        Ok(if self.baseline {
            config.baseline()
        } else {
            config
        })
    }
}

/// Data-parallel training: several devices, several machines.
#[derive(Args, Debug, Clone, Default)]
struct ParallelArgs {
    /// Train data-parallel, one model replica per device, each on its share of every batch (batch_size is
    /// the whole batch over all devices and nodes): `cuda:0,cuda:1`, `wgpu:0,wgpu:1`, or `flex,flex` (several
    /// CPU peers, for tests). Names the backend (instead of --backend).
    #[arg(long, value_name = "LIST")]
    devices: Option<DeviceList>,
    /// Machines of a multi-machine run; each runs `hst train` with the same configuration and its
    /// --node-rank (0 evaluates, writes the run folder and runs the coordinator).
    #[arg(long, requires_all = ["node_rank", "coordinator"])]
    nodes: Option<u32>,
    /// This machine's rank, 0..nodes.
    #[arg(long, requires = "nodes")]
    node_rank: Option<u32>,
    /// Node 0's address for the others, HOST:PORT (node 0 listens on PORT).
    #[arg(long, value_name = "HOST:PORT", requires = "nodes")]
    coordinator: Option<String>,
    /// Where the other nodes reach this one, HOST:PORT (default: this machine's address towards the
    /// coordinator, port = coordinator port + 1 + node rank).
    #[arg(long, value_name = "HOST:PORT", requires = "nodes")]
    node_address: Option<String>,
    /// Seconds a peer waits for the others in one collective operation before it stops with an error
    /// (the main peer's evaluation and prototype pass happen while the others wait).
    #[arg(long, value_name = "SECONDS", default_value_t = hst_train::data_parallel::DEFAULT_TIMEOUT.as_secs())]
    collective_timeout: u64,
}

impl ParallelArgs {
    /// The nodes of a multi-machine run, if any.
    fn cluster(&self) -> Result<Option<Cluster>> {
        let Some(nodes) = self.nodes else {
            return Ok(None);
        };
        let resolve = |what: &str, addr: &str| -> Result<std::net::SocketAddr> {
            use std::net::ToSocketAddrs;
            addr.to_socket_addrs()
                .with_context(|| format!("{what} `{addr}` (HOST:PORT)"))?
                .next()
                .with_context(|| format!("{what} `{addr}` resolves to no address"))
        };
        let coordinator = resolve(
            "--coordinator",
            self.coordinator.as_deref().unwrap_or_default(),
        )?;
        let node_address = self
            .node_address
            .as_deref()
            .map(|a| resolve("--node-address", a))
            .transpose()?;
        Ok(Some(Cluster {
            nodes,
            node_rank: self.node_rank.unwrap_or_default(),
            coordinator,
            node_address,
        }))
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train HST (default: the embedded dataset at 30% known labels).
    Train {
        #[command(flatten)]
        config: ConfigArgs,
        /// Run folder (default: runs/<preset>-<time>).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Continue the run in --out from its last checkpoint.
        #[arg(long, requires = "out")]
        resume: bool,
        /// Replace the run already in --out (its checkpoints, metrics and report); without it an existing
        /// run folder is refused.
        #[arg(long, conflicts_with = "resume")]
        force: bool,
        /// Print the configuration as JSON and exit.
        #[arg(long)]
        print_config: bool,
        #[command(flatten)]
        parallel: ParallelArgs,
    },
    /// Evaluate a run's checkpoint on its test set.
    Eval {
        /// The run folder.
        #[arg(long, value_name = "DIR")]
        run: PathBuf,
        /// Which checkpoint.
        #[arg(long, value_enum, default_value = "best")]
        checkpoint: Checkpoint,
        /// Print the metrics as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Predict the labels of images with a run's checkpoint.
    Predict {
        /// The run folder.
        #[arg(long, value_name = "DIR")]
        run: PathBuf,
        /// Which checkpoint.
        #[arg(long, value_enum, default_value = "best")]
        checkpoint: Checkpoint,
        /// Show the classes whose probability is at least this (always at least the top one).
        #[arg(long, default_value_t = 0.5)]
        threshold: f32,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Image files.
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// Turn an HST checkpoint of the authors' PyTorch code (HCP-MLR-PL `HST.py`, e.g. Checkpoint_Best.pth)
    /// into a run folder for `eval`, `predict` and `train --resume`.
    Import {
        /// The reference checkpoint: `.pth` as the authors' code saves it (optionally wrapped in
        /// `state_dict` and `module.`), or `.safetensors` with the same keys.
        #[arg(long, value_name = "FILE")]
        reference: PathBuf,
        /// The configuration the checkpoint was trained with (architecture and dataset; required).
        #[command(flatten)]
        config: ConfigArgs,
        /// The new run folder.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Make or inspect partial-label files (CSV rows of -1/0/1, the reference's format).
    #[command(subcommand)]
    Labels(LabelsCommand),
    /// Write the embedded dataset as PNG files + CSV manifests.
    ExportDataset {
        /// Output folder.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Redraw the plots of a run folder from its metrics.jsonl.
    Report {
        /// The run folder.
        #[arg(long, value_name = "DIR")]
        run: PathBuf,
    },
    /// Benchmark a named configuration (paper, vg, voc-small, default) on the chosen backend.
    Bench(hst::bench::BenchArgs),
    /// Compile and autotune a configuration's GPU kernels ahead of training (results persist in the GPU cache).
    Warmup(hst::warmup::WarmupArgs),
    /// List the backends compiled into this binary and check that each can start here.
    Backends,
}

#[derive(Subcommand, Debug)]
enum LabelsCommand {
    /// Apply the reference protocol (numpy MT19937, keep iff u < p) to a full-label CSV or a configuration's
    /// training set, and write the partial labels.
    #[command(allow_negative_numbers = true)]
    Make {
        /// Full labels (CSV of -1/1); default: the training set of --preset/--config.
        #[arg(long, value_name = "FILE")]
        full: Option<PathBuf>,
        #[command(flatten)]
        config: ConfigArgs,
        /// Proportion of known labels.
        #[arg(long)]
        proportion: f64,
        /// Seed of the protocol.
        #[arg(long, default_value_t = 0)]
        seed: u32,
        /// Output CSV.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Print the statistics of a partial-label CSV.
    Inspect {
        /// The CSV.
        file: PathBuf,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Checkpoint {
    Best,
    Last,
}

impl Checkpoint {
    fn file(self) -> String {
        match self {
            Self::Best => "best.ckpt".into(),
            Self::Last => "last.ckpt".into(),
        }
    }
}

struct Probe;
impl BackendJob for Probe {
    type Output = ();
    fn run<B: burn::tensor::backend::AutodiffBackend>(self, _: BackendName, _: B::Device) {}
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn main() {
    keep_freed_memory();
    // Die quietly on a closed pipe (`hst labels inspect f.csv | head`) instead of panicking in println!.
    #[cfg(unix)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // A GPU runtime that finds no device panics while the backend is probed; the probe reports that as an
    // error, so its panic message is not printed.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !hst::backend::probing() {
            default_hook(info);
        }
    }));
    let cli = Cli::parse();
    init_logging(cli.verbose);
    if let Err(e) = run(cli) {
        eprintln!("error: {}", error_chain(&e));
        std::process::exit(1);
    }
}

/// The error and its causes, each cause left out when an earlier message already quotes it.
fn error_chain(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg.push_str(": ");
            msg.push_str(&c);
        }
    }
    msg
}

fn run(cli: Cli) -> Result<()> {
    let backend_given = cli.backend.is_some();
    let backend = cli.backend.unwrap_or(BackendName::Flex);
    backend.ensure_compiled()?;
    let command = cli.command.unwrap_or(Command::Train {
        config: ConfigArgs {
            preset: None,
            config: None,
            overrides: Vec::new(),
            baseline: false,
        },
        out: None,
        resume: false,
        force: false,
        print_config: false,
        parallel: ParallelArgs::default(),
    });
    // The GPU runtime policy (autotune level, persistent kernel and autotune caches) before any GPU tensor.
    let level = match &command {
        Command::Warmup(args) => args.autotune_level.as_deref(),
        _ => None,
    };
    let setup = hst::gpu_runtime::apply(level).map_err(anyhow::Error::msg)?;
    tracing::debug!(%setup, "GPU runtime");
    match command {
        Command::Train {
            config,
            out,
            resume,
            force,
            print_config,
            parallel,
        } => {
            let config = if resume {
                if config.preset.is_some() || config.config.is_some() || config.baseline {
                    bail!(
                        "--resume continues the run's saved configuration (config.json in --out); \
                         only --set may change it (e.g. --set epochs=30)"
                    );
                }
                let dir = out.as_ref().expect("clap requires --out with --resume");
                TrainConfig::load(&dir.join("config.json"))
                    .context("--resume")?
                    .with_overrides(&config.overrides)?
            } else {
                config.load()?
            };
            if print_config {
                println!("{}", config.to_json());
                return Ok(());
            }
            let devices = match &parallel.devices {
                Some(list) => {
                    if backend_given && list.backend != backend {
                        bail!(
                            "--backend {backend} and --devices {} name different backends; --devices alone is enough",
                            list.backend
                        );
                    }
                    list.clone()
                }
                None => DeviceList {
                    backend,
                    indices: vec![None],
                },
            };
            train(devices, &parallel, config, out, resume, force)
        }
        Command::Eval {
            run,
            checkpoint,
            json,
        } => {
            let config = TrainConfig::load(&run.join("config.json"))?;
            let data = hst_train::data::load(&config.data)?;
            let eval = run_on(
                backend,
                EvalJob {
                    run_dir: run.clone(),
                    checkpoint: checkpoint.file(),
                    data: &data,
                },
            )??;
            let m = &eval.metrics;
            if json {
                println!("{}", serde_json::to_string_pretty(m)?);
            } else {
                println!(
                    "{}: {} test images\nmAP {:.2}  averageAP {:.2}\nOP {:.2}  OR {:.2}  OF1 {:.2}  CP {:.2}  CR {:.2}  CF1 {:.2}\ntop-3: OF1 {:.2}  CF1 {:.2}",
                    run.join("checkpoints").join(checkpoint.file()).display(),
                    m.images,
                    100.0 * m.map,
                    100.0 * m.average_ap,
                    100.0 * m.op,
                    100.0 * m.or,
                    100.0 * m.of1,
                    100.0 * m.cp,
                    100.0 * m.cr,
                    100.0 * m.cf1,
                    100.0 * m.top3.of1,
                    100.0 * m.top3.cf1
                );
            }
            Ok(())
        }
        Command::Predict {
            run,
            checkpoint,
            threshold,
            json,
            images,
        } => {
            let predictions = run_on(
                backend,
                PredictJob {
                    run_dir: run,
                    checkpoint: checkpoint.file(),
                    images,
                },
            )??;
            if json {
                println!("{}", serde_json::to_string_pretty(&predictions)?);
            } else {
                for p in &predictions {
                    let shown: Vec<String> = p
                        .scores
                        .iter()
                        .enumerate()
                        .filter(|(i, (_, s))| *i == 0 || *s >= threshold)
                        .map(|(_, (c, s))| format!("{c} {s:.3}"))
                        .collect();
                    println!("{}\t{}", p.image.display(), shown.join(", "));
                }
            }
            Ok(())
        }
        Command::Import {
            reference,
            config,
            out,
        } => {
            if config.preset.is_none() && config.config.is_none() {
                bail!(
                    "hst import needs --preset or --config: the architecture and dataset the checkpoint \
                     was trained with (e.g. --preset voc for a VOC 2007 checkpoint)"
                );
            }
            let config = config.load()?;
            let data = hst_train::data::load(&config.data)?;
            let imported = run_on(
                backend,
                ImportJob {
                    config,
                    data: &data,
                    checkpoint: reference.clone(),
                    out,
                },
            )??;
            println!(
                "imported {} ({} classes; word vectors from {}, adjacency from {}) into {}\n\
                 evaluate with: hst eval --run {}",
                reference.display(),
                imported.classes,
                if imported.word_vectors_from_checkpoint {
                    "the checkpoint"
                } else {
                    "the dataset's source"
                },
                if imported.adjacency_from_checkpoint {
                    "the checkpoint"
                } else {
                    "the training labels"
                },
                imported.run_dir.display(),
                imported.run_dir.display()
            );
            Ok(())
        }
        Command::Labels(LabelsCommand::Make {
            full,
            config,
            proportion,
            seed,
            out,
        }) => {
            if !(0.0..=1.0).contains(&proportion) {
                bail!("--proportion must be in [0, 1], got {proportion}");
            }
            let (full, ids, names) = match full {
                Some(path) => {
                    let table = read_label_csv(&path)?;
                    (table.labels, table.ids, table.class_names)
                }
                None => {
                    let config = config.load()?;
                    let data = hst_train::data::load(&config.data)?;
                    let names = data.classes().to_vec();
                    (data.train.full_labels().clone(), None, Some(names))
                }
            };
            let labels = PartialLabels::from_protocol(full, proportion, seed);
            write_label_csv(&out, labels.partial(), ids.as_deref(), names.as_deref())?;
            print_stats(&out.display().to_string(), &labels.partial().stats());
            Ok(())
        }
        Command::Labels(LabelsCommand::Inspect { file }) => {
            let table = read_label_csv(&file)?;
            print_stats(&file.display().to_string(), &table.labels.stats());
            Ok(())
        }
        Command::ExportDataset { out } => {
            let data = EmbeddedDataset::load()?;
            let written = data.export(&out)?;
            for w in written {
                println!("wrote {}", w.display());
            }
            Ok(())
        }
        Command::Report { run } => {
            let path = run.join("metrics.jsonl");
            if !path.is_file() {
                anyhow::bail!("{} does not exist (not a run folder?)", path.display());
            }
            let records: Vec<_> = hst_train::trainer::read_logs(&run)?
                .into_iter()
                .map(|log| log.record)
                .collect();
            for p in write_report(&run.join("report"), &records, None)? {
                println!("wrote {}", p.display());
            }
            Ok(())
        }
        Command::Bench(args) => hst::bench::run_bench(&args, backend),
        Command::Warmup(args) => hst::warmup::run_warmup(&args, backend),
        Command::Backends => {
            for name in BackendName::ALL {
                match run_on(name, Probe) {
                    Ok(()) => println!("{name:8} ok"),
                    Err(e) => println!("{name:8} {e}"),
                }
            }
            Ok(())
        }
    }
}

fn print_stats(name: &str, s: &hst_data::LabelStats) {
    println!(
        "{name}: {} images x {} classes; known fraction {:.4} ({} positives, {} negatives); \
         {} images with no known label; {} ({:.1}%) with >= 1 known positive",
        s.images,
        s.classes,
        s.known_fraction,
        s.positives,
        s.negatives,
        s.images_without_known,
        s.images_with_known_positive,
        100.0 * s.images_with_known_positive as f64 / s.images.max(1) as f64
    );
    println!("known positives per class: {:?}", s.positives_per_class);
}

fn train(
    devices: DeviceList,
    parallel: &ParallelArgs,
    config: TrainConfig,
    out: Option<PathBuf>,
    resume: bool,
    force: bool,
) -> Result<()> {
    let backend = devices.backend;
    let cluster = parallel.cluster()?;
    let out = out.unwrap_or_else(|| default_run_dir(&config.preset));
    if let Some(reason) = hst::backend::unverified_reason(backend, &config.model.trunk) {
        eprintln!("warning: this configuration is not verified on {backend}: {reason}");
    }
    let data = hst_train::data::load(&config.data)?;
    let stats = data.partial.partial().stats();
    eprintln!(
        "hst: {} on {} ({} train / {} test images, {} classes, {:.0}% known labels), backend {backend}, run folder {}",
        if config.model.ablation.partial_bce_only { "partial-BCE baseline" } else { "HST" },
        config.preset,
        data.train.len(),
        data.test.len(),
        data.classes().len(),
        100.0 * stats.known_fraction,
        out.display()
    );
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        // SIGINT, SIGTERM and SIGHUP (ctrlc's `termination` feature): a scheduler's or `kill`'s stop saves too.
        ctrlc::set_handler(move || {
            if stop.swap(true, Ordering::SeqCst) {
                eprintln!("\nsecond interrupt: exiting without saving");
                std::process::exit(130);
            }
            eprintln!(
                "\ninterrupted (Ctrl-C or SIGTERM): saving a checkpoint after this batch (interrupt again to exit at once)"
            );
        })
        .context("installing the interrupt handler")?;
    }
    let mut observer = ProgressObserver::new(config.epochs);
    if devices.indices.len() > 1 || cluster.is_some() {
        let world = devices.indices.len() * cluster.as_ref().map_or(1, |c| c.nodes as usize);
        eprintln!(
            "hst: data-parallel, {world} peers ({} on this node{}), batch {} = {world} shares of {}",
            devices.indices.len(),
            cluster
                .as_ref()
                .map(|c| format!(", node {} of {}, coordinator {}", c.node_rank, c.nodes, c.coordinator))
                .unwrap_or_default(),
            config.batch_size,
            config.batch_size / world.max(1)
        );
    }
    let summary = run_on_devices(
        &devices,
        TrainJob {
            config,
            data: &data,
            out: out.clone(),
            resume,
            overwrite: force,
            stop,
            observer: &mut observer,
            cluster,
            timeout: std::time::Duration::from_secs(parallel.collective_timeout),
        },
    )??;
    drop(observer);
    if summary.interrupted {
        println!(
            "interrupted; resume with: hst train --resume --out {}",
            summary.run_dir.display()
        );
        return Ok(());
    }
    if let Some(m) = &summary.last {
        println!(
            "done in {:.0} s: last epoch mAP {:.2}  OF1 {:.2}  CF1 {:.2}",
            summary.seconds,
            100.0 * m.map,
            100.0 * m.of1,
            100.0 * m.cf1
        );
    }
    if let Some((map, epoch)) = summary.best {
        println!("best mAP {:.2} at epoch {epoch}", 100.0 * map);
    }
    println!(
        "run folder: {} (metrics.csv, report/*.png, checkpoints/)",
        summary.run_dir.display()
    );
    Ok(())
}
