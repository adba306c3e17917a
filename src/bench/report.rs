//! What a benchmark measured ([`BenchResult`]) and where ([`MachineInfo`]), as Markdown rows and JSON lines.

use std::io::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

use crate::backend::BackendName;

use super::memory::nvidia_smi_query;

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

pub(crate) fn is_gpu(backend: BackendName) -> bool {
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

pub(crate) fn append_line(path: &Path, line: &str) -> Result<()> {
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

pub(crate) fn append_markdown(path: &Path, row: &str) -> Result<()> {
    let empty = std::fs::metadata(path)
        .map(|m| m.len() == 0)
        .unwrap_or(true);
    if empty {
        append_line(path, BenchResult::markdown_header())?;
    }
    append_line(path, row)
}
