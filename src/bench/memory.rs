//! Host peak memory (`VmHWM`) and GPU memory sampled with `nvidia-smi`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::report::DeviceMemory;

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
pub(crate) fn nvidia_smi_query(field: &str) -> Option<String> {
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
pub(crate) struct GpuMemoryMonitor {
    child: Child,
    peak_mib: Arc<AtomicU64>,
    reader: Option<JoinHandle<()>>,
    baseline_mib: u64,
}

impl GpuMemoryMonitor {
    pub(crate) fn start() -> Option<Self> {
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

    pub(crate) fn stop(mut self) -> DeviceMemory {
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
