//! Benchmarks shared by `benches/` and the `hst bench` command.
//!
//! [`run_bench`] measures the whole HST model — trunk, SARL, IST head and every loss term — for named
//! configurations ([`BenchPreset`]: `paper`, `vg`, `voc-small`, `default`) on one backend:
//!
//! - the training step (forward, losses, backward, Adam step on `Autodiff<B>`), timed per phase;
//! - inference (`model.valid()`, the inner backend);
//! - data preparation with the real [`HstBatcher`] (embedded mosaics, or synthetic JPEGs decoded per image),
//!   timed on its own so that a fast device is not starved by decoding;
//! - host peak memory (`VmHWM`) and, on an NVIDIA device, device memory sampled with `nvidia-smi`.
//!
//! Model inputs are random tensors with random partial labels; the loss runs at a post-warm-up epoch with
//! prototypes present, so every term of the objective (partial BCE, IST ASL/BCE/DTL, instance, prototype,
//! CST BCE/DTL) is computed. Every measurement warms up first (GPU backends autotune and compile kernels
//! during the first steps) and synchronises the device before reading the clock.
//!
//! [`check_reference`] / [`check_compare`] run the same seeded model and input on two backends (the weights
//! travel as a record in bytes) and compare logits, every loss term, every parameter gradient and the
//! inference logits.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::{decay::WeightDecayConfig, AdamConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Distribution;
use hst_backbone::trunk::{BlockKind, TrunkConfig, TrunkKind};
use hst_data::rng::SeededRng;
use hst_data::{
    BatchMode, DataError, EmbeddedConfig, HstBatcher, LabelMatrix, MultiLabelSource,
    TransformConfig,
};
use hst_train::config::DataSource;
use hst_train::trainer::resolve_model_config;
use hst_train::TrainConfig;
use hst_transfer::{BatchLabels, Hst, HstLosses, Prototypes, ScheduleStep};

use crate::backend::{run_on, BackendJob, BackendName};

/// The Burn version this binary is built on (pinned in the workspace).
pub const BURN_VERSION: &str = "0.21.0";

/// The element type of every benchmark.
pub const DTYPE: &str = "f32";

// ---------------------------------------------------------------------------------------------------------
// Trunk-only benchmark (benches/trunk.rs)
// ---------------------------------------------------------------------------------------------------------

/// One measured row of a [`TrunkBench`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchRow {
    /// Benchmark name, shapes included (`trunk-forward/resnet50-224-b8`).
    pub name: String,
    /// Backend that ran it.
    pub backend: BackendName,
    /// Images per second.
    pub images_per_second: f64,
    /// Mean seconds per iteration.
    pub seconds_per_iteration: f64,
    /// Timed iterations.
    pub iterations: usize,
}

impl BenchRow {
    /// A Markdown table row: `| name | backend | img/s | s/iter | iterations |`.
    pub fn markdown(&self) -> String {
        format!(
            "| {} | {} | {:.2} | {:.4} | {} |",
            self.name,
            self.backend,
            self.images_per_second,
            self.seconds_per_iteration,
            self.iterations
        )
    }
}

/// Run `step` `warmup` times, then time it until `iterations` runs and at least `min_time` have passed.
/// `step` must synchronise the device itself (e.g. by reading a value back).
pub fn time_steps(
    warmup: usize,
    iterations: usize,
    min_time: Duration,
    mut step: impl FnMut(),
) -> (usize, Duration) {
    for _ in 0..warmup {
        step();
    }
    let start = Instant::now();
    let mut n = 0;
    while n < iterations || start.elapsed() < min_time {
        step();
        n += 1;
    }
    (n, start.elapsed())
}

/// Forward-only throughput of a trunk (inference: no autodiff graph), or a training step
/// (forward + mean-of-features loss + backward) when `train` is set.
#[derive(Debug, Clone)]
pub struct TrunkBench {
    /// Benchmark name.
    pub name: String,
    /// The trunk.
    pub trunk: TrunkConfig,
    /// Input side in pixels.
    pub image_size: usize,
    /// Batch size.
    pub batch: usize,
    /// Time a training step instead of an inference forward.
    pub train: bool,
    /// Timed iterations (at least).
    pub iterations: usize,
}

impl BackendJob for TrunkBench {
    type Output = BenchRow;

    fn run<B: AutodiffBackend>(self, backend: BackendName, device: B::Device) -> BenchRow {
        let shape = [self.batch, 3, self.image_size, self.image_size];
        let (n, elapsed) = if self.train {
            let trunk = self.trunk.init::<B>(&device);
            let input = Tensor::<B, 4>::random(shape, Distribution::Default, &device);
            time_steps(1, self.iterations, Duration::from_secs(2), || {
                let loss = trunk.forward(input.clone()).mean();
                let _grads = loss.backward();
                // GPU work is asynchronous: wait for it before the clock is read.
                let _ = B::sync(&device);
            })
        } else {
            let trunk = self.trunk.init::<B>(&device).valid();
            let input = Tensor::<B::InnerBackend, 4>::random(shape, Distribution::Default, &device);
            time_steps(1, self.iterations, Duration::from_secs(2), || {
                let _ = trunk.forward(input.clone()).mean().into_scalar();
            })
        };
        let per_iter = elapsed.as_secs_f64() / n as f64;
        BenchRow {
            name: self.name,
            backend,
            images_per_second: self.batch as f64 / per_iter,
            seconds_per_iteration: per_iter,
            iterations: n,
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Configurations
// ---------------------------------------------------------------------------------------------------------

/// The named benchmark configurations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BenchPreset {
    /// The paper's COCO setting: ResNet-101 at 448, conv1…layer3 frozen, batch 32, 80 classes.
    Paper,
    /// The same with 200 classes (VG-200).
    Vg,
    /// EfficientNet-Lite0 at 224 (stages 1–3 frozen), batch 32, 20 classes (VOC); random weights.
    VocSmall,
    /// The embedded main job (`TrainConfig::embedded()`): ResNet-10 width 16 at 64 px, batch 32, 20 classes.
    Default,
}

impl BenchPreset {
    /// Every preset.
    pub const ALL: [BenchPreset; 4] = [Self::Paper, Self::Vg, Self::VocSmall, Self::Default];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Paper => "paper",
            Self::Vg => "vg",
            Self::VocSmall => "voc-small",
            Self::Default => "default",
        }
    }

    /// The benchmark of this preset with its default sizes and step counts.
    pub fn spec(self) -> BenchSpec {
        let (config, classes, warmup, steps) = match self {
            Self::Paper => (TrainConfig::coco(), 80, 2, 5),
            Self::Vg => (TrainConfig::vg(), 200, 2, 5),
            Self::VocSmall => {
                let mut c = TrainConfig::voc_lite0();
                // Random weights: the benchmark must not depend on ../shared.
                c.pretrained = None;
                (c, 20, 2, 5)
            }
            Self::Default => (TrainConfig::embedded(), 20, 3, 10),
        };
        BenchSpec {
            name: self.name().to_string(),
            batch: config.batch_size,
            image_size: config.data.transform.image_size as usize,
            config,
            classes,
            warmup,
            steps,
            data_batches: 3,
            infer: true,
            data: true,
            seed: 0,
        }
    }
}

/// One benchmark: a training configuration (model, optimiser, transform) and the shapes it runs at.
#[derive(Debug, Clone)]
pub struct BenchSpec {
    /// Configuration name (`paper`, …).
    pub name: String,
    /// Model, optimiser and image transform.
    pub config: TrainConfig,
    /// Number of classes.
    pub classes: usize,
    /// Batch size.
    pub batch: usize,
    /// Input side in pixels (the transform's output size).
    pub image_size: usize,
    /// Untimed training (and inference) steps before the clock starts.
    pub warmup: usize,
    /// Timed training (and inference) steps.
    pub steps: usize,
    /// Timed data-preparation batches (one more is run first, untimed).
    pub data_batches: usize,
    /// Measure inference.
    pub infer: bool,
    /// Measure data preparation.
    pub data: bool,
    /// Seed of the weights and of the random inputs.
    pub seed: u64,
}

impl BenchSpec {
    /// Word-vector dimension of the configuration.
    pub fn embed_dim(&self) -> usize {
        self.config.model.sarl.embed_dim
    }

    /// Change the input size (the transform becomes the reference's scaled to `size`, same normalisation).
    pub fn with_image_size(mut self, size: usize) -> Self {
        if size != self.image_size {
            let normalization = self.config.data.transform.normalization;
            self.config.data.transform =
                TransformConfig::scaled(size as u32).with_normalization(normalization);
            self.image_size = size;
        }
        self
    }

    /// Short trunk name: `resnet101`, `resnet10-w16`, `efficientnet-lite0`.
    pub fn trunk_name(&self) -> String {
        let trunk = &self.config.model.trunk;
        let base = match &trunk.kind {
            TrunkKind::ResNet(layout) => {
                let per_block = match layout.block {
                    BlockKind::Basic => 2,
                    _ => 3,
                };
                format!(
                    "resnet{}",
                    2 + per_block * layout.layers.iter().sum::<usize>()
                )
            }
            TrunkKind::EfficientNetLite(n) => format!("efficientnet-lite{n}"),
        };
        if trunk.base_width == 64 {
            base
        } else {
            format!("{base}-w{}", trunk.base_width)
        }
    }

    /// The `ScheduleStep` the losses run at: past the pseudo-label epoch, so every term is active.
    pub fn schedule_step(&self) -> ScheduleStep {
        ScheduleStep {
            epoch: self.config.model.schedule.pseudo_label_epoch.max(5),
            batch_index: 1,
            batches_per_epoch: 100,
        }
    }

    fn uses_embedded_data(&self) -> bool {
        matches!(self.config.data.source, DataSource::Embedded { .. })
    }
}

// ---------------------------------------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------------------------------------

/// Arguments of `hst bench`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Configurations to measure, comma-separated: paper (ResNet-101, 448, batch 32, 80 classes),
    /// vg (the same, 200 classes), voc-small (EfficientNet-Lite0, 224, batch 32, 20 classes),
    /// default (the embedded main job).
    #[arg(
        long = "config",
        value_enum,
        value_delimiter = ',',
        default_value = "default,voc-small"
    )]
    pub configs: Vec<BenchPreset>,
    /// Batch size (overrides the configuration's).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Input side in pixels (overrides the configuration's).
    #[arg(long, value_name = "PIXELS")]
    pub image_size: Option<usize>,
    /// Number of classes (overrides the configuration's: 80, 200, 20, 20).
    #[arg(long)]
    pub classes: Option<usize>,
    /// Timed steps (default per configuration: paper/vg/voc-small 5, default 10).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Untimed warm-up steps (default per configuration: 2, or 3 for default). With `--warmup 0` the
    /// first (autotuning) step is timed.
    #[arg(long)]
    pub warmup: Option<usize>,
    /// Frozen trunk stages (overrides the configuration's; the paper freezes 3).
    #[arg(long)]
    pub frozen_stages: Option<usize>,
    /// Timed data-preparation batches.
    #[arg(long, default_value_t = 3)]
    pub data_batches: usize,
    /// Skip the data-preparation measurement.
    #[arg(long)]
    pub no_data: bool,
    /// Skip the inference measurement.
    #[arg(long)]
    pub no_infer: bool,
    /// Append one JSON object per configuration (JSON Lines) to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Append one Markdown table row per configuration to this file (a header first if the file is new).
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,
    /// Instead of benchmarking, check that `--backend` agrees with `--check-against` on the same weights and
    /// input (logits, every loss term, every gradient, inference logits), at batch `--check-batch`.
    #[arg(long)]
    pub check: bool,
    /// Reference backend of `--check`.
    #[arg(long, value_enum, default_value = "flex")]
    pub check_against: BackendName,
    /// Batch size of `--check`.
    #[arg(long, default_value_t = 2)]
    pub check_batch: usize,
    /// Largest accepted relative difference in `--check`: max|a − b| / max|b| per output, ‖a − b‖ / ‖b‖ per
    /// gradient group.
    #[arg(long, default_value_t = 1e-3)]
    pub tolerance: f64,
    /// Largest accepted ‖a − b‖ / ‖b‖ of a gradient group in `--check` (ReLU kinks make gradients far more
    /// sensitive to rounding than outputs; see `compare_outputs`).
    #[arg(long, default_value_t = 5e-2)]
    pub grad_tolerance: f64,
    /// GPU name for the report when `nvidia-smi` cannot tell it.
    #[arg(long)]
    pub gpu_name: Option<String>,
    /// Seed of the weights and inputs.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Instead of the step benchmark, time each module's forward and backward (trunk frozen and trainable
    /// parts, SARL's parts, IST head, losses, optimizer) and print one table per configuration.
    #[arg(long, conflicts_with = "check")]
    pub profile: bool,
}

impl BenchArgs {
    /// The benchmark specs the arguments select, overrides applied.
    ///
    /// # Errors
    /// A zero batch, size, class count or step count, or more than 4 frozen stages.
    pub fn specs(&self) -> Result<Vec<BenchSpec>> {
        for (what, v) in [("--classes", self.classes), ("--steps", self.steps)] {
            if v == Some(0) {
                bail!("{what} must be at least 1");
            }
        }
        if self.classes == Some(1) {
            bail!("--classes must be at least 2 (IST works on class pairs)");
        }
        if self.frozen_stages.is_some_and(|k| k > 4) {
            bail!("--frozen-stages must be in 0..=4");
        }
        if self.check_batch < 2 {
            bail!(
                "--check-batch must be at least 2 (BatchNorm and the instance loss need 2 images)"
            );
        }
        let mut specs = Vec::new();
        for preset in &self.configs {
            let mut spec = sized_spec(*preset, self.image_size, self.batch)?;
            if let Some(c) = self.classes {
                spec.classes = c;
            }
            if let Some(s) = self.steps {
                spec.steps = s;
            }
            if let Some(w) = self.warmup {
                spec.warmup = w;
            }
            if let Some(k) = self.frozen_stages {
                spec.config.model.trunk.frozen_stages = k;
            }
            spec.data_batches = self.data_batches.max(1);
            spec.data = !self.no_data;
            spec.infer = !self.no_infer;
            spec.seed = self.seed;
            specs.push(spec);
        }
        Ok(specs)
    }
}

/// `preset`'s benchmark configuration with the `--image-size` and `--batch` overrides, checked.
///
/// # Errors
/// A batch of 0 or an image side under 32 pixels.
pub(crate) fn sized_spec(
    preset: BenchPreset,
    image_size: Option<usize>,
    batch: Option<usize>,
) -> Result<BenchSpec> {
    if batch == Some(0) {
        bail!("--batch must be at least 1");
    }
    let mut spec = preset.spec();
    if let Some(size) = image_size {
        if size < 32 {
            bail!("--image-size must be at least 32 (the trunk downsamples 32×), got {size}");
        }
        spec = spec.with_image_size(size);
    }
    if let Some(b) = batch {
        spec.batch = b;
    }
    Ok(spec)
}

/// `hst bench`: measure the selected configurations on `backend` (or `--check` it against another backend),
/// print Markdown rows and append them to `--markdown`/`--json`.
///
/// # Errors
/// Bad arguments, a backend that cannot start, a non-finite loss, an output file that cannot be written, or
/// (with `--check`) a difference above the tolerance.
pub fn run_bench(args: &BenchArgs, backend: BackendName) -> Result<()> {
    let specs = args.specs()?;
    if args.check {
        return run_checks(args, backend, &specs);
    }
    if args.profile {
        for spec in &specs {
            let report = run_on(backend, crate::profile::ProfileJob { spec })?
                .with_context(|| format!("profile `{}` on {backend}", spec.name))?;
            println!("{}", report.markdown());
            if let Some(path) = &args.markdown {
                append_line(path, &report.markdown())?;
            }
            if let Some(path) = &args.json {
                append_line(path, &serde_json::to_string(&report)?)?;
            }
        }
        return Ok(());
    }
    println!("{}", BenchResult::markdown_header());
    for spec in &specs {
        let job = BenchJob {
            spec,
            gpu_name: args.gpu_name.clone(),
        };
        let result = run_on(backend, job)?
            .with_context(|| format!("benchmark `{}` on {backend}", spec.name))?;
        println!("{}", result.markdown_row());
        if let Some(path) = &args.markdown {
            append_markdown(path, &result.markdown_row())?;
        }
        if let Some(path) = &args.json {
            append_line(path, &serde_json::to_string(&result)?)?;
        }
    }
    Ok(())
}

fn run_checks(args: &BenchArgs, backend: BackendName, specs: &[BenchSpec]) -> Result<()> {
    let tolerance = CheckTolerance {
        outputs: args.tolerance,
        gradients: args.grad_tolerance,
    };
    let mut failed = Vec::new();
    for spec in specs {
        let mut spec = spec.clone();
        spec.batch = args.check_batch;
        eprintln!(
            "check {}: {} vs {} ({}, {} px, batch {}, {} classes)",
            spec.name,
            backend,
            args.check_against,
            spec.trunk_name(),
            spec.image_size,
            spec.batch,
            spec.classes
        );
        let reference = run_on(args.check_against, CheckReferenceJob { spec: &spec })?
            .with_context(|| {
                format!("check `{}`: reference on {}", spec.name, args.check_against)
            })?;
        let items = run_on(
            backend,
            CheckCompareJob {
                spec: &spec,
                reference: &reference,
                tolerance,
            },
        )?
        .with_context(|| format!("check `{}` on {backend}", spec.name))?;
        let report = CheckReport {
            kind: "check",
            config: spec.name.clone(),
            backend,
            reference: args.check_against,
            burn: BURN_VERSION,
            dtype: DTYPE,
            machine: MachineInfo::detect(backend, None, args.gpu_name.clone()),
            image_size: spec.image_size,
            batch: spec.batch,
            classes: spec.classes,
            tolerance,
            passed: items.iter().all(|i| i.passed),
            items,
        };
        println!("{}", report.markdown());
        if let Some(path) = &args.json {
            append_line(path, &serde_json::to_string(&report)?)?;
        }
        if !report.passed {
            failed.push(spec.name.clone());
        }
    }
    if !failed.is_empty() {
        bail!(
            "{backend} disagrees with {} beyond the tolerance ({} for outputs, {} for gradients) on: {}",
            args.check_against,
            args.tolerance,
            args.grad_tolerance,
            failed.join(", ")
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------------------------------------

/// Where a benchmark ran.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MachineInfo {
    /// CPU model (`/proc/cpuinfo`).
    pub cpu: String,
    /// Logical CPUs available to the process.
    pub cores: usize,
    /// GPU name (`nvidia-smi`, `--gpu-name`, else the device's Debug string); `None` on CPU backends.
    pub gpu: Option<String>,
    /// 1-minute load average when the measurement ended (`/proc/loadavg`): other work on the machine.
    pub load_average: Option<f64>,
}

impl MachineInfo {
    /// Detect the machine; `device` is the device's Debug string (used as the GPU name of last resort).
    pub fn detect(backend: BackendName, device: Option<&str>, gpu_name: Option<String>) -> Self {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let gpu = is_gpu(backend).then(|| {
            nvidia_smi_query("name")
                .or(gpu_name)
                .or_else(|| device.map(str::to_string))
                .unwrap_or_else(|| "unknown".into())
        });
        let load_average = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok());
        Self {
            cpu,
            cores,
            gpu,
            load_average,
        }
    }
}

fn is_gpu(backend: BackendName) -> bool {
    matches!(
        backend,
        BackendName::Wgpu | BackendName::Vulkan | BackendName::Cuda
    )
}

/// Mean seconds per step of each phase of a training step (each phase ends with a device sync).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PhaseSeconds {
    /// Data preparation of one batch (decode, augment, normalise, upload), measured separately.
    pub data: Option<f64>,
    /// `Hst::forward`.
    pub forward: f64,
    /// `Hst::losses` (pseudo labels and every loss term).
    pub loss: f64,
    /// `backward()`.
    pub backward: f64,
    /// `GradientsParams::from_grads` and the Adam step.
    pub optimizer: f64,
}

/// Device memory sampled during a benchmark.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeviceMemory {
    /// How it was measured.
    pub source: String,
    /// Memory in use on the device before the model was built (after the backend started), bytes.
    pub baseline_bytes: u64,
    /// Highest memory in use on the device while the benchmark ran, bytes.
    pub peak_bytes: u64,
}

/// The measurements of one configuration on one backend and device.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchResult {
    /// Always `"bench"` (check reports say `"check"`).
    pub kind: &'static str,
    /// Configuration name.
    pub config: String,
    /// Backend name (`flex`, `cuda`, …).
    pub backend: BackendName,
    /// Burn's name of the backend type.
    pub backend_type: String,
    /// The device's Debug string.
    pub device: String,
    /// Burn version.
    pub burn: &'static str,
    /// Element type.
    pub dtype: &'static str,
    /// CPU, cores, GPU.
    pub machine: MachineInfo,
    /// Trunk name.
    pub trunk: String,
    /// Frozen trunk stages.
    pub frozen_stages: usize,
    /// Input side.
    pub image_size: usize,
    /// Batch size.
    pub batch: usize,
    /// Classes.
    pub classes: usize,
    /// Untimed warm-up steps.
    pub warmup: usize,
    /// Timed steps.
    pub steps: usize,
    /// Seconds to build the model, optimiser and inputs.
    pub setup_seconds: f64,
    /// Seconds of the first training step (kernel compilation and autotuning on GPU backends).
    pub first_step_seconds: f64,
    /// Training images per second (forward + losses + backward + optimiser step).
    pub train_images_per_second: f64,
    /// Mean seconds per training step.
    pub train_step_seconds: f64,
    /// Inference images per second (`model.valid()`).
    pub infer_images_per_second: Option<f64>,
    /// Data-preparation images per second.
    pub data_images_per_second: Option<f64>,
    /// Seconds per phase.
    pub phases: PhaseSeconds,
    /// The total loss of the last step (finite).
    pub last_loss: f64,
    /// Peak resident memory of the process (`VmHWM`), bytes, reset at the start of the configuration when
    /// the kernel allows it (`/proc/self/clear_refs`).
    pub host_peak_rss_bytes: Option<u64>,
    /// Whether `host_peak_rss_bytes` is this configuration's alone (the reset worked).
    pub host_peak_rss_reset: bool,
    /// Device memory (`None` where not measurable: CPU backends, non-NVIDIA devices).
    pub device_memory: Option<DeviceMemory>,
    /// Unix time of the measurement.
    pub unix_time: u64,
}

impl BenchResult {
    /// Header of the Markdown table of [`BenchResult::markdown_row`].
    pub fn markdown_header() -> &'static str {
        "| config | backend | device | trunk (frozen) | size | batch | classes | train img/s | infer img/s | \
         data img/s | forward s | loss s | backward s | optim s | first step s | host peak RSS | device peak | \
         steps (warm-up) |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    }

    /// One Markdown table row.
    pub fn markdown_row(&self) -> String {
        let opt = |v: Option<f64>, digits: usize| match v {
            Some(v) => format!("{v:.digits$}"),
            None => "n/a".into(),
        };
        let load = self
            .machine
            .load_average
            .map(|l| format!(", load {l:.1}"))
            .unwrap_or_default();
        let device = match &self.machine.gpu {
            Some(gpu) => format!("{gpu} ({} CPU cores{load})", self.machine.cores),
            None => format!("{} ({} cores{load})", self.machine.cpu, self.machine.cores),
        };
        let device_memory = match &self.device_memory {
            Some(m) => format!(
                "{} (+{})",
                human_bytes(m.peak_bytes),
                human_bytes(m.peak_bytes.saturating_sub(m.baseline_bytes))
            ),
            None => "n/a".into(),
        };
        format!(
            "| {} | {} | {} | {} ({}) | {} | {} | {} | {:.2} | {} | {} | {:.4} | {:.4} | {:.4} | {:.4} | {:.2} | {} | {} | {} ({}) |",
            self.config,
            self.backend,
            device,
            self.trunk,
            self.frozen_stages,
            self.image_size,
            self.batch,
            self.classes,
            self.train_images_per_second,
            opt(self.infer_images_per_second, 2),
            opt(self.data_images_per_second, 1),
            self.phases.forward,
            self.phases.loss,
            self.phases.backward,
            self.phases.optimizer,
            self.first_step_seconds,
            self.host_peak_rss_bytes
                .map(human_bytes)
                .unwrap_or_else(|| "n/a".into()),
            device_memory,
            self.steps,
            self.warmup
        )
    }
}

fn human_bytes(bytes: u64) -> String {
    let gib = bytes as f64 / (1u64 << 30) as f64;
    if gib >= 1.0 {
        format!("{gib:.2} GiB")
    } else {
        format!("{:.0} MiB", bytes as f64 / (1u64 << 20) as f64)
    }
}

fn append_line(path: &Path, line: &str) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    writeln!(file, "{line}").with_context(|| format!("writing {}", path.display()))
}

fn append_markdown(path: &Path, row: &str) -> Result<()> {
    let empty = std::fs::metadata(path)
        .map(|m| m.len() == 0)
        .unwrap_or(true);
    if empty {
        append_line(path, BenchResult::markdown_header())?;
    }
    append_line(path, row)
}

// ---------------------------------------------------------------------------------------------------------
// Memory
// ---------------------------------------------------------------------------------------------------------

/// Peak resident memory of this process (`VmHWM` in `/proc/self/status`), bytes.
pub fn host_peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Reset `VmHWM` to the current RSS (Linux ≥ 4.0: write 5 to `/proc/self/clear_refs`). False if refused.
pub fn reset_host_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// One `nvidia-smi --query-gpu=<field>` value of GPU 0, if `nvidia-smi` runs.
fn nvidia_smi_query(field: &str) -> Option<String> {
    let out = Command::new("nvidia-smi")
        .args([
            &format!("--query-gpu={field}"),
            "--format=csv,noheader,nounits",
            "--id=0",
        ])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!text.is_empty()).then_some(text)
}

/// Samples the memory in use on GPU 0 every 100 ms with `nvidia-smi` (device-wide: includes the CUDA/Vulkan
/// context and any other process).
struct GpuMemoryMonitor {
    child: Child,
    peak_mib: Arc<AtomicU64>,
    reader: Option<JoinHandle<()>>,
    baseline_mib: u64,
}

impl GpuMemoryMonitor {
    fn start() -> Option<Self> {
        let baseline_mib: u64 = nvidia_smi_query("memory.used")?.parse().ok()?;
        let mut child = Command::new("nvidia-smi")
            .args([
                "--query-gpu=memory.used",
                "--format=csv,noheader,nounits",
                "--id=0",
                "-lms",
                "100",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let stdout = child.stdout.take()?;
        let peak_mib = Arc::new(AtomicU64::new(baseline_mib));
        let peak = peak_mib.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = line.trim().parse::<u64>() {
                    peak.fetch_max(v, Ordering::Relaxed);
                }
            }
        });
        Some(Self {
            child,
            peak_mib,
            reader: Some(reader),
            baseline_mib,
        })
    }

    fn stop(mut self) -> DeviceMemory {
        // One last sample, then stop the sampler (this process started it).
        if let Some(v) = nvidia_smi_query("memory.used").and_then(|v| v.parse::<u64>().ok()) {
            self.peak_mib.fetch_max(v, Ordering::Relaxed);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        DeviceMemory {
            source: "nvidia-smi memory.used of GPU 0, sampled every 100 ms (device-wide)".into(),
            baseline_bytes: self.baseline_mib << 20,
            peak_bytes: self.peak_mib.load(Ordering::Relaxed) << 20,
        }
    }
}

impl Drop for GpuMemoryMonitor {
    fn drop(&mut self) {
        if self.reader.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Random inputs
// ---------------------------------------------------------------------------------------------------------

/// Partial labels `[rows, classes]`: each entry known with probability 0.3 (the paper's main setting),
/// a known entry positive with probability 0.1; at least one known positive per row.
pub fn partial_labels(rng: &mut SeededRng, rows: usize, classes: usize) -> Vec<f32> {
    let mut labels = vec![0f32; rows * classes];
    for r in 0..rows {
        for c in 0..classes {
            if rng.next_f32() < 0.3 {
                labels[r * classes + c] = if rng.next_f32() < 0.1 { 1.0 } else { -1.0 };
            }
        }
        let c = (rng.next_u64() % classes as u64) as usize;
        labels[r * classes + c] = 1.0;
    }
    labels
}

/// The model's constants and the prototypes, generated on the host (same values on every backend).
#[derive(Debug, Clone)]
pub struct BenchConstants {
    /// `[classes, embed_dim]`.
    pub word_vectors: Vec<f32>,
    /// `[classes, classes]`, in [0, 1).
    pub adjacency: Vec<f32>,
    /// Prototype centers `[classes, k, dim]`.
    pub prototype_centers: Vec<f32>,
    /// Prototype slots per class.
    pub prototypes: usize,
    /// Feature dimension of the prototypes.
    pub feature_dim: usize,
}

impl BenchConstants {
    /// Constants for `spec` (deterministic in `spec.seed`).
    pub fn of(spec: &BenchSpec) -> Self {
        let c = spec.classes;
        let mut rng = SeededRng::from_parts(&[spec.seed, 1]);
        let word_vectors = rng.normals(c * spec.embed_dim());
        let adjacency = (0..c * c).map(|_| rng.next_f32()).collect();
        let k = spec.config.model.cst.prototypes.max(1);
        let feature_dim = spec.config.model.sarl.feature_dim;
        let prototype_centers = rng.normals(c * k * feature_dim);
        Self {
            word_vectors,
            adjacency,
            prototype_centers,
            prototypes: k,
            feature_dim,
        }
    }

    /// The prototypes on `device` (every slot valid).
    pub fn prototypes<B: Backend>(&self, classes: usize, device: &B::Device) -> Prototypes<B> {
        let (k, d) = (self.prototypes, self.feature_dim);
        Prototypes {
            centers: Tensor::from_data(
                TensorData::new(self.prototype_centers.clone(), [classes, k, d]),
                device,
            ),
            valid: Tensor::ones([classes, k], device),
        }
    }
}

/// Build the benchmark model of `spec` on `device`: `resolve_model_config` + `HstConfig::init` with the
/// host-generated word vectors and adjacency (seeded by `spec.seed`).
pub fn build_model<B: Backend>(
    spec: &BenchSpec,
    constants: &BenchConstants,
    device: &B::Device,
) -> Hst<B> {
    B::seed(device, spec.seed);
    let c = spec.classes;
    let config = resolve_model_config::<B>(&spec.config, c, spec.embed_dim(), device);
    let wv = Tensor::from_data(
        TensorData::new(constants.word_vectors.clone(), [c, spec.embed_dim()]),
        device,
    );
    let adj = Tensor::from_data(TensorData::new(constants.adjacency.clone(), [c, c]), device);
    config.init::<B>(wv, adj, device)
}

/// The random inputs of a benchmark step: images `[batch, 3, size, size]` (N(0, 1)), partial labels
/// `[batch, classes]` in {−1, 0, 1} (seeded host stream 3) and the fixed prototypes.
pub(crate) fn bench_inputs<B: Backend>(
    spec: &BenchSpec,
    constants: &BenchConstants,
    device: &B::Device,
) -> (Tensor<B, 4>, BatchLabels<B>, Prototypes<B>) {
    let shape = [spec.batch, 3, spec.image_size, spec.image_size];
    let images = Tensor::<B, 4>::random(shape, Distribution::Normal(0.0, 1.0), device);
    let mut rng = SeededRng::from_parts(&[spec.seed, 3]);
    // With the host copy, as the trainer passes them: a step then reads nothing back from the device.
    let partial = BatchLabels::from_host(
        partial_labels(&mut rng, spec.batch, spec.classes),
        [spec.batch, spec.classes],
        device,
    )
    .expect("the labels have batch · classes values");
    (
        images,
        partial,
        constants.prototypes::<B>(spec.classes, device),
    )
}

pub(crate) fn adam<B: AutodiffBackend>(config: &TrainConfig) -> impl Optimizer<Hst<B>, B> {
    let opt = &config.optimizer;
    AdamConfig::new()
        .with_beta_1(opt.beta1)
        .with_beta_2(opt.beta2)
        .with_epsilon(opt.epsilon)
        .with_weight_decay(Some(WeightDecayConfig::new(opt.weight_decay as f32)))
        .init::<B, Hst<B>>()
}

pub(crate) fn sync<B: Backend>(device: &B::Device) -> Result<()> {
    B::sync(device).map_err(|e| anyhow::anyhow!("device sync failed: {e}"))
}

// ---------------------------------------------------------------------------------------------------------
// Synthetic JPEG source
// ---------------------------------------------------------------------------------------------------------

/// A dataset of synthetic 500×375 JPEGs (VOC/COCO-sized), decoded on every access like real files, with
/// random full labels. Measures the data pipeline without any dataset on disk.
pub struct SyntheticJpegs {
    classes: Vec<String>,
    labels: LabelMatrix,
    jpegs: Vec<Vec<u8>>,
}

impl SyntheticJpegs {
    /// `images` labelled images over `classes` classes, cycling through 16 distinct JPEGs.
    ///
    /// # Errors
    /// Only if the JPEG encoder fails.
    pub fn new(images: usize, classes: usize, seed: u64) -> Result<Self> {
        let (w, h) = (500u32, 375u32);
        let mut rng = SeededRng::from_parts(&[seed, 2]);
        let mut jpegs = Vec::new();
        for k in 0..16u32 {
            let image = image::RgbImage::from_fn(w, h, |x, y| {
                let noise = (rng.next_u64() & 31) as u32;
                image::Rgb([
                    ((x * (k + 1) / 3 + noise) % 256) as u8,
                    ((y * (k + 2) / 3 + 2 * noise) % 256) as u8,
                    (((x + y) * (k + 3) / 5 + noise) % 256) as u8,
                ])
            });
            let mut bytes = Vec::new();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 90)
                .encode_image(&image)
                .context("encoding a synthetic JPEG")?;
            jpegs.push(bytes);
        }
        let values = (0..images * classes)
            .map(|_| if rng.next_f32() < 0.1 { 1 } else { -1 })
            .collect();
        let labels = LabelMatrix::new(images, classes, values)?;
        Ok(Self {
            classes: (0..classes).map(|c| format!("class{c}")).collect(),
            labels,
            jpegs,
        })
    }
}

impl MultiLabelSource for SyntheticJpegs {
    fn len(&self) -> usize {
        self.labels.images()
    }

    fn classes(&self) -> &[String] {
        &self.classes
    }

    fn full_labels(&self) -> &LabelMatrix {
        &self.labels
    }

    fn load_image(&self, index: usize) -> hst_data::error::Result<image::RgbImage> {
        let bytes = &self.jpegs[index % self.jpegs.len()];
        image::load_from_memory_with_format(bytes, image::ImageFormat::Jpeg)
            .map(|i| i.to_rgb8())
            .map_err(|source| DataError::Image {
                path: PathBuf::from(self.image_name(index)),
                source,
            })
    }

    fn image_name(&self, index: usize) -> String {
        format!("synthetic:{index:06}.jpg")
    }
}

/// Seconds per batch of the real data pipeline for `spec`: [`HstBatcher::prepare`] (decode, train
/// augmentation, normalisation, in parallel) and the upload to `device`.
fn measure_data<B: Backend>(spec: &BenchSpec, device: &B::Device) -> Result<f64> {
    let images = spec.batch * (spec.data_batches + 1);
    let source: Box<dyn MultiLabelSource> = if spec.uses_embedded_data() {
        let data = EmbeddedConfig::new()
            .with_train_images(images.max(64))
            .with_test_images(1)
            .load()?;
        Box::new(data.train)
    } else {
        Box::new(SyntheticJpegs::new(images, spec.classes, spec.seed)?)
    };
    let transform = spec
        .config
        .data
        .transform
        .clone()
        .with_seed(spec.seed)
        .init();
    let batcher = HstBatcher::new(transform, BatchMode::Train);
    let partial = source.full_labels().clone();
    let n = source.len();
    let run = |b: usize| -> Result<()> {
        let indices: Vec<usize> = (0..spec.batch).map(|i| (b * spec.batch + i) % n).collect();
        let batch = batcher
            .prepare(source.as_ref(), &partial, &indices, 0)?
            .into_batch::<B>(device);
        drop(batch);
        sync::<B>(device)
    };
    run(0)?;
    let start = Instant::now();
    for b in 1..=spec.data_batches {
        run(b)?;
    }
    Ok(start.elapsed().as_secs_f64() / spec.data_batches as f64)
}

// ---------------------------------------------------------------------------------------------------------
// The benchmark job
// ---------------------------------------------------------------------------------------------------------

/// Measure one [`BenchSpec`] (see the [module docs](self)).
pub struct BenchJob<'a> {
    /// What to measure.
    pub spec: &'a BenchSpec,
    /// GPU name for the report when `nvidia-smi` cannot tell it.
    pub gpu_name: Option<String>,
}

impl BackendJob for BenchJob<'_> {
    type Output = Result<BenchResult>;

    fn run<B: AutodiffBackend>(self, backend: BackendName, device: B::Device) -> Self::Output {
        bench_model::<B>(self.spec, backend, &device, self.gpu_name)
    }
}

fn bench_model<B: AutodiffBackend>(
    spec: &BenchSpec,
    backend: BackendName,
    device: &B::Device,
    gpu_name: Option<String>,
) -> Result<BenchResult> {
    let rss_reset = reset_host_peak_rss();
    let monitor = if is_gpu(backend) {
        GpuMemoryMonitor::start()
    } else {
        None
    };
    let device_name = format!("{device:?}");
    tracing::info!(config = %spec.name, backend = %backend, "building the model");

    // Setup: model, optimiser, random inputs, prototypes.
    let setup = Instant::now();
    let constants = BenchConstants::of(spec);
    let mut model = build_model::<B>(spec, &constants, device);
    let mut optim = adam::<B>(&spec.config);
    let (images, partial, prototypes) = bench_inputs::<B>(spec, &constants, device);
    let step = spec.schedule_step();
    let lr = spec.config.optimizer.lr;
    sync::<B>(device)?;
    let setup_seconds = setup.elapsed().as_secs_f64();

    // Training steps: warm-up, then timed, each phase closed by a sync.
    let mut phases = PhaseSeconds::default();
    let mut first_step_seconds = 0.0;
    let mut last_loss: Option<Tensor<B, 1>> = None;
    for i in 0..spec.warmup + spec.steps {
        let t0 = Instant::now();
        let out = model.forward_train(images.clone());
        sync::<B>(device)?;
        let t1 = Instant::now();
        let losses: HstLosses<B> = model
            .losses(
                &out,
                partial.clone(),
                Some(&prototypes),
                step,
                spec.seed + i as u64,
            )
            .map_err(|e| anyhow::anyhow!("losses: {e}"))?;
        sync::<B>(device)?;
        let t2 = Instant::now();
        let grads = losses.total.backward();
        sync::<B>(device)?;
        let t3 = Instant::now();
        let grads = GradientsParams::from_grads(grads, &model);
        model = optim.step(lr, model, grads);
        sync::<B>(device)?;
        let t4 = Instant::now();
        if i == 0 {
            first_step_seconds = (t4 - t0).as_secs_f64();
        }
        if i >= spec.warmup {
            phases.forward += (t1 - t0).as_secs_f64();
            phases.loss += (t2 - t1).as_secs_f64();
            phases.backward += (t3 - t2).as_secs_f64();
            phases.optimizer += (t4 - t3).as_secs_f64();
        }
        last_loss = Some(losses.total.detach());
    }
    let n = spec.steps.max(1) as f64;
    phases.forward /= n;
    phases.loss /= n;
    phases.backward /= n;
    phases.optimizer /= n;
    let train_step_seconds = phases.forward + phases.loss + phases.backward + phases.optimizer;
    let last_loss = last_loss
        .map(|l| l.into_scalar().elem::<f64>())
        .unwrap_or(f64::NAN);
    if !last_loss.is_finite() {
        bail!("the training loss is not finite ({last_loss})");
    }

    // Inference.
    let infer_images_per_second = if spec.infer {
        let inner = model.valid();
        let images = images.clone().inner();
        for _ in 0..spec.warmup {
            let _ = inner.forward(images.clone());
            sync::<B::InnerBackend>(device)?;
        }
        let start = Instant::now();
        for _ in 0..spec.steps {
            let _ = inner.forward(images.clone());
            sync::<B::InnerBackend>(device)?;
        }
        Some(spec.batch as f64 * spec.steps as f64 / start.elapsed().as_secs_f64())
    } else {
        None
    };
    drop(model);

    // Data preparation.
    let data_seconds = if spec.data {
        Some(measure_data::<B::InnerBackend>(spec, device)?)
    } else {
        None
    };
    phases.data = data_seconds;

    let device_memory = monitor.map(GpuMemoryMonitor::stop);
    Ok(BenchResult {
        kind: "bench",
        config: spec.name.clone(),
        backend,
        backend_type: B::name(device),
        machine: MachineInfo::detect(backend, Some(&device_name), gpu_name),
        device: device_name,
        burn: BURN_VERSION,
        dtype: DTYPE,
        trunk: spec.trunk_name(),
        frozen_stages: spec.config.model.trunk.frozen_stages,
        image_size: spec.image_size,
        batch: spec.batch,
        classes: spec.classes,
        warmup: spec.warmup,
        steps: spec.steps,
        setup_seconds,
        first_step_seconds,
        train_images_per_second: spec.batch as f64 / train_step_seconds.max(1e-12),
        train_step_seconds,
        infer_images_per_second,
        data_images_per_second: data_seconds.map(|s| spec.batch as f64 / s.max(1e-12)),
        phases,
        last_loss,
        host_peak_rss_bytes: host_peak_rss(),
        host_peak_rss_reset: rss_reset,
        device_memory,
        unix_time: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    })
}

// ---------------------------------------------------------------------------------------------------------
// Cross-backend check
// ---------------------------------------------------------------------------------------------------------

type RecordBytes = NamedMpkBytesRecorder<FullPrecisionSettings>;

/// Inputs, weights and outputs of the reference side of a check.
#[derive(Debug, Clone)]
pub struct CheckData {
    /// The model's record (weights and BatchNorm statistics), as bytes.
    pub record: Vec<u8>,
    /// Images `[batch, 3, size, size]`.
    pub images: Vec<f32>,
    /// Partial labels `[batch, classes]`.
    pub partial: Vec<f32>,
    /// Named outputs.
    pub outputs: Vec<(String, Vec<f32>)>,
}

/// Accepted relative differences of a check.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct CheckTolerance {
    /// Outputs and loss terms: max |a − b| / max |reference|.
    pub outputs: f64,
    /// Gradient groups: ‖a − b‖ / ‖reference‖.
    pub gradients: f64,
}

/// One compared output.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckItem {
    /// Output name (`logits`, `loss.total`, `grad.sarl`, `logits.eval`, …).
    pub name: String,
    /// Number of values.
    pub len: usize,
    /// The difference the tolerance applies to: `l2_relative_difference` for gradients,
    /// `max_relative_difference` for everything else.
    pub relative_difference: f64,
    /// `"l2"` or `"max"`: which difference is `relative_difference`.
    pub metric: &'static str,
    /// The largest accepted `relative_difference`.
    pub tolerance: f64,
    /// `relative_difference <= tolerance`.
    pub passed: bool,
    /// max |a − b| / max |reference| (the denominator at least 1e-6).
    pub max_relative_difference: f64,
    /// ‖a − b‖ / ‖reference‖ (Euclidean norms over the whole output or gradient group).
    pub l2_relative_difference: f64,
    /// max |a − b|.
    pub max_abs_difference: f64,
    /// max |reference|.
    pub reference_max_abs: f64,
    /// For a merged gradient group: the parameter with the largest |a − b|.
    pub worst: Option<String>,
    #[serde(skip)]
    diff_sq: f64,
    #[serde(skip)]
    ref_sq: f64,
}

/// The result of a check (one JSON line with `--json`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckReport {
    /// Always `"check"`.
    pub kind: &'static str,
    /// Configuration name.
    pub config: String,
    /// The checked backend.
    pub backend: BackendName,
    /// The reference backend.
    pub reference: BackendName,
    /// Burn version.
    pub burn: &'static str,
    /// Element type.
    pub dtype: &'static str,
    /// Where it ran.
    pub machine: MachineInfo,
    /// Input side.
    pub image_size: usize,
    /// Batch size.
    pub batch: usize,
    /// Classes.
    pub classes: usize,
    /// Accepted relative differences.
    pub tolerance: CheckTolerance,
    /// Whether every item is within the tolerance.
    pub passed: bool,
    /// Per output.
    pub items: Vec<CheckItem>,
}

impl CheckReport {
    /// A Markdown table of the items.
    pub fn markdown(&self) -> String {
        let mut s = format!(
            "check {} on {} vs {}: {}\n| output | values | max abs diff | max rel diff | L2 rel diff | judged by | ok | worst parameter |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n",
            self.config,
            self.backend,
            self.reference,
            if self.passed { "PASS" } else { "FAIL" }
        );
        for i in &self.items {
            let _ = writeln!(
                s,
                "| {} | {} | {:.3e} | {:.3e} | {:.3e} | {} | {} | {} |",
                i.name,
                i.len,
                i.max_abs_difference,
                i.max_relative_difference,
                i.l2_relative_difference,
                i.metric,
                if i.passed { "yes" } else { "NO" },
                i.worst.as_deref().unwrap_or("")
            );
        }
        s
    }
}

/// Compare `got` with `reference` output by output; outputs named `group:part` are merged per group (the worst
/// part named).
///
/// Outputs are judged by the largest difference relative to the largest reference value, against
/// `tolerance.outputs`. Gradients (`grad.*`) are judged by the relative Euclidean difference against the looser
/// `tolerance.gradients`: a ReLU or ReLU6 whose input is within rounding of its kink switches on one backend and
/// not on the other, which changes gradient entries by whole terms; with millions of activations this happens in
/// every step. Measured on flex alone (voc-small, 224 px, batch 2), a 1e-6 relative perturbation of the input
/// moves the EfficientNet trunk's gradients by 4.9e-3 and the IST head's by 1.6e-3 (L2, relative) while the
/// logits move by 5e-5. A wrong gradient is typically wrong by O(1).
///
/// # Errors
/// If the names or lengths differ.
pub fn compare_outputs(
    got: &[(String, Vec<f32>)],
    reference: &[(String, Vec<f32>)],
    tolerance: CheckTolerance,
) -> Result<Vec<CheckItem>> {
    if got.len() != reference.len() {
        bail!(
            "{} outputs to compare with {} reference outputs",
            got.len(),
            reference.len()
        );
    }
    let mut items: Vec<CheckItem> = Vec::new();
    for ((name, a), (ref_name, b)) in got.iter().zip(reference) {
        if name != ref_name || a.len() != b.len() {
            bail!(
                "output `{name}` ({} values) does not match reference output `{ref_name}` ({} values)",
                a.len(),
                b.len()
            );
        }
        let (mut max_diff, mut max_ref, mut diff_sq, mut ref_sq) = (0f64, 0f64, 0f64, 0f64);
        for (x, y) in a.iter().zip(b) {
            let (x, y) = (*x as f64, *y as f64);
            let d = if (x - y).is_nan() {
                f64::INFINITY
            } else {
                (x - y).abs()
            };
            max_diff = max_diff.max(d);
            max_ref = max_ref.max(y.abs());
            diff_sq += d * d;
            ref_sq += y * y;
        }
        let (group, parameter) = match name.split_once(':') {
            Some((g, p)) => (g, Some(p)),
            None => (name.as_str(), None),
        };
        match (parameter, items.last_mut()) {
            // `group:parameter` outputs are merged into one item per group.
            (Some(parameter), Some(last)) if last.name == group => {
                if max_diff > last.max_abs_difference {
                    last.max_abs_difference = max_diff;
                    last.worst = Some(parameter.to_string());
                }
                last.reference_max_abs = last.reference_max_abs.max(max_ref);
                last.diff_sq += diff_sq;
                last.ref_sq += ref_sq;
                last.len += a.len();
            }
            _ => items.push(CheckItem {
                name: group.to_string(),
                len: a.len(),
                relative_difference: 0.0,
                metric: if group.starts_with("grad.") {
                    "l2"
                } else {
                    "max"
                },
                tolerance: if group.starts_with("grad.") {
                    tolerance.gradients
                } else {
                    tolerance.outputs
                },
                passed: false,
                max_relative_difference: 0.0,
                l2_relative_difference: 0.0,
                max_abs_difference: max_diff,
                reference_max_abs: max_ref,
                worst: parameter.map(str::to_string),
                diff_sq,
                ref_sq,
            }),
        }
    }
    for item in &mut items {
        item.max_relative_difference = item.max_abs_difference / item.reference_max_abs.max(1e-6);
        item.l2_relative_difference = item.diff_sq.sqrt() / item.ref_sq.sqrt().max(1e-6);
        item.relative_difference = if item.metric == "l2" {
            item.l2_relative_difference
        } else {
            item.max_relative_difference
        };
        item.passed = item.relative_difference <= item.tolerance;
    }
    Ok(items)
}

fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().iter::<f32>().collect()
}

/// Collects the gradient of every trainable float parameter, named `grad.<top-level field>:<path>`.
struct GradientCollector<'a, B: AutodiffBackend> {
    grads: &'a B::Gradients,
    path: Vec<String>,
    groups: Vec<(String, Vec<f32>)>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for GradientCollector<'_, B> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let Some(grad) = param.val().grad(self.grads) else {
            return; // frozen
        };
        // `grad.<top-level module>:<full path>`; `compare_outputs` merges each module's parameters.
        let top = self.path.first().map(String::as_str).unwrap_or("root");
        let name = format!("grad.{top}:{}", self.path.join("."));
        self.groups.push((name, host(grad)));
    }
}

/// Run the check computation on `model`: a training-mode forward and every loss term, the gradients of every
/// trainable parameter (grouped by top-level module), then the inference logits (`model.valid()`, BatchNorm
/// running statistics after the training forward).
///
/// The gradients are compared rather than the weights after an optimiser step: Adam's first step moves each
/// weight by ±lr whatever the gradient's size, so a gradient near zero that differs in sign by rounding moves
/// its weight by 2·lr, a difference that says nothing about the backend.
fn check_outputs<B: AutodiffBackend>(
    spec: &BenchSpec,
    model: Hst<B>,
    constants: &BenchConstants,
    images: &[f32],
    partial: &[f32],
    device: &B::Device,
) -> Result<Vec<(String, Vec<f32>)>> {
    let shape = [spec.batch, 3, spec.image_size, spec.image_size];
    let images = Tensor::<B, 4>::from_data(TensorData::new(images.to_vec(), shape), device);
    let partial = Tensor::<B, 2>::from_data(
        TensorData::new(partial.to_vec(), [spec.batch, spec.classes]),
        device,
    );
    let prototypes = constants.prototypes::<B>(spec.classes, device);
    let mut outputs = Vec::new();
    let out = model.forward(images.clone());
    let losses = model
        .losses(
            &out,
            partial,
            Some(&prototypes),
            spec.schedule_step(),
            spec.seed,
        )
        .map_err(|e| anyhow::anyhow!("losses: {e}"))?;
    outputs.push(("logits".to_string(), host(out.logits.clone())));
    if let Some(c) = &out.cooccurrence {
        outputs.push(("cooccurrence".to_string(), host(c.clone())));
    }
    outputs.push(("semantic".to_string(), host(out.semantic.clone())));
    let terms = [
        ("loss.total", Some(&losses.total)),
        ("loss.partial_bce", Some(&losses.partial_bce)),
        ("loss.ist_bce", losses.ist_bce.as_ref()),
        ("loss.cst_bce", losses.cst_bce.as_ref()),
        ("loss.ist_asl", losses.ist_asl.as_ref()),
        ("loss.instance", losses.instance.as_ref()),
        ("loss.prototype", losses.prototype.as_ref()),
        ("loss.dtl_ist", losses.dtl_ist.as_ref()),
        ("loss.dtl_cst", losses.dtl_cst.as_ref()),
    ];
    for (name, t) in terms {
        if let Some(t) = t {
            outputs.push((name.to_string(), host(t.clone())));
        }
    }
    let grads = losses.total.backward();
    let mut collector = GradientCollector::<B> {
        grads: &grads,
        path: Vec::new(),
        groups: Vec::new(),
    };
    model.visit(&mut collector);
    outputs.extend(collector.groups);
    outputs.push((
        "logits.eval".to_string(),
        host(model.valid().forward(images.inner()).logits),
    ));
    Ok(outputs)
}

/// Load a model record saved with [`NamedMpkBytesRecorder`] into `model`, keeping the trunk's freeze.
///
/// # Errors
/// A record that does not fit the model.
pub fn load_record_bytes<B: Backend>(
    model: Hst<B>,
    bytes: &[u8],
    device: &B::Device,
) -> Result<Hst<B>> {
    let frozen = model.trunk.frozen_stages();
    let record: <Hst<B> as Module<B>>::Record = RecordBytes::default()
        .load(bytes.to_vec(), device)
        .map_err(|e| anyhow::anyhow!("the record does not fit the model: {e:?}"))?;
    // A loaded parameter keeps the lazily initialised one's require_grad flag: re-apply the trunk's freeze.
    Ok(model.load_record(record).map_trunk(|t| t.freeze(frozen)))
}

/// The reference side of a check: build the seeded model on `B`, record it, and compute the outputs.
///
/// # Errors
/// A loss error or a record that cannot be written.
pub fn check_reference<B: AutodiffBackend>(
    spec: &BenchSpec,
    device: &B::Device,
) -> Result<CheckData> {
    let constants = BenchConstants::of(spec);
    let model = build_model::<B>(spec, &constants, device);
    let record = RecordBytes::default()
        .record(model.clone().into_record(), ())
        .map_err(|e| anyhow::anyhow!("recording the model: {e:?}"))?;
    // Parameters are initialised lazily, and a clone initialises on its own: recording `model.clone()`
    // draws other values than `model` would. Run the reference from the recorded weights, as the other side.
    let model = load_record_bytes(model, &record, device)?;
    let mut rng = SeededRng::from_parts(&[spec.seed, 4]);
    let images = rng.normals(spec.batch * 3 * spec.image_size * spec.image_size);
    let partial = partial_labels(&mut rng, spec.batch, spec.classes);
    let outputs = check_outputs(spec, model, &constants, &images, &partial, device)?;
    Ok(CheckData {
        record,
        images,
        partial,
        outputs,
    })
}

/// The compared side of a check: the same model (weights from `reference.record`) and inputs on `B`.
///
/// # Errors
/// A record that does not fit, a loss error, outputs that do not match in name or size.
pub fn check_compare<B: AutodiffBackend>(
    spec: &BenchSpec,
    reference: &CheckData,
    tolerance: CheckTolerance,
    device: &B::Device,
) -> Result<Vec<CheckItem>> {
    let outputs = check_outputs_on::<B>(spec, reference, device)?;
    compare_outputs(&outputs, &reference.outputs, tolerance)
}

/// The outputs of the check computation on `B` with the reference's weights and inputs (one entry per
/// parameter gradient, named `grad.<module>:<path>`), for a closer look than [`check_compare`]'s groups.
///
/// # Errors
/// A record that does not fit, a loss error.
pub fn check_outputs_on<B: AutodiffBackend>(
    spec: &BenchSpec,
    reference: &CheckData,
    device: &B::Device,
) -> Result<Vec<(String, Vec<f32>)>> {
    let constants = BenchConstants::of(spec);
    let model = build_model::<B>(spec, &constants, device);
    let model = load_record_bytes(model, &reference.record, device)?;
    check_outputs(
        spec,
        model,
        &constants,
        &reference.images,
        &reference.partial,
        device,
    )
}

struct CheckReferenceJob<'a> {
    spec: &'a BenchSpec,
}

impl BackendJob for CheckReferenceJob<'_> {
    type Output = Result<CheckData>;

    fn run<B: AutodiffBackend>(self, _: BackendName, device: B::Device) -> Self::Output {
        check_reference::<B>(self.spec, &device)
    }
}

struct CheckCompareJob<'a> {
    spec: &'a BenchSpec,
    reference: &'a CheckData,
    tolerance: CheckTolerance,
}

impl BackendJob for CheckCompareJob<'_> {
    type Output = Result<Vec<CheckItem>>;

    fn run<B: AutodiffBackend>(self, _: BackendName, device: B::Device) -> Self::Output {
        check_compare::<B>(self.spec, self.reference, self.tolerance, &device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> BenchSpec {
        let mut spec = BenchPreset::Default.spec();
        spec.batch = 2;
        spec.classes = 4;
        spec.warmup = 0;
        spec.steps = 1;
        spec.data_batches = 1;
        spec.with_image_size(32)
    }

    #[test]
    fn presets_have_the_issue_shapes() {
        let paper = BenchPreset::Paper.spec();
        assert_eq!(
            (paper.image_size, paper.batch, paper.classes),
            (448, 32, 80)
        );
        assert_eq!(paper.trunk_name(), "resnet101");
        assert_eq!(paper.config.model.trunk.frozen_stages, 3);
        assert_eq!(BenchPreset::Vg.spec().classes, 200);
        let voc = BenchPreset::VocSmall.spec();
        assert_eq!((voc.image_size, voc.batch, voc.classes), (224, 32, 20));
        assert_eq!(voc.trunk_name(), "efficientnet-lite0");
        assert!(voc.config.pretrained.is_none());
        assert_eq!(BenchPreset::Default.spec().trunk_name(), "resnet10-w16");
    }

    #[test]
    fn overrides_apply_and_zero_is_rejected() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: BenchArgs,
        }
        let cli = Cli::parse_from([
            "x",
            "--config",
            "paper,vg",
            "--batch",
            "4",
            "--image-size",
            "224",
            "--steps",
            "1",
            "--warmup",
            "0",
        ]);
        let specs = cli.args.specs().unwrap();
        assert_eq!(specs.len(), 2);
        assert_eq!(
            (specs[1].batch, specs[1].image_size, specs[1].classes),
            (4, 224, 200)
        );
        assert_eq!(specs[0].config.data.transform.image_size, 224);
        assert_eq!((specs[0].steps, specs[0].warmup), (1, 0));
        let cli = Cli::parse_from(["x", "--batch", "0"]);
        assert!(cli.args.specs().is_err());
    }

    #[test]
    fn a_tiny_benchmark_runs_and_reports_every_phase() {
        type AB = burn::backend::Autodiff<burn::backend::Flex>;
        let spec = tiny();
        let r = bench_model::<AB>(&spec, BackendName::Flex, &Default::default(), None).unwrap();
        assert!(r.train_images_per_second > 0.0 && r.last_loss.is_finite());
        assert!(r.phases.forward > 0.0 && r.phases.backward > 0.0 && r.phases.optimizer > 0.0);
        assert!(r.infer_images_per_second.unwrap() > 0.0);
        assert!(r.data_images_per_second.unwrap() > 0.0);
        assert!(r.host_peak_rss_bytes.unwrap() > 0);
        assert!(r.device_memory.is_none());
        let row = r.markdown_row();
        assert_eq!(
            row.matches('|').count(),
            BenchResult::markdown_header()
                .lines()
                .next()
                .unwrap()
                .matches('|')
                .count()
        );
        let json: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(json["burn"], "0.21.0");
        assert_eq!(json["config"], "default");
    }

    #[test]
    fn check_agrees_with_itself_and_detects_a_difference() {
        type AB = burn::backend::Autodiff<burn::backend::Flex>;
        let spec = tiny();
        let device = Default::default();
        let reference = check_reference::<AB>(&spec, &device).unwrap();
        let tolerance = CheckTolerance {
            outputs: 1e-6,
            gradients: 1e-6,
        };
        let items = check_compare::<AB>(&spec, &reference, tolerance, &device).unwrap();
        let names: Vec<&str> = items.iter().map(|i| i.name.as_str()).collect();
        for term in [
            "loss.ist_bce",
            "loss.cst_bce",
            "loss.instance",
            "loss.prototype",
            "loss.dtl_cst",
            "grad.trunk",
            "grad.sarl",
            "grad.ist",
            "logits.eval",
        ] {
            assert!(names.contains(&term), "{term} missing from {names:?}");
        }
        assert!(items.iter().all(|i| i.passed), "{items:?}");
        // A perturbed reference must be caught.
        let mut bad = reference.outputs.clone();
        bad[0].1[0] += 1.0;
        let got = reference.outputs.clone();
        let items = compare_outputs(&got, &bad, tolerance).unwrap();
        assert!(items[0].relative_difference > 1e-3 && !items[0].passed);
    }

    #[test]
    fn gradient_groups_are_merged_and_judged_by_l2() {
        let out = |v: [f32; 2]| -> Vec<(String, Vec<f32>)> {
            vec![
                ("logits".into(), vec![1.0, 2.0]),
                ("grad.ist:ist.a".into(), vec![v[0], 0.0]),
                ("grad.ist:ist.b".into(), vec![v[1], 10.0]),
            ]
        };
        let tolerance = CheckTolerance {
            outputs: 1e-3,
            gradients: 5e-2,
        };
        // grad.ist: one entry off by 0.2: max-relative 2e-2, L2-relative 0.2 / sqrt(101) ≈ 2e-2.
        let items = compare_outputs(&out([1.0, 0.2]), &out([1.0, 0.0]), tolerance).unwrap();
        assert_eq!(items.len(), 2);
        let g = &items[1];
        assert_eq!((g.name.as_str(), g.len, g.metric), ("grad.ist", 4, "l2"));
        assert_eq!(g.worst.as_deref(), Some("ist.b"));
        assert!((g.l2_relative_difference - 0.2 / 101f64.sqrt()).abs() < 1e-6);
        assert!(g.passed && items[0].passed);
        // An O(1) gradient error fails.
        let items = compare_outputs(&out([-1.0, 0.0]), &out([1.0, 0.0]), tolerance).unwrap();
        assert!(!items[1].passed);
    }

    #[test]
    fn synthetic_jpegs_decode_to_their_size() {
        let data = SyntheticJpegs::new(3, 5, 0).unwrap();
        assert_eq!(data.len(), 3);
        let image = data.load_image(2).unwrap();
        assert_eq!(image.dimensions(), (500, 375));
        assert_eq!(data.full_labels().classes(), 5);
    }
}
